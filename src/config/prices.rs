//! `[[prices]]`: what a model's tokens cost, by model prefix, written by the
//! deployer.
//!
//! None are built in: a price list shipped in the binary goes stale without
//! anyone noticing, and a stale cost is worse than none. Each entry names a
//! `model_prefix` and USD per million tokens for `input`, and optionally
//! `cached_input`, `output` and `reasoning`; the longest prefix that starts
//! a call's model wins (case-insensitively), so `gpt-4o-mini` can be priced
//! apart from `gpt-4o`. Every mistake is refused at start with the entry and
//! the field (`prices[1] (gpt-4o): output`) and the file line.

use super::error::ConfigError;
use super::key::keys;
use super::raw::{Raw, Setting};
use std::collections::BTreeMap;

keys! {
    /// The fields of one `[[prices]]` entry.
    enum PriceKey {
        ModelPrefix => "model_prefix",
        Input => "input",
        CachedInput => "cached_input",
        Output => "output",
        Reasoning => "reasoning",
    }
}

/// The prices of one model family, USD per million tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// Lower-case prefix of the model names it prices.
    pub model_prefix: String,
    /// Input (prompt) tokens not served from a cache.
    pub input: f64,
    /// Input tokens served from a prompt cache (else `input`).
    pub cached_input: Option<f64>,
    /// Output (completion) tokens.
    pub output: f64,
    /// Output tokens spent on reasoning (else `output`).
    pub reasoning: Option<f64>,
}

/// The price table, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(pub Vec<Price>);

impl Prices {
    /// The price of `model`: the entry with the longest prefix of it.
    pub fn of(&self, model: &str) -> Option<&Price> {
        let model = model.to_ascii_lowercase();
        (self.0.iter())
            .filter(|p| model.starts_with(&p.model_prefix))
            .max_by_key(|p| p.model_prefix.len())
    }
}

/// Reads `[[prices]]` (`setting`), validated.
pub(super) fn read(setting: &Setting) -> Result<Prices, ConfigError> {
    let key = "prices";
    let Raw::List(entries) = &setting.raw else {
        return Err(setting.error(key, "expected a list of prices ([[prices]])"));
    };
    let mut prices = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let price = price(&format!("prices[{i}]"), entry)?;
        if prices
            .iter()
            .any(|p: &Price| p.model_prefix == price.model_prefix)
        {
            let message = format!("'{}' is priced twice", price.model_prefix);
            return Err(entry.error(&format!("prices[{i}]: model_prefix"), message));
        }
        prices.push(price);
    }
    Ok(Prices(prices))
}

/// One entry, at `at` (`prices[0]`).
fn price(at: &str, entry: &Setting) -> Result<Price, ConfigError> {
    let fields = entry.table(at)?;
    if let Some((name, value)) = fields
        .iter()
        .find(|(name, _)| PriceKey::named(name).is_none())
    {
        let names: Vec<&str> = PriceKey::ALL.iter().map(|k| k.name()).collect();
        let message = format!("unknown key; expected one of {}", names.join(", "));
        return Err(value.error(&format!("{at}.{name}"), message));
    }
    let prefix = match fields.get(PriceKey::ModelPrefix.name()) {
        Some(prefix) => prefix.text(&format!("{at}: model_prefix"))?,
        None => String::new(),
    };
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() {
        let message = "needed: the start of the model names it prices";
        return Err(entry.error(&format!("{at}: model_prefix"), message));
    }
    let entry_key = format!("{at} ({prefix})");
    let field = Field {
        at: &entry_key,
        fields,
        entry,
    };
    Ok(Price {
        input: field.required(PriceKey::Input)?,
        cached_input: field.optional(PriceKey::CachedInput)?,
        output: field.required(PriceKey::Output)?,
        reasoning: field.optional(PriceKey::Reasoning)?,
        model_prefix: prefix,
    })
}

/// The fields of one entry, for messages naming it.
struct Field<'a> {
    at: &'a str,
    fields: &'a BTreeMap<String, Setting>,
    entry: &'a Setting,
}

impl Field<'_> {
    fn required(&self, key: PriceKey) -> Result<f64, ConfigError> {
        self.optional(key)?.ok_or_else(|| {
            let message = "needed: USD per million tokens, like 2.5";
            self.entry
                .error(&format!("{}: {}", self.at, key.name()), message)
        })
    }

    fn optional(&self, key: PriceKey) -> Result<Option<f64>, ConfigError> {
        let Some(value) = self.fields.get(key.name()) else {
            return Ok(None);
        };
        let name = format!("{}: {}", self.at, key.name());
        let text = value.text(&name)?;
        match text.trim().parse::<f64>() {
            Ok(usd) if usd.is_finite() && usd >= 0.0 => Ok(Some(usd)),
            _ => Err(value.error(
                &name,
                format!("'{text}' is not a price: USD per million tokens, like 2.5"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::Origin;

    fn prices(json: &str) -> Result<Prices, ConfigError> {
        let value = serde_json::from_str(json).unwrap();
        read(&Setting::from_json(value, &Origin::Default).unwrap())
    }

    #[test]
    fn the_longest_prefix_wins_in_any_case() {
        let p = prices(
            r#"[{"model_prefix": "gpt-4o", "input": "2.5", "output": 10},
                {"model_prefix": "GPT-4o-mini", "input": "0.15", "output": "0.6", "cached_input": "0.075"}]"#,
        )
        .unwrap();
        assert_eq!(p.of("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(p.of("GPT-4o-2024-08-06").unwrap().output, 10.0);
        assert!(p.of("claude-sonnet-4-5").is_none());
    }

    #[test]
    fn mistakes_name_the_entry_and_the_field() {
        let cases = [
            (r#"[{"input": 1, "output": 1}]"#, "prices[0]: model_prefix"),
            (
                r#"[{"model_prefix": "a", "output": 1}]"#,
                "prices[0] (a): input",
            ),
            (
                r#"[{"model_prefix": "a", "input": "cheap", "output": 1}]"#,
                "prices[0] (a): input",
            ),
            (
                r#"[{"model_prefix": "a", "input": -1, "output": 1}]"#,
                "prices[0] (a): input",
            ),
            (
                r#"[{"model_prefix": "a", "input": 1, "output": 1, "ouput": 2}]"#,
                "prices[0].ouput",
            ),
            (
                r#"[{"model_prefix": "a", "input": 1, "output": 1}, {"model_prefix": "A", "input": 1, "output": 1}]"#,
                "prices[1]: model_prefix",
            ),
            (r#"{"model_prefix": "a"}"#, "prices"),
        ];
        for (json, key) in cases {
            assert_eq!(prices(json).unwrap_err().key, key, "{json}");
        }
    }
}
