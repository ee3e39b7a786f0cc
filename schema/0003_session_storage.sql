-- tracegate store, version 3: session-linear storage.
--
-- An agent resends its whole conversation on every call, and a vLLM
-- rollout returns the prompt's token ids every time. Version 1 kept each
-- call whole, so a session cost the square of its length. Here what calls
-- share is stored once (schema/storage.md describes every table, with the
-- SQL and numpy reads):
--
-- * input messages are `message_nodes`, one row per message, each pointing
--   at the message before it: a call names its last message and its
--   answer (`messages_node`, `answer_node`), and calls that share a
--   conversation prefix share its nodes;
-- * token ids are `token_runs`, runs of little-endian u32 ids, each
--   following its parent run: a call's prompt is the path to its
--   `prompt_run`, a choice's completion one run after the prompt, so the
--   next turn's prompt extends the previous prompt and completion by its
--   new ids only;
-- * each choice's logprobs are one `completions` row (raw little-endian
--   f64, no header);
-- * tool definitions are `tool_lists`, shared by the calls that offer them;
-- * the request and response (headers and raw bodies) are one blob,
--   zstd-compressed against the call's own messages, tools, answer and
--   token ids and against an earlier call's raw parts (`raw_references`),
--   so a raw body costs little more than what is new in it.
--
-- Every shared row counts the rows that point at it (`refs`). Deleting a
-- call (by the gateway, prune, or by hand) decrements what it points at
-- (the triggers below); the store then sweeps rows left at zero.
--
-- The version-1 `traces` table is renamed `traces_v2` here; migrate.rs
-- converts its rows (same ids, same records) into these tables and drops
-- it, in the same transaction.

DROP INDEX traces_session_id;
DROP INDEX traces_run_id;
DROP INDEX traces_harness;
DROP INDEX traces_step_id;
DROP INDEX traces_parent_span_id;
DROP INDEX traces_project;
DROP INDEX traces_experiment;
DROP INDEX traces_model;
DROP INDEX traces_upstream;
DROP INDEX traces_status;
DROP INDEX traces_started_at;
DROP INDEX traces_latency_ms;
DROP INDEX traces_ttft_ms;
DROP INDEX traces_tokens;
ALTER TABLE traces RENAME TO traces_v2;

