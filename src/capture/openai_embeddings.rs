//! OpenAI embeddings (`/v1/embeddings`).
//!
//! What matters for a trace is what was embedded (the inputs, how many),
//! with which model, the vectors' size and the usage — not the vectors, which
//! are large and rarely wanted later. So the raw response keeps its vectors
//! only when `capture.store_embeddings` is on; otherwise each `embedding` is
//! replaced by `null` (the rest of the response is kept).

use crate::capture::fields::{self, inputs, str_field, user_messages};
use crate::capture::{Input, Output};
use crate::record::Embeddings;
use base64::Engine;
use serde_json::{Map, Value};

/// The normalised input: each input as a user message, and what was asked.
pub fn request(body: &Map<String, Value>) -> Input {
    let inputs = inputs(body.get("input"));
    let info = Embeddings {
        input_count: inputs.len() as u64,
        dimensions: body.get("dimensions").and_then(Value::as_u64),
        encoding_format: str_field(&Value::Object(body.clone()), "encoding_format"),
    };
    Input {
        messages: user_messages(inputs),
        tools: Vec::new(),
        embeddings: Some(info),
    }
}

/// Reads an embeddings response.
pub fn response_json(body: &Value) -> Output {
    let data = body.get("data").and_then(Value::as_array);
    let dimensions = data
        .and_then(|d| d.first())
        .and_then(|first| first.get("embedding"))
        .and_then(|e| match e {
            Value::Array(v) => Some(v.len() as u64),
            // base64 of little-endian f32s
            Value::String(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .map(|bytes| bytes.len() as u64 / 4),
            _ => None,
        });
    Output {
        response_model: str_field(body, "model"),
        usage: body.get("usage").map(fields::usage).unwrap_or_default(),
        embeddings: Some(Embeddings {
            input_count: data.map_or(0, |d| d.len() as u64),
            dimensions,
            encoding_format: None,
        }),
        complete: true,
        ..Output::default()
    }
}

/// The raw response with its vectors removed.
pub fn without_vectors(mut body: Value) -> Value {
    if let Some(data) = body.get_mut("data").and_then(Value::as_array_mut) {
        for item in data {
            if let Some(embedding) = item.get_mut("embedding") {
                *embedding = Value::Null;
            }
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_counted_in_every_form() {
        let count = |v: Value| {
            request(v.as_object().unwrap())
                .embeddings
                .unwrap()
                .input_count
        };
        assert_eq!(count(json!({"input": "one"})), 1);
        assert_eq!(count(json!({"input": ["a", "b", "c"]})), 3);
        assert_eq!(count(json!({"input": [1, 2, 3]})), 1);
        assert_eq!(count(json!({"input": [[1, 2], [3]]})), 2);
    }

    #[test]
    fn dimensions_come_from_float_or_base64_vectors() {
        let floats = response_json(
            &json!({"data": [{"embedding": [0.1, 0.2, 0.3]}], "usage": {"prompt_tokens": 2}}),
        );
        assert_eq!(floats.embeddings.unwrap().dimensions, Some(3));
        assert_eq!(floats.usage.input_tokens, Some(2));
        let b64 = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        let encoded = response_json(&json!({"data": [{"embedding": b64}]}));
        assert_eq!(encoded.embeddings.unwrap().dimensions, Some(4));
    }

    #[test]
    fn vectors_can_be_dropped() {
        let v = without_vectors(json!({"data": [{"index": 0, "embedding": [1.0]}], "model": "m"}));
        assert_eq!(
            v,
            json!({"data": [{"index": 0, "embedding": null}], "model": "m"})
        );
    }
}
