-- tracegate store, version 7: harness spans.
--
-- The spans an agent harness sends to the gateway's OTLP receiver
-- (`POST /v1/traces`): its agent steps, tool executions and evaluations,
-- kept beside the calls they enclose. One row per span, identified by its
-- OpenTelemetry (trace_id, span_id); a span received again replaces its row.
-- Identity columns are read from the span's attributes (`session.id` or
-- `gen_ai.conversation.id`, `rllm.*`), else its resource's. A call is a
-- span's child when its record's OTel trace id and parent span id name the
-- span: that link is read by a join, so spans and calls may arrive in any
-- order.

CREATE TABLE harness_spans (
    trace_id        TEXT NOT NULL,             -- 32 hex digits
    span_id         TEXT NOT NULL,             -- 16 hex digits
    parent_span_id  TEXT,                      -- 16 hex digits; NULL for a root
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,             -- internal, server, client, ...
    start_time      TEXT NOT NULL,             -- RFC 3339
    end_time        TEXT NOT NULL,             -- RFC 3339
    start_unix_nanos INTEGER NOT NULL,
    end_unix_nanos  INTEGER NOT NULL,
    status_code     TEXT NOT NULL,             -- unset, ok, error
    status_message  TEXT,
    attributes      TEXT NOT NULL,             -- JSON object
    events          TEXT NOT NULL,             -- JSON array
    resource        TEXT NOT NULL,             -- JSON object
    session_id      TEXT,
    run_id          TEXT,
    harness         TEXT,
    step_id         INTEGER,
    project         TEXT,
    experiment      TEXT,
    weight_version  INTEGER,
    received_at     TEXT NOT NULL,             -- RFC 3339
    PRIMARY KEY (trace_id, span_id)
);

CREATE INDEX harness_spans_session_id ON harness_spans (session_id, start_unix_nanos)
    WHERE session_id IS NOT NULL;
CREATE INDEX harness_spans_run_id ON harness_spans (run_id, start_unix_nanos)
    WHERE run_id IS NOT NULL;

-- A span's child calls: the calls whose parent span is the span.
CREATE INDEX traces_otel_parent_span_id ON traces (otel_parent_span_id)
    WHERE otel_parent_span_id IS NOT NULL;
