//! The writer's backlog: the records the store could not commit yet, kept
//! in order until it can — a minute later or an hour later.
//!
//! **Where they wait.** First in the spill file (`spill`), next to the
//! database unless `store.spill_file` says where: a record there survives a
//! crash and a restart, and costs no memory however long the fault lasts.
//! When the spill file cannot be written either (it is on the disk that is
//! full), in memory, up to `store.backlog_memory`; the lines in memory move
//! to the file as soon as it takes them again. Past that bound the writer
//! takes no more records, and capture tasks wait for room in its channel —
//! backpressure, which the clients do not see: a capture task runs after
//! its call's answer was sent. The order is kept throughout: the file holds
//! the older records, memory the newer, and both are committed front first.
//!
//! **In what form.** A line of JSON holding the record and its span as the
//! API returns them — the record contract, not the row's encoding, so a
//! spill file outlives a change of the storage layout and `jq` reads it.
//! The writer holds encoded rows, and the one exact inverse of the row
//! encoding is the store's own read path; so a row is turned back into its
//! record by inserting it into a scratch in-memory store and reading it out
//! ([`Scratch`]), rather than by a second decoder that would have to be kept
//! in step with the first.

use crate::record::{Span, TraceRecord};
use crate::store::error::{StoreError, StoreResult};
use crate::store::health::BacklogStatus;
use crate::store::raw::References;
use crate::store::row::EncodedRow;
use crate::store::session_log::SessionLog;
use crate::store::spill::SpillFile;
use crate::store::{commit, migrate, traces};
use rusqlite::Connection;
use serde::Deserialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// The records waiting to be committed, oldest first.
#[derive(Debug)]
pub(crate) struct Backlog {
    spill: SpillFile,
    /// Lines the spill file refused, newer than every line in it.
    memory: VecDeque<String>,
    memory_bytes: usize,
    memory_limit: usize,
    /// How many records were handed over when, oldest first (file, then
    /// memory): the age of the oldest is the front's.
    ages: VecDeque<(u64, SystemTime)>,
}

/// Lines from the front of the backlog, to commit and then consume.
#[derive(Debug)]
pub(crate) struct Front {
    /// The lines, oldest first.
    pub lines: Vec<String>,
    /// In the spill file up to this offset; `None` when they are in memory.
    spill_end: Option<u64>,
}

