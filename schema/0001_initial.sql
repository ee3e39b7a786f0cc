-- tracegate store, version 1: traces, sessions, runs.
--
-- Every column a user filters or sorts on is a real, indexed column, so
-- `sqlite3 tracegate.db` answers everyday questions directly. The full record
-- is kept beside them as JSON (`record`), except for the bulky parts, which
-- are stored compactly: token ids as packed little-endian u32, logprobs as
-- packed little-endian f64 (one list per choice: a u32 count of lists, then
-- each list's u32 length, 0xFFFFFFFF for an absent list, and its values),
-- top logprobs and the raw request and response as zstd-compressed JSON.
-- Times are RFC 3339 UTC strings with microseconds: they sort as text.

CREATE TABLE traces (
    trace_id             TEXT PRIMARY KEY,
    session_id           TEXT,
    run_id               TEXT,
    harness              TEXT,
    step_id              INTEGER,
    parent_span_id       TEXT,
    project              TEXT,
    experiment           TEXT,
    span_type            TEXT NOT NULL,
    route                TEXT,
    upstream             TEXT NOT NULL,
    protocol             TEXT NOT NULL,
    operation            TEXT NOT NULL,
    method               TEXT NOT NULL,
    path                 TEXT NOT NULL,
    model                TEXT,
    response_model       TEXT,
    stream               INTEGER NOT NULL,
    status               TEXT NOT NULL,   -- ok | error | client_closed
    http_status          INTEGER,
    error_kind           TEXT,
    started_at           TEXT NOT NULL,
    ended_at             TEXT NOT NULL,
    latency_ms           REAL NOT NULL,
    ttft_ms              REAL,
    input_tokens         INTEGER,
    output_tokens        INTEGER,
    tokens               INTEGER,         -- input + output
    record               TEXT NOT NULL,   -- the TraceRecord JSON, minus the blobs below
    prompt_token_ids     BLOB,            -- packed u32 LE
    completion_token_ids BLOB,            -- per choice: packed u32 LE lists
    logprobs             BLOB,            -- per choice: packed f64 LE lists
    top_logprobs         BLOB,            -- per choice: zstd(JSON)
    raw_request          BLOB,            -- zstd(JSON)
    raw_response         BLOB             -- zstd(JSON)
);

CREATE INDEX traces_session_id     ON traces (session_id, started_at);
CREATE INDEX traces_run_id         ON traces (run_id, started_at);
CREATE INDEX traces_harness        ON traces (harness);
CREATE INDEX traces_step_id        ON traces (step_id);
CREATE INDEX traces_parent_span_id ON traces (parent_span_id);
CREATE INDEX traces_project        ON traces (project);
CREATE INDEX traces_experiment     ON traces (experiment);
CREATE INDEX traces_model          ON traces (model);
CREATE INDEX traces_upstream       ON traces (upstream);
CREATE INDEX traces_status         ON traces (status);
CREATE INDEX traces_started_at     ON traces (started_at);
CREATE INDEX traces_latency_ms     ON traces (latency_ms);
CREATE INDEX traces_ttft_ms        ON traces (ttft_ms);
CREATE INDEX traces_tokens         ON traces (tokens);

-- One row per session: created by POST /sessions or by its first call.
CREATE TABLE sessions (
    session_id   TEXT PRIMARY KEY,
    run_id       TEXT,
    created_at   TEXT NOT NULL,
    first_seen   TEXT,                    -- first call
    last_seen    TEXT,                    -- last call
    trace_count  INTEGER NOT NULL DEFAULT 0,
    error_count  INTEGER NOT NULL DEFAULT 0,
    tokens       INTEGER NOT NULL DEFAULT 0,
    metadata     TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX sessions_run_id     ON sessions (run_id);
CREATE INDEX sessions_created_at ON sessions (created_at);

-- One row per run, created by its first call.
CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    trace_count  INTEGER NOT NULL DEFAULT 0,
    error_count  INTEGER NOT NULL DEFAULT 0,
    tokens       INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX runs_first_seen ON runs (first_seen);
