-- tracegate store, version 2: the span outbox.
--
-- When OTLP export is on, each call's span is written here in the same
-- transaction as its record, so a record never exists without its span.
-- The exporter reads spans past its cursor (`export_state.cursor`, the last
-- exported `spans.id`) in order, and advances the cursor only once the
-- collector has accepted them: a collector that is down delays export but
-- never loses a span. Exported spans stay until `tracegate prune` removes
-- them with their records.

CREATE TABLE spans (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- export order
    trace_id    TEXT NOT NULL,                      -- the record's id
    created_at  TEXT NOT NULL,                      -- RFC 3339, when written
    span        TEXT NOT NULL                       -- the span as JSON
);

CREATE INDEX spans_trace_id ON spans (trace_id);

CREATE TABLE export_state (
    exporter         TEXT PRIMARY KEY,              -- 'otlp'
    cursor           INTEGER NOT NULL DEFAULT 0,    -- last exported spans.id
    exported         INTEGER NOT NULL DEFAULT 0,    -- spans exported so far
    last_success_at  TEXT,
    last_error       TEXT,
    last_error_at    TEXT
);