impl Backlog {
    /// The backlog a previous run left in the spill file at `path` (none if
    /// there is no file), holding at most `memory_limit` bytes in memory.
    pub fn open(path: PathBuf, memory_limit: usize) -> StoreResult<Backlog> {
        let spill = SpillFile::open(path.clone()).map_err(|source| StoreError::Io {
            context: format!("cannot read the spill file {}", path.display()),
            source,
        })?;
        let mut backlog = Backlog {
            spill,
            memory: VecDeque::new(),
            memory_bytes: 0,
            memory_limit,
            ages: VecDeque::new(),
        };
        if backlog.spill.lines() > 0 {
            let since = backlog.first_handed_over().unwrap_or_else(SystemTime::now);
            backlog.ages.push_back((backlog.spill.lines(), since));
        }
        Ok(backlog)
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records waiting.
    pub fn len(&self) -> u64 {
        self.spill.lines() + self.memory.len() as u64
    }

    /// Whether memory is at its bound: no more records should be taken.
    pub fn is_full(&self) -> bool {
        !self.memory.is_empty() && self.memory_bytes >= self.memory_limit
    }

    /// Adds `lines`, handed over at `at`, behind every record waiting: to the
    /// spill file, or to memory if it refuses them or memory holds lines
    /// already (which must stay in front of them).
    pub fn push(&mut self, lines: Vec<String>, at: SystemTime) {
        if lines.is_empty() {
            return;
        }
        self.ages.push_back((lines.len() as u64, at));
        if self.memory.is_empty() {
            match self.spill.append(&lines) {
                Ok(()) => return,
                Err(e) => tracing::warn!(
                    spill = %self.spill.path().display(),
                    "cannot spill {} records, keeping them in memory: {e}", lines.len()
                ),
            }
        }
        self.memory_bytes += lines.iter().map(String::len).sum::<usize>();
        self.memory.extend(lines);
    }

    /// Moves the lines held in memory to the spill file, if it takes them.
    pub fn spill_memory(&mut self) -> std::io::Result<()> {
        if self.memory.is_empty() {
            return Ok(());
        }
        self.spill.append(self.memory.make_contiguous())?;
        self.memory.clear();
        self.memory_bytes = 0;
        Ok(())
    }

    /// Syncs the spill file (at shutdown).
    pub fn sync(&self) -> std::io::Result<()> {
        self.spill.sync()
    }

    /// The spill file's path.
    pub fn spill_path(&self) -> PathBuf {
        self.spill.path().to_path_buf()
    }

    /// Up to `count` lines from the front (from the spill file while it has
    /// lines, else from memory).
    pub fn front(&self, count: usize) -> std::io::Result<Front> {
        if self.spill.lines() > 0 {
            let (lines, end) = self.spill.peek(count)?;
            return Ok(Front {
                lines,
                spill_end: Some(end),
            });
        }
        Ok(Front {
            lines: self.memory.iter().take(count).cloned().collect(),
            spill_end: None,
        })
    }

    /// Drops `front` from the backlog: its records are committed.
    pub fn consume(&mut self, front: &Front) {
        let count = front.lines.len();
        match front.spill_end {
            Some(end) => self.spill.consume(count as u64, end),
            None => {
                for line in self.memory.drain(..count.min(self.memory.len())) {
                    self.memory_bytes -= line.len();
                }
            }
        }
        let mut left = count as u64;
        while left > 0 {
            let Some((n, _)) = self.ages.front_mut() else {
                break;
            };
            let taken = left.min(*n);
            (*n, left) = (*n - taken, left - taken);
            if *n == 0 {
                self.ages.pop_front();
            }
        }
    }

    /// The backlog for `/health`, and when its oldest record was handed over.
    pub fn status(&self) -> (BacklogStatus, Option<SystemTime>) {
        let status = BacklogStatus {
            records: self.len(),
            spilled: self.spill.lines(),
            in_memory: self.memory.len() as u64,
            memory_bytes: self.memory_bytes as u64,
            oldest_seconds: None,
            backpressure: self.is_full(),
            spill_file: self.spill_path(),
        };
        (status, self.ages.front().map(|(_, at)| *at))
    }

    /// When the first record of the spill file was handed over: its call's
    /// end, as the record says.
    fn first_handed_over(&self) -> Option<SystemTime> {
        let (lines, _) = self.spill.peek(1).ok()?;
        let record = decode(lines.first()?).ok()?.0;
        humantime::parse_rfc3339_weak(&record.ended_at).ok()
    }
}

/// A spill line as it is read back.
#[derive(Deserialize)]
struct Line {
    record: TraceRecord,
    span: Option<Span>,
}

/// The line of a record and its span (the span's JSON as the row holds it).
fn line(record: &TraceRecord, span: Option<&str>) -> StoreResult<String> {
    let record = serde_json::to_string(record).map_err(|e| StoreError::Encode {
        what: "the record for the spill file",
        source: e.into(),
    })?;
    Ok(format!(
        r#"{{"record":{record},"span":{}}}"#,
        span.unwrap_or("null")
    ))
}

/// A spill line's record and span.
pub(crate) fn decode(line: &str) -> StoreResult<(TraceRecord, Option<Span>)> {
    let line: Line = serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
        what: "spill line",
        source: e.into(),
    })?;
    Ok((line.record, line.span))
}

/// Turns encoded rows back into spill lines through a scratch in-memory
/// store: the row is inserted as the writer would insert it, read back as
/// the API would read it, and the transaction rolled back. The scratch
/// store has its own memory of calls and its own raw references: a row
/// compressed against one of the gateway's is compressed again without it.
#[derive(Default)]
pub(crate) struct Scratch {
    store: Option<(Connection, SessionLog)>,
}

impl Scratch {
    /// The spill line of `row`.
    pub fn line(&mut self, row: &EncodedRow) -> StoreResult<String> {
        let (conn, log) = match &mut self.store {
            Some(store) => store,
            None => self.store.insert(scratch_store()?),
        };
        let tx = conn.transaction()?;
        log.check_epoch(&tx)?;
        let read = commit::insert(&tx, log, row).and_then(|_| {
            let trace_id = &row.record().trace_id;
            traces::trace(&tx, trace_id)?.ok_or_else(|| StoreError::Io {
                context: format!("record {trace_id} vanished from the scratch store"),
                source: std::io::ErrorKind::NotFound.into(),
            })
        });
        // Dropping the transaction rolls it back: the scratch store stays
        // empty, and its memory of calls must forget what it placed.
        drop(tx);
        log.clear();
        line(&read?, row.span())
    }
}

