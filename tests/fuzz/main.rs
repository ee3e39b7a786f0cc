//! The parsers input reaches, fuzzed with property tests (`proptest`).
//!
//! Everything a client or an upstream sends goes through a handful of
//! parsers before it becomes a record: the identity extractor and the body
//! stripper (`identity`), the header policy (`headers`, `route::outbound_headers`),
//! the route matcher and the path split (`route`, `protocol`), the SSE reader
//! (`capture::sse`), the stream assembler of each API (`capture::openai_chat`,
//! `openai_completions`, `openai_responses`, `anthropic_messages`) and the
//! vLLM stripper (`forward::vllm`). For each, a property over generated input
//! says what must hold whatever the input:
//!
//! * arbitrary bytes, headers, bodies and paths never panic;
//! * a stream reads the same however the network cut it into chunks (the
//!   SSE events, each assembler's output, and what the vLLM stripper sends);
//! * whatever the body of a call, the real gateway answers it with the
//!   upstream's JSON and records it (`calls`);
//! * no identity carrier gets past the gateway: no `X-RLLM-*` header of any
//!   case (also through `X-Tracegate-Provider-Data`), no `rllm` or
//!   `metadata.rllm` left in a body where the extractor would read one.
//!
//! The generators (`generate.rs`) draw from each API's vocabulary (its
//! field names and event types) so that most cases reach deep into the
//! assemblers, and mix in arbitrary values so that the rest does not follow
//! the rules. Each property runs `PROPTEST_CASES` cases (proptest's default,
//! 256, in `cargo test`) and prints how many it ran; `bench/fuzz.sh` runs a
//! million and more. A case that once failed is kept as a plain unit test
//! next to the code it broke.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod calls;
mod generate;
mod headers;
mod identity;
mod routes;
mod streams;
mod vllm;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};
use std::cell::Cell;

/// Checks `property` on `PROPTEST_CASES` values of `strategy` and prints
/// the number of cases; a failure panics with the smallest failing input
/// proptest found.
pub fn check<S: Strategy>(name: &str, strategy: S, property: impl Fn(S::Value) -> TestCaseResult) {
    check_with(name, 1, strategy, property);
}

/// [`check`] on a `divisor`th of `PROPTEST_CASES` (at least one): for
/// properties whose cases are real calls.
pub fn check_with<S: Strategy>(
    name: &str,
    divisor: u32,
    strategy: S,
    property: impl Fn(S::Value) -> TestCaseResult,
) {
    let default = Config::default();
    // Failures are kept as unit tests next to the code, not in a
    // proptest-regressions directory.
    let config = Config {
        cases: (default.cases / divisor).max(1),
        failure_persistence: None,
        ..default
    };
    let cases = config.cases;
    let ran = Cell::new(0u64);
    let result = TestRunner::new(config).run(&strategy, |value| {
        ran.set(ran.get() + 1);
        property(value)
    });
    match result {
        Ok(()) => println!("fuzz {name}: {cases} cases passed ({} runs)", ran.get()),
        Err(failure) => panic!("fuzz {name}: {failure}"),
    }
}
