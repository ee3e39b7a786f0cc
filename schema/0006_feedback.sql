-- tracegate store, version 6: feedback.
--
-- A named value (a reward, a pass/fail, a judge's label) a harness attaches
-- to a call, a session or a run (src/feedback.rs). A target is named by its
-- id and joined when read: feedback may arrive before the record it scores
-- is committed, so there is no foreign key, and deleting a session leaves
-- its feedback (a later record of the same id joins it again).
--
-- `id` is the client's idempotency id (or a UUIDv7): posting it again with
-- the same content changes nothing; with other content it is refused.
-- The value is typed: `value_type` says which of the value columns holds it
-- (`value_number` for numbers, and for booleans as 1 or 0, so that
-- `--where 'pass>0'` and a run's mean read both; `value_string` for
-- strings).

CREATE TABLE feedback (
    id            TEXT PRIMARY KEY,
    target_kind   TEXT NOT NULL CHECK (target_kind IN ('trace', 'session', 'run')),
    target_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    value_type    TEXT NOT NULL CHECK (value_type IN ('number', 'boolean', 'string')),
    value_number  REAL,
    value_string  TEXT,
    comment       TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',    -- a JSON object
    created_at    TEXT NOT NULL                  -- RFC 3339, when first accepted
);

CREATE INDEX feedback_target ON feedback (target_kind, target_id, created_at);
CREATE INDEX feedback_name   ON feedback (name, value_number);
