//! Raw settings: values as a layer wrote them, with where they came from,
//! and the typed readers that turn them into durations, sizes, booleans and
//! enums.
//!
//! The file writes `read_timeout = 30` (an integer), the environment
//! `TRACEGATE_READ_TIMEOUT=30` (text), a flag `--read-timeout 30` (text):
//! three spellings of one raw value. Keeping leaves raw until validation
//! means all three go through the same parser and fail with the same
//! message, naming the key and the [`Origin`]. A [`Layer`] maps keys to
//! [`Setting`]s; [`Settings::merge`] lays layers over each other, key by key,
//! and is the only place precedence is decided.

use super::error::{ConfigError, Origin};
use super::key::Key;
use clap::ValueEnum;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// A value as written, before it has a type.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Raw {
    /// Text: a TOML or JSON string, any environment variable or flag (TOML
    /// floats and dates are kept as their text too).
    Text(String),
    /// A TOML or JSON integer.
    Integer(i64),
    /// A TOML or JSON boolean.
    Bool(bool),
    /// A list, or a repeated flag.
    List(Vec<Setting>),
    /// A table (a route, a worker, headers).
    Table(BTreeMap<String, Setting>),
}

/// A raw value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Setting {
    /// The value as written.
    pub raw: Raw,
    /// Where it was written.
    pub origin: Origin,
}

/// One source's settings: the file, the environment or the flags.
pub(super) type Layer = BTreeMap<Key, Setting>;

/// A boolean as text is written `true`/`false`, `1`/`0`, `yes`/`no` or
/// `on`/`off`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    #[value(name = "true", aliases = ["1", "yes", "on"])]
    On,
    #[value(name = "false", aliases = ["0", "no", "off"])]
    Off,
}

impl Setting {
    /// A text value.
    pub fn text_from(text: impl Into<String>, origin: Origin) -> Setting {
        Setting {
            raw: Raw::Text(text.into()),
            origin,
        }
    }

    /// An error about this value, under `key`.
    pub fn error(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(key, message, self.origin.clone())
    }

    /// The value as text; numbers and booleans are spelled out, so that a
    /// typed parser can read them and quote them in its message.
    pub fn text(&self, key: &str) -> Result<String, ConfigError> {
        match &self.raw {
            Raw::Text(text) => Ok(text.clone()),
            Raw::Integer(n) => Ok(n.to_string()),
            Raw::Bool(b) => Ok(b.to_string()),
            Raw::List(_) => Err(self.error(key, "expected one value, not a list")),
            Raw::Table(_) => Err(self.error(key, "expected one value, not a table")),
        }
    }

    /// The items of a list; a single value is a list of one.
    pub fn items(&self) -> &[Setting] {
        match &self.raw {
            Raw::List(items) => items,
            _ => std::slice::from_ref(self),
        }
    }

    /// The entries of a table.
    pub fn table(&self, key: &str) -> Result<&BTreeMap<String, Setting>, ConfigError> {
        match &self.raw {
            Raw::Table(table) => Ok(table),
            _ => Err(self.error(key, "expected a table")),
        }
    }

    /// A boolean.
    pub fn switch(&self, key: &str) -> Result<bool, ConfigError> {
        match self.raw {
            Raw::Bool(b) => Ok(b),
            _ => Ok(self.choice::<Switch>(key, true)? == Switch::On),
        }
    }

    /// One of the names of a [`ValueEnum`] (`ignore_case` for the names
    /// that were always case-insensitive).
    pub fn choice<T: ValueEnum>(&self, key: &str, ignore_case: bool) -> Result<T, ConfigError> {
        let text = self.text(key)?;
        T::from_str(text.trim(), ignore_case).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|v| v.get_name().to_string())
                .collect();
            self.error(key, format!("'{text}' is not {}", alternatives(&names)))
        })
    }

    /// A duration such as `10s`, `500ms` or `5m`; `none` or `0` mean "no
    /// limit" (`None`).
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let text = self.text(key)?;
        let t = text.trim();
        if t.eq_ignore_ascii_case("none") || t == "0" {
            return Ok(None);
        }
        humantime::parse_duration(t).map(Some).map_err(|_| {
            self.error(
                key,
                format!("'{text}' is not a duration like 10s, 500ms or none"),
            )
        })
    }

    /// A size in bytes: `1048576`, `512KiB`, `32MiB`.
    pub fn bytes(&self, key: &str) -> Result<u64, ConfigError> {
        let text = self.text(key)?;
        parse_bytes(&text)
            .ok_or_else(|| self.error(key, format!("'{text}' is not a size like 32MiB")))
    }

    /// A whole number.
    pub fn number<T: FromStr>(&self, key: &str) -> Result<T, ConfigError> {
        let text = self.text(key)?;
        text.trim()
            .parse()
            .map_err(|_| self.error(key, format!("'{text}' is not a whole number")))
    }

    /// A count that must be at least one.
    pub fn positive(&self, key: &str) -> Result<usize, ConfigError> {
        match self.number(key)? {
            0 => Err(self.error(key, "must be greater than zero")),
            n => Ok(n),
        }
    }

    /// A JSON value (the `TRACEGATE_ROUTES` array), every part from
    /// `origin`. `null` in an object means the key is absent, as in serde.
    pub fn from_json(value: serde_json::Value, origin: &Origin) -> Result<Setting, NullInList> {
        use serde_json::Value;
        let raw = match value {
            Value::String(text) => Raw::Text(text),
            Value::Bool(b) => Raw::Bool(b),
            Value::Number(n) => n.as_i64().map_or(Raw::Text(n.to_string()), Raw::Integer),
            Value::Array(items) => Raw::List(
                items
                    .into_iter()
                    .map(|item| Setting::from_json(item, origin))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(entries) => Raw::Table(
                entries
                    .into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| Ok((k, Setting::from_json(v, origin)?)))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Null => return Err(NullInList),
        };
        Ok(Setting {
            raw,
            origin: origin.clone(),
        })
    }
}

