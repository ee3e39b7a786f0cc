//! The vLLM stripper: what the client gets does not depend on the cut.

use crate::check;
use crate::generate::{self, LineEnd};
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;
use tracegate::capture::sse;
use tracegate::forward::vllm::Stripper;

/// Everything a stripper sends for a body arriving in `chunks`.
fn sent(stream: bool, strip_logprobs: bool, chunks: &[Bytes]) -> Vec<u8> {
    let mut stripper = Stripper::new(stream, strip_logprobs);
    let mut out = Vec::new();
    for chunk in chunks {
        if let Some(bytes) = stripper.push(chunk) {
            out.extend_from_slice(&bytes);
        }
    }
    if let Some(rest) = stripper.finish() {
        out.extend_from_slice(&rest);
    }
    out
}

/// The same bytes sent whether the body came whole, cut, or byte by byte.
fn same_whatever_the_cut(
    stream: bool,
    strip_logprobs: bool,
    body: &[u8],
    cuts: &[proptest::sample::Index],
) -> Result<Vec<u8>, TestCaseError> {
    let whole = sent(stream, strip_logprobs, &[Bytes::copy_from_slice(body)]);
    let cut = sent(stream, strip_logprobs, &generate::split(body, cuts));
    prop_assert_eq!(
        String::from_utf8_lossy(&cut),
        String::from_utf8_lossy(&whole)
    );
    prop_assert_eq!(&cut, &whole);
    let bytewise = sent(stream, strip_logprobs, &generate::bytewise(body));
    prop_assert_eq!(&bytewise, &whole);
    Ok(whole)
}

/// No vLLM field is left in an answer (or stream chunk).
fn nothing_left(value: &Value, strip_logprobs: bool) -> Result<(), TestCaseError> {
    for field in ["prompt_token_ids", "prompt_logprobs", "kv_transfer_params"] {
        prop_assert!(value.get(field).is_none(), "{}", field);
    }
    let choices = value.get("choices").and_then(Value::as_array);
    for choice in choices.into_iter().flatten() {
        for field in [
            "token_ids",
            "prompt_token_ids",
            "prompt_logprobs",
            "stop_reason",
        ] {
            prop_assert!(choice.get(field).is_none(), "choice {}", field);
        }
        if strip_logprobs {
            prop_assert!(choice.get("logprobs").is_none(), "choice logprobs");
        }
    }
    Ok(())
}

#[test]
fn a_stripped_stream_is_the_same_whatever_the_cut() {
    check(
        "vllm_stream",
        (generate::stream(), any::<bool>()),
        |((events, end, cuts), strip_logprobs)| {
            let text = generate::sse_text(&events, end);
            let out = same_whatever_the_cut(true, strip_logprobs, text.as_bytes(), &cuts)?;
            if !matches!(end, LineEnd::Cr) {
                // Events end in blank lines the stripper knows: each is
                // rewritten without vLLM's fields.
                for event in sse::events(&[Bytes::from(out)]) {
                    if let Some(value) = event.json() {
                        nothing_left(&value, strip_logprobs)?;
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn a_stripped_answer_is_the_same_whatever_the_cut() {
    check(
        "vllm_json",
        (generate::object(), generate::cuts(), any::<bool>()),
        |(object, cuts, strip_logprobs)| {
            let body = Value::Object(object).to_string();
            let out = same_whatever_the_cut(false, strip_logprobs, body.as_bytes(), &cuts)?;
            nothing_left(&serde_json::from_slice(&out).unwrap(), strip_logprobs)
        },
    );
}

#[test]
fn the_stripper_takes_any_bytes_cut_anywhere() {
    check(
        "vllm_arbitrary_bytes",
        (
            generate::bytes(),
            generate::cuts(),
            any::<bool>(),
            any::<bool>(),
        ),
        |(bytes, cuts, stream, strip_logprobs)| {
            same_whatever_the_cut(stream, strip_logprobs, &bytes, &cuts)?;
            Ok(())
        },
    );
}
