//! The shared content tables: message nodes, token runs, tool lists, raw
//! references, and the per-choice `completions` rows — written with their reference counts,
//! read back as whole paths, and swept when nothing points at them.
//!
//! A message node is one message after a given prefix; a call's messages
//! are the path from the root to its last node. A token run is a run of
//! token ids after a given prefix; a call's prompt is the concatenation of
//! the runs on the path to its last run, and each choice's completion is
//! one run whose parent is that prompt run. Calls sharing a prefix share
//! its rows, so a session stores each message and each token id once.
//!
//! Each shared row counts what points at it (`refs`): calls, completions
//! and child rows. Rows are written with their count; the schema's triggers
//! decrement it when a call, completion or child row is deleted, however it
//! is deleted; [`sweep`] then removes the rows left at zero, which frees
//! their parents in turn. Each sweep advances `gc_epoch`, so a writer that
//! remembers row ids knows they may have been reused.
//!
//! [`ContentReader`] reads paths for one read operation and remembers the
//! ones it has read: a session read in order then costs one or two row
//! reads per call, not one per message since the start.

use crate::store::codec::{self, CodecError};
use crate::store::error::{StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, named_params};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A table of shared rows that count their references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Shared {
    /// `message_nodes`.
    MessageNodes,
    /// `token_runs`.
    TokenRuns,
    /// `tool_lists`.
    ToolLists,
    /// `raw_references`.
    RawReferences,
}

impl Shared {
    /// Every shared table, in sweep order (none points into a later one).
    /// Every one is swept: a table left out here would keep the rows its
    /// last user's deletion left at zero.
    pub(crate) const ALL: [Shared; 4] = [
        Shared::MessageNodes,
        Shared::TokenRuns,
        Shared::ToolLists,
        Shared::RawReferences,
    ];

    /// The table's name.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Shared::MessageNodes => "message_nodes",
            Shared::TokenRuns => "token_runs",
            Shared::ToolLists => "tool_lists",
            Shared::RawReferences => "raw_references",
        }
    }
}

/// A call's messages: each node's id and message JSON, from the first.
pub(crate) type MessagePath = Arc<Vec<(i64, Arc<str>)>>;

/// A token sequence: each run's id and ids, from the first.
pub(crate) type TokenPath = Arc<Vec<(i64, Arc<[u32]>)>>;

/// Adds `n` references to an existing shared row; false when there is no
/// such row.
pub(crate) fn acquire(conn: &Connection, table: Shared, id: i64, n: i64) -> rusqlite::Result<bool> {
    let sql = match table {
        Shared::MessageNodes => "UPDATE message_nodes SET refs = refs + ?2 WHERE id = ?1",
        Shared::TokenRuns => "UPDATE token_runs SET refs = refs + ?2 WHERE id = ?1",
        Shared::ToolLists => "UPDATE tool_lists SET refs = refs + ?2 WHERE id = ?1",
        Shared::RawReferences => "UPDATE raw_references SET refs = refs + ?2 WHERE id = ?1",
    };
    Ok(conn.prepare_cached(sql)?.execute([id, n])? == 1)
}

/// Inserts a raw reference (its blob as `raw::reference_blob` makes it);
/// returns its id.
pub(crate) fn insert_reference(conn: &Connection, refs: i64, blob: &[u8]) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO raw_references (refs, raw) VALUES (?1, ?2)")?
        .execute(rusqlite::params![refs, blob])?;
    Ok(conn.last_insert_rowid())
}

/// Inserts a message node; returns its id.
pub(crate) fn insert_message(
    conn: &Connection,
    parent: Option<i64>,
    position: usize,
    refs: i64,
    message: &str,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO message_nodes (parent_id, position, refs, message)
         VALUES (:parent, :position, :refs, :message)",
    )?
    .execute(named_params! {":parent": parent, ":position": position as i64, ":refs": refs, ":message": message})?;
    Ok(conn.last_insert_rowid())
}

/// Inserts a token run; returns its id.
pub(crate) fn insert_run(
    conn: &Connection,
    parent: Option<i64>,
    start: usize,
    refs: i64,
    ids: &[u32],
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO token_runs (parent_id, start, refs, token_ids)
         VALUES (:parent, :start, :refs, :ids)",
    )?
    .execute(named_params! {":parent": parent, ":start": start as i64, ":refs": refs, ":ids": codec::pack_u32(ids)})?;
    Ok(conn.last_insert_rowid())
}

/// Inserts a tool list; returns its id.
pub(crate) fn insert_tools(conn: &Connection, refs: i64, tools: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO tool_lists (refs, tools) VALUES (?1, ?2)")?
        .execute(rusqlite::params![refs, tools])?;
    Ok(conn.last_insert_rowid())
}