fn scratch_store() -> StoreResult<(Connection, SessionLog)> {
    let mut conn = Connection::open_in_memory()?;
    migrate::apply(&mut conn)?;
    Ok((conn, SessionLog::new(Arc::new(References::default()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(id: &str) -> TraceRecord {
        TraceRecord {
            trace_id: id.into(),
            raw_request: Some(serde_json::json!({"messages": [{"role": "user", "content": id}]})),
            prompt_token_ids: vec![1, 2, 3],
            ended_at: "2026-01-02T03:04:05Z".into(),
            ..TraceRecord::default()
        }
    }

    #[test]
    fn a_row_comes_back_as_the_record_it_was() {
        let original = record("t1");
        let row = EncodedRow::encode(original.clone(), None, None).unwrap();
        let line = Scratch::default().line(&row).unwrap();
        let (back, span) = decode(&line).unwrap();
        assert_eq!(back, original);
        assert_eq!(span, None);
    }

    #[test]
    fn a_row_compressed_against_a_reference_the_scratch_lacks_comes_back_whole() {
        let mut original = record("t2");
        original.identity.session_id = Some("s".into());
        original.model = Some("m".into());
        original.raw_response =
            Some(serde_json::json!({"choices": [{"message": {"content": "hi"}}]}));
        original.response_message = serde_json::json!({"role": "assistant", "content": "hi"})
            .as_object()
            .unwrap()
            .clone();
        original.messages = vec![serde_json::json!({"role": "user", "content": "t2"})];
        // The gateway's references hold one for this kind of call (id 7 in
        // its database); the scratch store has none.
        let references = References::default();
        let lines: Arc<[u8]> = Arc::from(&b"request\nresponse\n"[..]);
        references.publish(crate::store::raw::kind_of(&original), 7, lines);
        let row = EncodedRow::encode(original.clone(), None, Some(&references)).unwrap();
        let mut scratch = Scratch::default();
        for _ in 0..2 {
            let (back, _) = decode(&scratch.line(&row).unwrap()).unwrap();
            assert_eq!(back, original);
        }
    }

    #[test]
    fn the_file_is_the_front_and_memory_keeps_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut backlog = Backlog::open(dir.path().join("spill.jsonl"), 1 << 20).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        backlog.push(vec!["a".into(), "b".into()], at);
        // Memory that already holds lines takes the next ones too.
        backlog.memory.push_back("c".into());
        backlog.memory_bytes += 1;
        backlog.push(vec!["d".into()], at + Duration::from_secs(1));
        let (status, oldest) = backlog.status();
        assert_eq!(
            (status.records, status.spilled, status.in_memory),
            (4, 2, 2)
        );
        assert_eq!(oldest, Some(at));
        let front = backlog.front(10).unwrap();
        assert_eq!(front.lines, ["a", "b"]);
        backlog.consume(&front);
        let front = backlog.front(10).unwrap();
        assert_eq!(front.lines, ["c", "d"]);
        backlog.consume(&front);
        assert!(backlog.is_empty());
        assert_eq!(backlog.status().1, None);
    }

    #[test]
    fn memory_lines_move_to_the_file_when_it_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.jsonl");
        let mut backlog = Backlog::open(path.clone(), 2).unwrap();
        backlog.memory.extend(["xy".to_string()]);
        backlog.memory_bytes = 2;
        assert!(backlog.is_full());
        backlog.spill_memory().unwrap();
        assert!(!backlog.is_full());
        assert_eq!(std::fs::read_to_string(path).unwrap(), "xy\n");
    }

    #[test]
    fn a_spill_file_left_behind_is_the_backlog_of_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.jsonl");
        let text = line(&record("t1"), None).unwrap();
        std::fs::write(&path, format!("{text}\n")).unwrap();
        let backlog = Backlog::open(path, 1 << 20).unwrap();
        assert_eq!(backlog.len(), 1);
        let expected = humantime::parse_rfc3339_weak("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(backlog.status().1, Some(expected));
    }
}
