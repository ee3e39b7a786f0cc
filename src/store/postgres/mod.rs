//! The PostgreSQL backend: the same store, in a database several gateway
//! replicas share.
//!
//! `db = "postgres://user:pass@host/db"` selects it (a path selects SQLite,
//! the default). The layout is `schema/postgres/`; the seam is the same
//! handles as SQLite's (`Store`, `StoreWriter`, `StoreReader`, `Reader`),
//! so the API, the UI, the CLI and export do not know which backend
//! answers them.
//!
//! * `connect` opens connections (blocking: the store's threads are
//!   blocking by design), tagged with the replica's instance id;
//!   `migrate` brings the database to `schema/postgres/`, under an
//!   advisory lock so replicas starting together migrate once;
//! * `record` is a record's blob, `row` its row (scalar columns, the blob,
//!   the session's and run's counters), `commit` the writer thread and
//!   `spill` what it keeps across a restart while the database is down;
//! * `read` answers the reader's questions.
//!
//! * `feedback` and `harness` are those tables (the rules are SQLite's
//!   modules'; the SQL is numbered).

pub(crate) mod commit;
pub(crate) mod connect;
pub(crate) mod feedback;
pub(crate) mod harness;
pub(crate) mod migrate;
pub(crate) mod prune;
pub(crate) mod read;
pub(crate) mod record;
pub(crate) mod row;
pub(crate) mod spill;

use crate::config::StoreOptions;
use crate::metrics::Metrics;
use crate::store::database::PostgresUrl;
use crate::store::error::StoreResult;
use crate::store::health::Condition;
use crate::store::writer::{Encoding, StoreWriter};
use crate::store::{Store, StoreReader, spawn_writer_thread};
use connect::Server;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// The spill file when `store.spill_file` is not set.
const DEFAULT_SPILL_FILE: &str = "tracegate-postgres-spill.jsonl";

/// Opens the store in the PostgreSQL database `url` (migrating it as
/// needed) for the replica `instance`, and starts its writer thread, which
/// first commits what a previous run left in the spill file.
pub(crate) fn open(
    url: &PostgresUrl,
    options: StoreOptions,
    metrics: Arc<Metrics>,
    instance: &str,
) -> StoreResult<Store> {
    let server = Server::parse(url.url(), url.shown().to_string())?;
    // The blocking client runs a runtime of its own: never on the caller's
    // (async) thread.
    let opened = std::thread::scope(|s| {
        s.spawn(|| -> StoreResult<_> {
            let mut client = server.connect(instance)?;
            let applied = migrate::apply(&mut client)?;
            if !applied.is_empty() {
                tracing::info!(?applied, db = %url.shown(), "applied schema migrations");
            }
            Ok(client)
        })
        .join()
    });
    let client = opened.map_err(|_| crate::store::StoreError::WriterPanicked)??;
    let spill = options
        .spill_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPILL_FILE));
    let held = spill::read(&spill)?;
    let condition = Arc::new(Condition::new(spill.clone()));
    let (tx, rx) = mpsc::channel(options.queue_capacity);
    let spans_committed = Arc::new(Notify::new());
    let start = commit::Start {
        server: server.clone(),
        instance: instance.to_string(),
        client,
        held,
        spill,
        condition: condition.clone(),
        spans_committed: spans_committed.clone(),
        metrics,
        batch_max: options.batch_max,
        backlog_memory: options.backlog_memory,
    };
    let thread = spawn_writer_thread(move |runtime| commit::run(start, rx, runtime))?;
    Ok(Store {
        writer: StoreWriter::new(tx, condition, options.flush_timeout, Encoding::Postgres),
        reader: StoreReader::postgres(server, instance.to_string()),
        spans_committed,
        thread,
    })
}