/// One `completions` row as written.
pub(crate) struct CompletionRow<'a> {
    /// The choice's position.
    pub choice: usize,
    /// The run of its token ids.
    pub run: Option<i64>,
    /// Packed logprobs.
    pub logprobs: Option<&'a [u8]>,
    /// Compressed top logprobs.
    pub top_logprobs: Option<&'a [u8]>,
}

/// Inserts the `completions` row of one choice of call `trace`.
pub(crate) fn insert_completion(
    conn: &Connection,
    trace: i64,
    row: &CompletionRow<'_>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO completions (trace, choice, token_run, logprobs, top_logprobs)
         VALUES (:trace, :choice, :run, :logprobs, :top)",
    )?
    .execute(named_params! {
        ":trace": trace, ":choice": row.choice as i64, ":run": row.run,
        ":logprobs": row.logprobs, ":top": row.top_logprobs,
    })?;
    Ok(())
}

/// The ids of the shared rows a sweep deleted, per table.
#[derive(Debug, Default)]
pub(crate) struct Swept(HashMap<Shared, HashSet<i64>>);

impl Swept {
    /// How many rows of `table` went.
    pub(crate) fn count(&self, table: Shared) -> usize {
        self.0.get(&table).map_or(0, HashSet::len)
    }

    /// Whether the row `id` of `table` went.
    pub(crate) fn contains(&self, table: Shared, id: i64) -> bool {
        self.0.get(&table).is_some_and(|ids| ids.contains(&id))
    }

    /// Whether nothing went.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.values().all(HashSet::is_empty)
    }

    fn add(&mut self, other: Swept) {
        for (table, ids) in other.0 {
            self.0.entry(table).or_default().extend(ids);
        }
    }
}

/// Deletes every shared row nothing points at any more, freeing their
/// parents in turn, until none is left; returns what went. Runs in the
/// caller's transaction.
pub(crate) fn sweep(conn: &Connection) -> StoreResult<Swept> {
    let mut total = Swept::default();
    loop {
        let round = sweep_round(conn)?;
        if round.is_empty() {
            return Ok(total);
        }
        total.add(round);
    }
}

/// Rows one sweep round deletes per table, so a round is short.
const SWEEP_CHUNK: usize = 1000;

/// Deletes up to [`SWEEP_CHUNK`] unreferenced rows per table, and advances
/// `gc_epoch` if it deleted any (in the same transaction, so a writer never
/// sees a reused id without a new epoch).
pub(crate) fn sweep_round(conn: &Connection) -> StoreResult<Swept> {
    let mut swept = Swept::default();
    for table in Shared::ALL {
        let name = table.table();
        let sql = format!(
            "DELETE FROM {name} WHERE id IN \
             (SELECT id FROM {name} WHERE refs <= 0 LIMIT {SWEEP_CHUNK}) RETURNING id"
        );
        let failed = StoreError::sqlite(format!("sweeping {name}"));
        let ids = (|| -> rusqlite::Result<HashSet<i64>> {
            let mut stmt = conn.prepare_cached(&sql)?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })()
        .map_err(failed)?;
        if !ids.is_empty() {
            swept.0.insert(table, ids);
        }
    }
    if !swept.is_empty() {
        conn.execute(
            "UPDATE store_state SET value = value + 1 WHERE key = 'gc_epoch'",
            [],
        )?;
    }
    Ok(swept)
}

/// The store's `gc_epoch`: it changes whenever shared rows were swept.
pub(crate) fn gc_epoch(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM store_state WHERE key = 'gc_epoch'")?
        .query_row([], |r| r.get(0))
}

/// Paths and rows read so far in one read operation.
#[derive(Default)]
pub(crate) struct ContentReader {
    messages: HashMap<i64, MessagePath>,
    tokens: HashMap<i64, TokenPath>,
    tools: HashMap<i64, Arc<str>>,
    references: HashMap<i64, Arc<[u8]>>,
}

/// How many paths a reader remembers before it starts over.
const REMEMBERED: usize = 4096;

impl ContentReader {
    /// The messages up to and including node `id`.
    pub(crate) fn messages(&mut self, conn: &Connection, id: i64) -> StoreResult<MessagePath> {
        let sql = "SELECT parent_id, message FROM message_nodes WHERE id = ?1";
        path_to(
            &mut self.messages,
            conn,
            sql,
            "message node",
            id,
            |m: String| Ok(m.into()),
        )
    }

    /// The token ids of the runs up to and including run `id`.
    pub(crate) fn tokens(&mut self, conn: &Connection, id: i64) -> StoreResult<TokenPath> {
        let sql = "SELECT parent_id, token_ids FROM token_runs WHERE id = ?1";
        path_to(
            &mut self.tokens,
            conn,
            sql,
            "token run",
            id,
            |ids: Vec<u8>| {
                let ids = codec::unpack_u32(&ids).map_err(|e| corrupt("token_runs", e))?;
                Ok(ids.into())
            },
        )
    }