-- One row per call: every scalar fact of the record is a column, stored
-- once; `record` holds the rest (request parameters, choices, usage
-- details, metadata), as JSON without empty fields.
CREATE TABLE traces (
    id                   INTEGER PRIMARY KEY, -- commit order; what other tables point at
    trace_id             TEXT NOT NULL UNIQUE,
    session_id           TEXT,
    run_id               TEXT,
    harness              TEXT,
    step_id              INTEGER,
    parent_span_id       TEXT,
    project              TEXT,
    experiment           TEXT,
    weight_version       INTEGER,            -- the policy version (identity)
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
    stream               INTEGER NOT NULL,
    status               TEXT NOT NULL,       -- ok | error | client_closed
    http_status          INTEGER,
    error_kind           TEXT,
    error_message        TEXT,
    timestamp            REAL NOT NULL,       -- epoch seconds (rLLM's)
    started_at           TEXT NOT NULL,
    first_chunk_us       INTEGER,             -- first response byte, microseconds after started_at
    ended_at             TEXT NOT NULL,
    latency_ms           REAL NOT NULL,
    ttft_ms              REAL,
    input_tokens         INTEGER,
    output_tokens        INTEGER,
    tokens               INTEGER,             -- input + output
    span_id              TEXT,                -- NULL: derived from trace_id (storage.md)
    otel_trace_id        TEXT,                -- NULL: derived from run_id, else session_id
    otel_parent_span_id  TEXT,
    messages_node        INTEGER,             -- message_nodes.id of the last input message
    answer_node          INTEGER,             -- message_nodes.id of response_message
    tools                INTEGER,             -- tool_lists.id
    prompt_run           INTEGER,             -- token_runs.id ending the prompt's token ids
    raw_ref              INTEGER,             -- raw_references.id `raw` is also compressed against
    record               TEXT NOT NULL,       -- the rest of the record (JSON)
    raw                  BLOB                 -- request and response headers and raw bodies (storage.md)
);

-- Only the indexes a query of tracegate's uses (storage.md measures each):
-- a call by id, a session's and a run's calls, calls by time (filters,
-- prune), and the run list's facets.
CREATE INDEX traces_session_id ON traces (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX traces_run_id     ON traces (run_id, started_at) WHERE run_id IS NOT NULL;
CREATE INDEX traces_started_at ON traces (started_at);
CREATE INDEX traces_model      ON traces (model) WHERE model IS NOT NULL;
CREATE INDEX traces_harness    ON traces (harness) WHERE harness IS NOT NULL;
CREATE INDEX traces_project    ON traces (project) WHERE project IS NOT NULL;
CREATE INDEX traces_experiment ON traces (experiment) WHERE experiment IS NOT NULL;

-- The conversation tree: one row per distinct message after a distinct
-- prefix. A call's input messages are the path from the root to its
-- `messages_node`, in `position` order.
CREATE TABLE message_nodes (
    id         INTEGER PRIMARY KEY,
    parent_id  INTEGER,                       -- the message before it (NULL: the first)
    position   INTEGER NOT NULL,              -- its index in the conversation, from 0
    refs       INTEGER NOT NULL,              -- calls and nodes that point here
    message    TEXT NOT NULL                  -- the message, JSON
);
CREATE INDEX message_nodes_unreferenced ON message_nodes (id) WHERE refs <= 0;

-- The token tree: runs of token ids. A sequence is the concatenation of
-- the runs on the path from the root to its last run, in `start` order.
CREATE TABLE token_runs (
    id         INTEGER PRIMARY KEY,
    parent_id  INTEGER,                       -- the run these ids follow (NULL: the first)
    start      INTEGER NOT NULL,              -- offset of its first id in the sequence
    refs       INTEGER NOT NULL,              -- calls, choices and runs that point here
    token_ids  BLOB NOT NULL                  -- little-endian u32, no header
);
CREATE INDEX token_runs_unreferenced ON token_runs (id) WHERE refs <= 0;

-- One row per choice that has token data.
CREATE TABLE completions (
    trace         INTEGER NOT NULL,           -- traces.id
    choice        INTEGER NOT NULL,           -- the choice's position
    token_run     INTEGER,                    -- token_runs.id: its completion ids, whole
    logprobs      BLOB,                       -- little-endian f64, one per token; NULL: none
    top_logprobs  BLOB,                       -- zstd(JSON [[{token, logprob}]]); NULL: none
    PRIMARY KEY (trace, choice)
) WITHOUT ROWID;

-- Tool definitions, shared by the calls that offer the same list.
CREATE TABLE tool_lists (
    id     INTEGER PRIMARY KEY,
    refs   INTEGER NOT NULL,
    tools  TEXT NOT NULL                      -- JSON array
);
CREATE INDEX tool_lists_unreferenced ON tool_lists (id) WHERE refs <= 0;

-- Earlier calls' raw parts that later calls of the same kind (operation,
-- streaming, model) are compressed against: their headers and bodies share
-- most of their bytes. Ids are never reused (writers keep them in memory).
CREATE TABLE raw_references (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    refs   INTEGER NOT NULL,
    raw    BLOB NOT NULL                      -- zstd of the four raw lines (storage.md)
);
CREATE INDEX raw_references_unreferenced ON raw_references (id) WHERE refs <= 0;

-- Facts about the store itself. `gc_epoch` grows whenever shared rows are
-- swept, so a writer holding ids in memory knows to forget them.
CREATE TABLE store_state (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
INSERT INTO store_state (key, value) VALUES ('gc_epoch', 0);

-- What a deleted row pointed at loses a reference.
CREATE TRIGGER traces_release AFTER DELETE ON traces BEGIN
    UPDATE message_nodes SET refs = refs - 1 WHERE id = OLD.messages_node;
    UPDATE message_nodes SET refs = refs - 1 WHERE id = OLD.answer_node;
    UPDATE token_runs SET refs = refs - 1 WHERE id = OLD.prompt_run;
    UPDATE tool_lists SET refs = refs - 1 WHERE id = OLD.tools;
    UPDATE raw_references SET refs = refs - 1 WHERE id = OLD.raw_ref;
    DELETE FROM completions WHERE trace = OLD.id;
END;

CREATE TRIGGER completions_release AFTER DELETE ON completions BEGIN
    UPDATE token_runs SET refs = refs - 1 WHERE id = OLD.token_run;
END;

CREATE TRIGGER message_nodes_release AFTER DELETE ON message_nodes BEGIN
    UPDATE message_nodes SET refs = refs - 1 WHERE id = OLD.parent_id;
END;

CREATE TRIGGER token_runs_release AFTER DELETE ON token_runs BEGIN
    UPDATE token_runs SET refs = refs - 1 WHERE id = OLD.parent_id;
END;

-- Plain-SQL reads. Each view covers every call; for one call, filter the
-- seed instead (storage.md has the per-call forms, which do not scan).

-- Every call's input messages, one row each.
CREATE VIEW trace_messages AS
WITH RECURSIVE path (trace_id, node, position, message) AS (
    SELECT t.trace_id, n.parent_id, n.position, n.message
    FROM traces t JOIN message_nodes n ON n.id = t.messages_node
    UNION ALL
    SELECT p.trace_id, n.parent_id, n.position, n.message
    FROM path p JOIN message_nodes n ON n.id = p.node
)
SELECT trace_id, position, message FROM path;

-- Every call's prompt token ids, one row per run, in `start` order.
CREATE VIEW trace_prompt_runs AS
WITH RECURSIVE path (trace_id, run, start, token_ids) AS (
    SELECT t.trace_id, r.parent_id, r.start, r.token_ids
    FROM traces t JOIN token_runs r ON r.id = t.prompt_run
    UNION ALL
    SELECT p.trace_id, r.parent_id, r.start, r.token_ids
    FROM path p JOIN token_runs r ON r.id = p.run
)
SELECT trace_id, start, token_ids FROM path;

-- Every choice's completion token ids and logprobs.
CREATE VIEW trace_completions AS
SELECT t.trace_id, c.choice, COALESCE(r.token_ids, X'') AS token_ids, c.logprobs, c.top_logprobs
FROM completions c
JOIN traces t ON t.id = c.trace
LEFT JOIN token_runs r ON r.id = c.token_run;

-- Every call's answer (`response_message`).
CREATE VIEW trace_answers AS
SELECT t.trace_id, n.message
FROM traces t JOIN message_nodes n ON n.id = t.answer_node;