/// A JSON `null` where a value is needed (in a list: a missing key is
/// simply left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("null is not a value")]
pub(super) struct NullInList;

/// The merged settings: every layer laid over the ones below it.
#[derive(Debug, Default)]
pub(super) struct Settings(Layer);

impl Settings {
    /// Merges layers, lowest precedence first: a key set in a later layer
    /// replaces the earlier value whole (a list is never concatenated).
    pub fn merge(layers: impl IntoIterator<Item = Layer>) -> Settings {
        let mut merged = Layer::new();
        for layer in layers {
            merged.extend(layer);
        }
        Settings(merged)
    }

    /// The value of `key`, if any layer set it.
    pub fn get(&self, key: Key) -> Option<&Setting> {
        self.0.get(&key)
    }

    /// Where the value of `key` came from ([`Origin::Default`] when unset).
    pub fn origin(&self, key: Key) -> Origin {
        self.get(key)
            .map_or(Origin::Default, |setting| setting.origin.clone())
    }

    /// `key` as text, if set.
    pub fn text(&self, key: Key) -> Result<Option<String>, ConfigError> {
        self.get(key).map(|s| s.text(key.name())).transpose()
    }

    /// `key` as a boolean, if set.
    pub fn switch(&self, key: Key) -> Result<Option<bool>, ConfigError> {
        self.get(key).map(|s| s.switch(key.name())).transpose()
    }

    /// `key` as a boolean, else `default`.
    pub fn switch_or(&self, key: Key, default: bool) -> Result<bool, ConfigError> {
        Ok(self.switch(key)?.unwrap_or(default))
    }

    /// `key` as a count of at least one, else `default`.
    pub fn positive_or(&self, key: Key, default: usize) -> Result<usize, ConfigError> {
        self.get(key)
            .map_or(Ok(default), |s| s.positive(key.name()))
    }

    /// `key` as a duration that `none` disables, else `default`.
    pub fn duration_or(
        &self,
        key: Key,
        default: Option<Duration>,
    ) -> Result<Option<Duration>, ConfigError> {
        self.get(key)
            .map_or(Ok(default), |s| s.duration(key.name()))
    }

    /// `key` as a duration that cannot be disabled, else `default`.
    pub fn limit(&self, key: Key, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(s) => s
                .duration(key.name())?
                .ok_or_else(|| s.error(key.name(), "cannot be disabled")),
        }
    }
}

/// `a`, `a or b`, `a, b or c`.
pub(super) fn alternatives(names: &[String]) -> String {
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Parses `1048576`, `512KiB`, `32MiB`, `1GiB` (also `KB`/`MB`/`GB`, binary).
pub(super) fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(text: &str) -> Setting {
        Setting::text_from(text, Origin::Flag("--k".into()))
    }

    fn detail(e: ConfigError) -> String {
        format!("{}: {}", e.key, e.message)
    }

    #[test]
    fn byte_sizes_take_binary_units() {
        assert_eq!(parse_bytes("32MiB"), Some(32 << 20));
        assert_eq!(parse_bytes("512 kb"), Some(512 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("ten"), None);
        assert_eq!(parse_bytes("5 parsecs"), None);
    }

    #[test]
    fn none_disables_a_timeout() {
        assert_eq!(flag("none").duration("k").unwrap(), None);
        assert_eq!(
            Settings::default()
                .duration_or(Key::ReadTimeout, Some(Duration::from_secs(10)))
                .unwrap(),
            Some(Duration::from_secs(10))
        );
        assert!(detail(flag("soon").duration("k").unwrap_err()).starts_with("k:"));
    }

    #[test]
    fn an_integer_and_its_text_meet_the_same_parser() {
        let integer = Setting {
            raw: Raw::Integer(30),
            origin: Origin::Default,
        };
        assert_eq!(
            integer.duration("read_timeout").unwrap_err().message,
            flag("30").duration("read_timeout").unwrap_err().message
        );
        assert_eq!(integer.positive("n").unwrap(), 30);
    }

    #[test]
    fn booleans_take_every_spelling() {
        for text in ["true", "1", "yes", "on", "TRUE", " On "] {
            assert!(flag(text).switch("k").unwrap(), "{text}");
        }
        for text in ["false", "0", "no", "off", "Off"] {
            assert!(!flag(text).switch("k").unwrap(), "{text}");
        }
        let e = flag("maybe").switch("k").unwrap_err();
        assert_eq!(e.message, "'maybe' is not true or false");
    }

    #[test]
    fn later_layers_win_key_by_key() {
        let at =
            |origin: Origin| Layer::from([(Key::Listen, Setting::text_from("x", origin.clone()))]);
        let file = Origin::File {
            path: "t.toml".into(),
            line: 1,
        };
        let env = Origin::Env("TRACEGATE_LISTEN".into());
        let flag = Origin::Flag("--listen".into());
        let mut file_layer = at(file.clone());
        file_layer.insert(Key::Db, Setting::text_from("f.db", file.clone()));
        let s = Settings::merge([file_layer, at(env.clone()), at(flag.clone())]);
        assert_eq!(s.origin(Key::Listen), flag);
        assert_eq!(s.origin(Key::Db), file, "a key no later layer sets stays");
        let s = Settings::merge([at(file), at(env.clone())]);
        assert_eq!(s.origin(Key::Listen), env);
        assert_eq!(s.origin(Key::ReadTimeout), Origin::Default);
    }
}