    /// The tool list `id`.
    pub(crate) fn tools(&mut self, conn: &Connection, id: i64) -> StoreResult<Arc<str>> {
        if let Some(tools) = self.tools.get(&id) {
            return Ok(tools.clone());
        }
        let tools: Arc<str> = conn
            .prepare_cached("SELECT tools FROM tool_lists WHERE id = ?1")?
            .query_row([id], |r| r.get::<_, String>(0))
            .optional()?
            .ok_or_else(|| dangling("tool list"))?
            .into();
        remember(&mut self.tools, id, tools.clone());
        Ok(tools)
    }
}

impl ContentReader {
    /// The raw reference `id`: the raw lines it holds.
    pub(crate) fn reference(&mut self, conn: &Connection, id: i64) -> StoreResult<Arc<[u8]>> {
        if let Some(raw) = self.references.get(&id) {
            return Ok(raw.clone());
        }
        let blob: Vec<u8> = conn
            .prepare_cached("SELECT raw FROM raw_references WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| dangling("raw reference"))?;
        let raw: Arc<[u8]> = crate::store::raw::reference_lines(&blob)
            .map_err(|e| corrupt("raw_references", e))?
            .into();
        remember(&mut self.references, id, raw.clone());
        Ok(raw)
    }
}

/// The rows from the root to row `id` of a table whose rows name their
/// parent (a message node's messages, a token run's runs), each row's
/// payload made by `make`; the walk stops at the first row whose path
/// `cache` holds. `sql` reads a row's parent and payload; `what` a row is
/// names one that is missing.
fn path_to<P: rusqlite::types::FromSql, T: Clone>(
    cache: &mut HashMap<i64, Arc<Vec<(i64, T)>>>,
    conn: &Connection,
    sql: &str,
    what: &'static str,
    id: i64,
    make: impl Fn(P) -> StoreResult<T>,
) -> StoreResult<Arc<Vec<(i64, T)>>> {
    if let Some(path) = cache.get(&id) {
        return Ok(path.clone());
    }
    let mut stmt = conn.prepare_cached(sql)?;
    let mut chain: Vec<(i64, T)> = Vec::new();
    let mut next = Some(id);
    let mut base = None;
    while let Some(row) = next {
        if let Some(path) = cache.get(&row) {
            base = Some(path.clone());
            break;
        }
        let (parent, payload): (Option<i64>, P) = stmt
            .query_row([row], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or_else(|| dangling(what))?;
        chain.push((row, make(payload)?));
        next = parent;
    }
    let mut path = base.map(|b| b.as_ref().clone()).unwrap_or_default();
    path.extend(chain.into_iter().rev());
    let path = Arc::new(path);
    remember(cache, id, path.clone());
    Ok(path)
}

fn remember<T>(map: &mut HashMap<i64, T>, id: i64, value: T) {
    if map.len() >= REMEMBERED {
        map.clear();
    }
    map.insert(id, value);
}

/// The ids of a path, flattened.
pub(crate) fn flatten(path: &[(i64, Arc<[u32]>)]) -> Vec<u32> {
    let mut ids = Vec::with_capacity(path.iter().map(|(_, run)| run.len()).sum());
    for (_, run) in path {
        ids.extend_from_slice(run);
    }
    ids
}

/// One stored `completions` row, read back.
pub(crate) struct StoredCompletion {
    /// The choice's position.
    pub choice: usize,
    /// The run of its token ids.
    pub run: Option<i64>,
    /// Packed logprobs.
    pub logprobs: Option<Vec<u8>>,
    /// Compressed top logprobs.
    pub top_logprobs: Option<Vec<u8>>,
}

/// The `completions` rows of call `trace`, by choice.
pub(crate) fn completions(conn: &Connection, trace: i64) -> StoreResult<Vec<StoredCompletion>> {
    let mut stmt = conn.prepare_cached(
        "SELECT choice, token_run, logprobs, top_logprobs FROM completions
         WHERE trace = ?1 ORDER BY choice",
    )?;
    let rows = stmt.query_map([trace], |r| {
        Ok(StoredCompletion {
            choice: r.get::<_, i64>(0)?.try_into().unwrap_or(usize::MAX),
            run: r.get(1)?,
            logprobs: r.get(2)?,
            top_logprobs: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn dangling(what: &'static str) -> StoreError {
    corrupt("shared content", CodecError::Dangling(what))
}

fn corrupt(what: &'static str, source: CodecError) -> StoreError {
    StoreError::Corrupt { what, source }
}
