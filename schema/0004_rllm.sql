-- tracegate store, version 4: what rLLM's trainer reads and sets.
--
-- * an index on `traces.weight_version` (the column is in version 3's
--   table: the policy version that produced each call, an identity field a
--   trainer filters on to drop stale rollouts);
-- * `session_sampling_params`: the sampling parameters `POST /sessions`
--   gave a session, merged into every call under `/sessions/{sid}/v1/...`;
--   kept here so a restart keeps them, and deleted with the session.
--
CREATE INDEX traces_weight_version ON traces (weight_version) WHERE weight_version IS NOT NULL;

CREATE TABLE session_sampling_params (
    session_id      TEXT PRIMARY KEY,
    sampling_params TEXT NOT NULL      -- a JSON object
);
