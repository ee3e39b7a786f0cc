-- tracegate store, version 4: what rLLM's trainer reads and sets.
--
-- * `traces.weight_version`: the policy version that produced each call
--   (an identity field, so a real, indexed column a trainer filters on to
--   drop stale rollouts);
-- * `session_sampling_params`: the sampling parameters `POST /sessions`
--   gave a session, merged into every call under `/sessions/{sid}/v1/...`;
--   kept here so a restart keeps them, and deleted with the session.
--
-- Nothing here depends on the layout of the other tables beyond `traces`
-- having this name.

ALTER TABLE traces ADD COLUMN weight_version INTEGER;
CREATE INDEX traces_weight_version ON traces (weight_version);

CREATE TABLE session_sampling_params (
    session_id      TEXT PRIMARY KEY,
    sampling_params TEXT NOT NULL      -- a JSON object
);
