//! A call's cost in USD: its usage priced by the `[[prices]]` entry of its
//! model, computed once, when the record is built.
//!
//! The model priced is the one the upstream was asked for (the route's
//! `backend_model` when it renamed the call's, else the call's). Usage counts
//! are read as both APIs report them once capture has normalised them:
//! `input_tokens` includes the cached ones, `output_tokens` the reasoning
//! ones. So the cost is
//!
//! ```text
//! ((input − cached) × input + cached × cached_input
//!  + (output − reasoning) × output + reasoning × reasoning) / 1 000 000
//! ```
//!
//! with `cached_input` and `reasoning` falling back to `input` and `output`
//! when the entry leaves them out. A call with no price, or no usage at all
//! (a failure, a model list), has no cost (`null`), never a cost of zero.

use crate::config::Prices;
use crate::record::TraceRecord;

/// Tokens per price unit: prices are per million tokens.
const PER: f64 = 1_000_000.0;

/// The cost of `record` under `prices`, if it has one.
pub fn cost_usd(prices: &Prices, record: &TraceRecord) -> Option<f64> {
    let model = record
        .backend_model
        .as_deref()
        .or(record.model.as_deref())?;
    let price = prices.of(model)?;
    let usage = &record.usage;
    if usage.input_tokens.is_none() && usage.output_tokens.is_none() {
        return None;
    }
    let input = usage.input_tokens.unwrap_or(0);
    let cached = usage.cached_input_tokens.unwrap_or(0).min(input);
    let output = usage.output_tokens.unwrap_or(0);
    let reasoning = usage.reasoning_tokens.unwrap_or(0).min(output);
    let usd = (input - cached) as f64 * price.input
        + cached as f64 * price.cached_input.unwrap_or(price.input)
        + (output - reasoning) as f64 * price.output
        + reasoning as f64 * price.reasoning.unwrap_or(price.output);
    Some(usd / PER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Price;
    use crate::record::Usage;

    fn prices() -> Prices {
        Prices(vec![Price {
            model_prefix: "gpt-4o".into(),
            input: 2.0,
            cached_input: Some(1.0),
            output: 8.0,
            reasoning: None,
        }])
    }

    fn record(model: &str, usage: Usage) -> TraceRecord {
        TraceRecord {
            model: Some(model.into()),
            usage,
            ..TraceRecord::default()
        }
    }

    #[test]
    fn each_kind_of_token_is_priced_once() {
        let usage = Usage {
            input_tokens: Some(1_000),
            cached_input_tokens: Some(400),
            output_tokens: Some(500),
            reasoning_tokens: Some(100),
            ..Usage::default()
        };
        // 600 × 2 + 400 × 1 + 400 × 8 + 100 × 8 (reasoning at the output price).
        let expected = (1_200.0 + 400.0 + 3_200.0 + 800.0) / PER;
        assert_eq!(
            cost_usd(&prices(), &record("gpt-4o-mini", usage)),
            Some(expected)
        );
    }

    #[test]
    fn no_price_or_no_usage_is_no_cost() {
        let usage = Usage {
            input_tokens: Some(10),
            ..Usage::default()
        };
        assert_eq!(cost_usd(&prices(), &record("claude-3", usage)), None);
        assert_eq!(
            cost_usd(&prices(), &record("gpt-4o", Usage::default())),
            None
        );
    }

    #[test]
    fn a_renamed_call_is_priced_as_the_model_it_was_sent_as() {
        let mut renamed = record(
            "policy",
            Usage {
                input_tokens: Some(1_000_000),
                ..Usage::default()
            },
        );
        renamed.backend_model = Some("gpt-4o".into());
        assert_eq!(cost_usd(&prices(), &renamed), Some(2.0));
    }
}
