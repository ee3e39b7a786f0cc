//! The file layer: a TOML document read into raw settings, each with the
//! line it was written on.
//!
//! The document is parsed with spans (`toml::de::DeTable`), not into a
//! struct: the layer keeps every value raw, so that a wrong type is reported
//! by the same typed parser as a wrong text, with the value's line. What
//! the file may hold is the [`Key`] table; any other key is refused with the
//! keys its table may hold, so a typo never passes as a silently ignored
//! setting. Route and worker fields are checked the same way, against the
//! route tables.

use super::error::{ConfigError, Origin};
use super::key::Key;
use super::raw::{Layer, Raw, Setting};
use super::routes;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

/// Reads the file at `path`, named by `origin` (`--config`,
/// `TRACEGATE_CONFIG`).
pub(super) fn read(path: &Path, origin: &Origin) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let message = format!("cannot read {}: {e}", path.display());
        ConfigError::new("config", message, origin.clone())
    })?;
    parse(path, &text)
}

/// Parses the text of the file at `path`.
pub(super) fn parse(path: &Path, text: &str) -> Result<Layer, ConfigError> {
    let file = Source { path, text };
    let document = DeTable::parse(text).map_err(|e| {
        let message = e.message().replace('\n', " ");
        ConfigError::new("config", message, file.origin(e.span().unwrap_or(0..0)))
    })?;
    let mut layer = Layer::new();
    for (key, value) in document.into_inner() {
        file.add(&mut layer, None, key, value)?;
    }
    if let Some(routes) = layer.get(&Key::Routes) {
        routes::check_fields(routes)?;
    }
    Ok(layer)
}

/// The file being read, to turn spans into lines.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// The origin of the text at `span`: the file and the line it starts on.
    fn origin(&self, span: Range<usize>) -> Origin {
        let before = self.text.get(..span.start).unwrap_or(self.text);
        Origin::File {
            path: self.path.to_path_buf(),
            line: before.matches('\n').count() + 1,
        }
    }

    /// Adds one entry of the document (`section` `None`) or of a section.
    fn add(
        &self,
        layer: &mut Layer,
        section: Option<&str>,
        key: Spanned<DeString<'_>>,
        value: Spanned<DeValue<'_>>,
    ) -> Result<(), ConfigError> {
        let name = match section {
            Some(section) => format!("{section}.{}", key.get_ref()),
            None => key.get_ref().to_string(),
        };
        if let Some(known) = Key::named(&name) {
            layer.insert(known, self.setting(value));
            return Ok(());
        }
        if section.is_none() && Key::is_section(&name) {
            let span = value.span();
            let DeValue::Table(table) = value.into_inner() else {
                let message = format!("expected a table ([{name}])");
                return Err(ConfigError::new(name, message, self.origin(span)));
            };
            for (key, value) in table {
                self.add(layer, Some(&name), key, value)?;
            }
            return Ok(());
        }
        let message = format!(
            "unknown key; expected one of {}",
            Key::names_in(section).join(", ")
        );
        Err(ConfigError::new(name, message, self.origin(key.span())))
    }

    /// A value, and every value inside it, with its line.
    fn setting(&self, value: Spanned<DeValue<'_>>) -> Setting {
        let origin = self.origin(value.span());
        let raw = match value.into_inner() {
            DeValue::String(text) => Raw::Text(text.into_owned()),
            DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
                .map_or_else(|_| Raw::Text(n.to_string()), Raw::Integer),
            DeValue::Float(x) => Raw::Text(x.to_string()),
            DeValue::Boolean(b) => Raw::Bool(b),
            DeValue::Datetime(at) => Raw::Text(at.to_string()),
            DeValue::Array(items) => {
                Raw::List(items.into_iter().map(|v| self.setting(v)).collect())
            }
            DeValue::Table(table) => Raw::Table(
                table
                    .into_iter()
                    .map(|(k, v)| (k.into_inner().into_owned(), self.setting(v)))
                    .collect(),
            ),
        };
        Setting { raw, origin }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "tracegate.toml";

    fn line(layer: &Layer, key: Key) -> usize {
        match &layer[&key].origin {
            Origin::File { line, .. } => *line,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_errors_name_the_key_and_its_table() {
        let text = "listen = \"x\"\n[store]\nqueue_capacity = \"many\"\n";
        let layer = parse(Path::new(PATH), text).unwrap();
        let e = layer[&Key::StoreQueueCapacity]
            .positive(Key::StoreQueueCapacity.name())
            .unwrap_err();
        assert_eq!(
            (e.key.as_str(), line(&layer, Key::StoreQueueCapacity)),
            ("store.queue_capacity", 3)
        );
        assert_eq!(line(&layer, Key::Listen), 1);
    }

    #[test]
    fn a_bad_value_names_its_file_line() {
        let text = "listen = \"127.0.0.1:1\"\n\nread_timeout = 30\n";
        let layer = parse(Path::new(PATH), text).unwrap();
        let e = layer[&Key::ReadTimeout]
            .duration("read_timeout")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: read_timeout: '30' is not a duration like 10s, 500ms or none \
             (tracegate.toml line 3)"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_the_keys_of_their_table() {
        let e = parse(Path::new(PATH), "listen = \"x\"\nlisten_adress = \"y\"\n").unwrap_err();
        assert_eq!(e.key, "listen_adress");
        assert!(e.message.contains("listen, db, upstream"), "{}", e.message);
        assert!(e.to_string().ends_with("(tracegate.toml line 2)"), "{e}");
        let e = parse(Path::new(PATH), "[store]\nbatch = 1\n").unwrap_err();
        assert_eq!(e.key, "store.batch");
        assert!(
            e.message
                .ends_with("queue_capacity, batch_max, busy_timeout")
        );
        let e = parse(Path::new(PATH), "[[routes]]\nname = \"a\"\nbogus = 1\n").unwrap_err();
        assert_eq!(e.key, "routes[0].bogus");
        assert!(e.to_string().ends_with("(tracegate.toml line 3)"), "{e}");
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let e = parse(Path::new(PATH), "db = \"a\"\nlisten = \n").unwrap_err();
        assert_eq!(e.key, "config");
        assert!(e.to_string().ends_with("(tracegate.toml line 2)"), "{e}");
    }
}
