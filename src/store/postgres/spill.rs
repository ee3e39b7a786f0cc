//! The PostgreSQL writer's spill file: the records a stopping gateway could
//! not commit (the database was down), for the next start to commit first.
//!
//! One JSON line per record, `{"record": {...}, "span": "..."}`, written
//! whole to a temporary file and renamed over the spill file, so a crash
//! mid-write leaves the previous file, never half of one. Unlike SQLite's
//! backlog it is written only at shutdown: a running PostgreSQL writer
//! holds its backlog in memory (bounded by `store.backlog_memory`), since
//! the disk it would spill to is the gateway's own, not the database's.

use super::row::Row;
use crate::record::TraceRecord;
use crate::store::error::{StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;

/// One line of the file.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    record: std::borrow::Cow<'a, TraceRecord>,
    span: Option<String>,
}

/// Writes `rows` to the spill file at `path`, replacing it.
pub(crate) fn write(path: &Path, rows: &[&Row]) -> StoreResult<()> {
    let io = |source| StoreError::Io {
        context: format!("cannot write the spill file {}", path.display()),
        source,
    };
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    for row in rows {
        let line = Line {
            record: std::borrow::Cow::Borrowed(&row.record),
            span: row.span.clone(),
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The records in the spill file at `path` (none when there is no file);
/// a line that does not read is skipped, logged.
pub(crate) fn read(path: &Path) -> StoreResult<Vec<Row>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                context: format!("cannot read the spill file {}", path.display()),
                source,
            });
        }
    };
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let parsed = line.map_err(|e| e.to_string()).and_then(|l| {
            serde_json::from_str::<Line<'_>>(&l)
                .map(owned)
                .map_err(|e| e.to_string())
        });
        match parsed.map(|(record, span)| Row::encode_with_span(record, span)) {
            Ok(Ok(row)) => rows.push(row),
            Ok(Err(e)) => tracing::error!(line = n + 1, "spilled record unreadable: {e}"),
            Err(e) => tracing::error!(line = n + 1, "spilled record unreadable: {e}"),
        }
    }
    Ok(rows)
}

/// Removes the spill file once its records are committed.
pub(crate) fn remove(path: &Path) -> StoreResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            context: format!("cannot remove the spill file {}", path.display()),
            source,
        }),
    }
}

fn owned(line: Line<'_>) -> (TraceRecord, Option<String>) {
    (line.record.into_owned(), line.span)
}
