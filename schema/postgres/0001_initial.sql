-- tracegate store on PostgreSQL, version 1: the whole layout at once.
--
-- The same records as the SQLite store (schema/0001..0007), in PostgreSQL's
-- dialect, for several gateway replicas writing one database:
--
-- * `traces` keeps every scalar fact as a column (the same names as the
--   SQLite `traces` table, so a question asked with `psql` reads like one
--   asked with `sqlite3`) and the rest of the record in `record`: zstd of
--   the record's JSON without its token data, which is in `token_data`
--   (the codec's packed little-endian ids and logprobs: storage.md).
--   The SQLite store's session-linear content sharing is not repeated here:
--   a PostgreSQL server compresses large values itself (TOAST) and is not
--   a file copied off a node, and sharing rows across replicas that write
--   at once would serialise them on the shared rows.
-- * `id` is commit order per replica only: replicas draw from one
--   sequence, so the UI's "calls since" cursor (id greater than) can miss
--   a call another replica committed at that moment with a lower id; the
--   next full load of the page shows it.
-- * `sessions` and `runs` are upserted by each commit, counters added.
-- * `spans` is the shared export outbox: a replica claims a batch
--   (`FOR UPDATE SKIP LOCKED`) for a lease, exports it, marks it exported;
--   a claim whose lease ran out is free for any replica again.
-- * `admin_state` holds what one replica's admin API sets for all of
--   them (the weight version, the workers), each replica polling it.

CREATE TABLE traces (
    id                   BIGSERIAL PRIMARY KEY,
    trace_id             TEXT NOT NULL UNIQUE,
    session_id           TEXT,
    run_id               TEXT,
    harness              TEXT,
    step_id              BIGINT,
    parent_span_id       TEXT,
    project              TEXT,
    experiment           TEXT,
    weight_version       BIGINT,
    span_type            TEXT NOT NULL,
    route                TEXT,
    upstream             TEXT NOT NULL,
    protocol             TEXT NOT NULL,
    operation            TEXT NOT NULL,
    method               TEXT NOT NULL,
    path                 TEXT NOT NULL,
    model                TEXT,
    backend_model        TEXT,
    response_model       TEXT,
    response_id          TEXT,
    stream               BOOLEAN NOT NULL,
    status               TEXT NOT NULL,       -- ok | error | client_closed
    http_status          INTEGER,
    error_kind           TEXT,
    error_message        TEXT,
    timestamp            DOUBLE PRECISION NOT NULL, -- epoch seconds (rLLM's)
    started_at           TEXT NOT NULL,       -- RFC 3339, microseconds, UTC
    ended_at             TEXT NOT NULL,
    latency_ms           DOUBLE PRECISION NOT NULL,
    ttft_ms              DOUBLE PRECISION,
    input_tokens         BIGINT,
    output_tokens        BIGINT,
    tokens               BIGINT,              -- input + output
    cost_usd             DOUBLE PRECISION,
    span_id              TEXT NOT NULL,
    otel_trace_id        TEXT NOT NULL,
    otel_parent_span_id  TEXT,
    replica              TEXT NOT NULL,       -- the instance id that recorded it
    record               BYTEA NOT NULL,      -- zstd(JSON): the record minus token data
    token_data           BYTEA                -- packed token ids and logprobs (storage.md)
);

CREATE INDEX traces_session_id ON traces (session_id, started_at) WHERE session_id IS NOT NULL;
CREATE INDEX traces_run_id     ON traces (run_id, started_at) WHERE run_id IS NOT NULL;
CREATE INDEX traces_started_at ON traces (started_at, trace_id);
CREATE INDEX traces_model      ON traces (model) WHERE model IS NOT NULL;
CREATE INDEX traces_harness    ON traces (harness) WHERE harness IS NOT NULL;
CREATE INDEX traces_project    ON traces (project) WHERE project IS NOT NULL;
CREATE INDEX traces_experiment ON traces (experiment) WHERE experiment IS NOT NULL;
CREATE INDEX traces_weight_version ON traces (weight_version) WHERE weight_version IS NOT NULL;
CREATE INDEX traces_otel_parent_span_id ON traces (otel_parent_span_id)
    WHERE otel_parent_span_id IS NOT NULL;

CREATE TABLE sessions (
    session_id   TEXT PRIMARY KEY,
    run_id       TEXT,
    created_at   TEXT NOT NULL,
    first_seen   TEXT,
    last_seen    TEXT,
    trace_count  BIGINT NOT NULL DEFAULT 0,
    error_count  BIGINT NOT NULL DEFAULT 0,
    tokens       BIGINT NOT NULL DEFAULT 0,
    cost_usd     DOUBLE PRECISION,
    metadata     TEXT NOT NULL DEFAULT '{}'   -- a JSON object
);
CREATE INDEX sessions_run_id     ON sessions (run_id);
CREATE INDEX sessions_created_at ON sessions (created_at);

CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    trace_count  BIGINT NOT NULL DEFAULT 0,
    error_count  BIGINT NOT NULL DEFAULT 0,
    tokens       BIGINT NOT NULL DEFAULT 0,
    cost_usd     DOUBLE PRECISION
);
CREATE INDEX runs_first_seen ON runs (first_seen);

CREATE TABLE session_sampling_params (
    session_id      TEXT PRIMARY KEY,
    sampling_params TEXT NOT NULL              -- a JSON object
);

CREATE TABLE spans (
    id             BIGSERIAL PRIMARY KEY,      -- export order
    trace_id       TEXT NOT NULL,              -- the record's id
    created_at     TEXT NOT NULL,              -- RFC 3339
    span           TEXT NOT NULL,              -- the span as JSON
    claimed_by     TEXT,                       -- the replica exporting it now
    claimed_until  TIMESTAMPTZ,                -- its lease
    exported_at    TIMESTAMPTZ                 -- NULL until a collector accepted it
);
CREATE INDEX spans_trace_id ON spans (trace_id);
CREATE INDEX spans_waiting  ON spans (id) WHERE exported_at IS NULL;

CREATE TABLE export_state (
    exporter         TEXT PRIMARY KEY,          -- 'otlp'
    cursor           BIGINT NOT NULL DEFAULT 0, -- highest exported spans.id
    exported         BIGINT NOT NULL DEFAULT 0, -- spans exported so far
    last_success_at  TEXT,
    last_error       TEXT,
    last_error_at    TEXT
);

CREATE TABLE feedback (
    seq           BIGSERIAL UNIQUE,             -- insertion order (SQLite's rowid)
    id            TEXT PRIMARY KEY,
    target_kind   TEXT NOT NULL CHECK (target_kind IN ('trace', 'session', 'run')),
    target_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    value_type    TEXT NOT NULL CHECK (value_type IN ('number', 'boolean', 'string')),
    value_number  DOUBLE PRECISION,
    value_string  TEXT,
    comment       TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL
);
CREATE INDEX feedback_target ON feedback (target_kind, target_id, created_at);
CREATE INDEX feedback_name   ON feedback (name, value_number);

CREATE TABLE harness_spans (
    trace_id         TEXT NOT NULL,
    span_id          TEXT NOT NULL,
    parent_span_id   TEXT,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    start_time       TEXT NOT NULL,
    end_time         TEXT NOT NULL,
    start_unix_nanos BIGINT NOT NULL,
    end_unix_nanos   BIGINT NOT NULL,
    status_code      TEXT NOT NULL,
    status_message   TEXT,
    attributes       TEXT NOT NULL,
    events           TEXT NOT NULL,
    resource         TEXT NOT NULL,
    session_id       TEXT,
    run_id           TEXT,
    harness          TEXT,
    step_id          BIGINT,
    project          TEXT,
    experiment       TEXT,
    weight_version   BIGINT,
    received_at      TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX harness_spans_session_id ON harness_spans (session_id, start_unix_nanos)
    WHERE session_id IS NOT NULL;
CREATE INDEX harness_spans_run_id ON harness_spans (run_id, start_unix_nanos)
    WHERE run_id IS NOT NULL;

CREATE TABLE admin_state (
    key         TEXT PRIMARY KEY,               -- 'weight_version', 'workers'
    value       TEXT NOT NULL,                  -- JSON
    changed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    changed_by  TEXT NOT NULL                   -- the replica that set it
);
