//! One table from an endpoint to its assembler: the plain functions that read
//! that API's request and answer into the normalised view.
//!
//! Every protocol module has the same three moves — `request` (what was
//! asked), `response_json` (a whole answer), `response_events` (a streamed
//! one) — so an assembler is just those functions, plus what the raw answer
//! sheds before it is stored. Capture looks the endpoint up once; an endpoint
//! without an assembler (`/v1/models`, files, batches) is recorded with its
//! raw bodies only.

use super::sse::SseEvent;
use super::{
    Input, Output, anthropic_messages, openai_chat, openai_completions, openai_embeddings,
    openai_responses,
};
use crate::protocol::Endpoint;
use serde_json::{Map, Value};

/// How one API's requests and answers are read.
pub struct Assembler {
    /// The normalised input of a request body.
    pub request: fn(&Map<String, Value>) -> Input,
    /// The output of a whole (JSON) answer.
    pub response_json: fn(&Value) -> Output,
    /// The output of a streamed (SSE) answer, when the API streams.
    pub response_events: Option<fn(&[SseEvent]) -> Output>,
    /// What the stored raw answer drops unless told to keep it (embedding
    /// vectors), when anything.
    pub slim_raw: Option<fn(Value) -> Value>,
}

const CHAT: Assembler = Assembler {
    request: openai_chat::request,
    response_json: openai_chat::response_json,
    response_events: Some(openai_chat::response_events),
    slim_raw: None,
};

const COMPLETIONS: Assembler = Assembler {
    request: openai_completions::request,
    response_json: openai_completions::response_json,
    response_events: Some(openai_completions::response_events),
    slim_raw: None,
};

const RESPONSES: Assembler = Assembler {
    request: openai_responses::request,
    response_json: openai_responses::response_json,
    response_events: Some(openai_responses::response_events),
    slim_raw: None,
};

const EMBEDDINGS: Assembler = Assembler {
    request: openai_embeddings::request,
    response_json: openai_embeddings::response_json,
    response_events: None,
    slim_raw: Some(openai_embeddings::without_vectors),
};

const MESSAGES: Assembler = Assembler {
    request: anthropic_messages::request,
    response_json: anthropic_messages::response_json,
    response_events: Some(anthropic_messages::response_events),
    slim_raw: None,
};

/// The assembler of `endpoint`; `None` for endpoints recorded raw.
pub fn of(endpoint: Endpoint) -> Option<&'static Assembler> {
    match endpoint {
        Endpoint::ChatCompletions => Some(&CHAT),
        Endpoint::Completions => Some(&COMPLETIONS),
        Endpoint::Responses => Some(&RESPONSES),
        Endpoint::Embeddings => Some(&EMBEDDINGS),
        Endpoint::Messages => Some(&MESSAGES),
        Endpoint::Other | Endpoint::OtherAnthropic => None,
    }
}
