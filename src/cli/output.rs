//! How the query commands write: formats, aligned tables, and a writer that
//! survives `| head`.
//!
//! Listings come in three formats: `table` for people (aligned columns,
//! short times, `-` for absent values), `json` (one array, the same objects
//! and field names as the HTTP API) and `jsonl` (one object per line, for
//! `jq` and scripts). Everything goes through [`Output`], which treats a
//! closed pipe as the reader having seen enough: the command stops writing
//! and exits 0, instead of panicking as `println!` would.

use super::Failure;
use serde::Serialize;
use std::fmt::Display;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// A listing's output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, for reading.
    #[default]
    Table,
    /// One JSON array, the HTTP API's objects.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Buffered output to stdout or a file. A closed pipe is not an error: it
/// marks the output [`closed`](Output::is_closed) and later writes do nothing.
pub struct Output {
    inner: Box<dyn Write>,
    name: String,
    closed: bool,
}

impl Output {
    /// Standard output.
    pub fn stdout() -> Output {
        Output {
            inner: Box::new(BufWriter::new(io::stdout().lock())),
            name: "standard output".into(),
            closed: false,
        }
    }

    /// A new file at `path` (replacing any file there).
    pub fn create(path: &Path) -> Result<Output, Failure> {
        let file = std::fs::File::create(path)
            .map_err(|e| Failure::Runtime(format!("cannot create {}: {e}", path.display())))?;
        Ok(Output {
            inner: Box::new(BufWriter::new(file)),
            name: path.display().to_string(),
            closed: false,
        })
    }

    /// Whether the reader went away (a closed pipe).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes text.
    pub fn text(&mut self, text: &str) -> Result<(), Failure> {
        self.write_all(text.as_bytes()).map_err(|e| self.failed(e))
    }

    /// Writes one value as JSON on one line.
    pub fn json_line<T: Serialize>(&mut self, value: &T) -> Result<(), Failure> {
        self.json(value)?;
        self.text("\n")
    }

    /// Writes one value as compact JSON.
    pub fn json<T: Serialize>(&mut self, value: &T) -> Result<(), Failure> {
        serde_json::to_writer(&mut *self, value).map_err(|e| self.failed(e.into()))
    }

    /// Flushes what is buffered; call it before reporting success.
    pub fn finish(mut self) -> Result<(), Failure> {
        self.flush().map_err(|e| self.failed(e))
    }

    fn failed(&self, e: io::Error) -> Failure {
        Failure::Runtime(format!("cannot write to {}: {e}", self.name))
    }

    /// Passes an I/O result through, turning a closed pipe into success.
    fn unless_closed<T>(&mut self, result: io::Result<T>, done: T) -> io::Result<T> {
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(done)
            }
            other => other,
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let result = self.inner.write(buf);
        self.unless_closed(result, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.inner.flush();
        self.unless_closed(result, ())
    }
}

/// Writes `items` to stdout in `format`; `table` builds the table view.
pub fn print_listing<T: Serialize>(
    format: Format,
    items: &[T],
    table: impl FnOnce(&[T]) -> Table,
) -> Result<(), Failure> {
    let mut out = Output::stdout();
    match format {
        Format::Table => out.text(&table(items).render())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, items).map_err(|e| out.failed(e.into()))?;
            out.text("\n")?;
        }
        Format::Jsonl => {
            for item in items {
                out.json_line(item)?;
                if out.is_closed() {
                    break;
                }
            }
        }
    }
    out.finish()
}

/// Where a column's cells sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: flush left.
    Left,
    /// Numbers: flush right.
    Right,
}

/// A table of text cells, rendered with aligned columns.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            columns: columns
                .iter()
                .map(|(title, align)| (title.to_string(), *align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells are ignored).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: a title line, then one line per row, columns two
    /// spaces apart, no trailing spaces.
    pub fn render(&self) -> String {
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_string();
        let titles: Vec<String> = self.columns.iter().map(|(t, _)| t.clone()).collect();
        let lines: Vec<Vec<String>> = std::iter::once(titles)
            .chain(self.rows.iter().map(|r| {
                (0..self.columns.len())
                    .map(|i| cell(r, i))
                    .collect::<Vec<_>>()
            }))
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in &lines {
            let mut text = String::new();
            for (i, value) in line.iter().enumerate() {
                let pad = " ".repeat(widths[i] - value.chars().count());
                if i > 0 {
                    text.push_str("  ");
                }
                match self.columns[i].1 {
                    Align::Left => {
                        text.push_str(value);
                        text.push_str(&pad);
                    }
                    Align::Right => {
                        text.push_str(&pad);
                        text.push_str(value);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A stored time (`2026-11-01T12:34:56.123456Z`) as `2026-11-01 12:34:56Z`:
/// to the second, with its zone (stored times are UTC).
pub fn short_time(rfc3339: &str) -> String {
    let seconds = rfc3339.split('.').next().unwrap_or(rfc3339);
    format!("{}Z", seconds.trim_end_matches('Z').replacen('T', " ", 1))
}

/// An optional value, `-` when absent.
pub fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Milliseconds with one decimal.
pub fn ms(value: f64) -> String {
    format!("{value:.1}")
}

/// The cost column, shown only when some row has a cost (without
/// `[[prices]]` nothing has one).
pub const COST: (&str, Align) = ("COST USD", Align::Right);

/// US dollars with six decimals (a cheap call costs fractions of a cent).
pub fn usd(value: f64) -> String {
    format!("{value:.6}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut table = Table::new(&[("NAME", Align::Left), ("CALLS", Align::Right)]);
        table.row(vec!["a-long-name".into(), "7".into()]);
        table.row(vec!["b".into(), "1234".into()]);
        assert_eq!(
            table.render(),
            "NAME         CALLS\na-long-name      7\nb             1234\n"
        );
    }

    #[test]
    fn times_are_shortened_to_the_second() {
        assert_eq!(
            short_time("2026-11-01T12:34:56.123456Z"),
            "2026-11-01 12:34:56Z"
        );
        assert_eq!(short_time("2026-11-01T12:34:56Z"), "2026-11-01 12:34:56Z");
    }
}
