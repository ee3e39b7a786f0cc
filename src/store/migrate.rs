//! Schema migrations: numbered SQL files from `schema/`, applied forward only.
//!
//! Each migration runs once, in its own transaction, and is recorded in the
//! `schema_migrations` table with the time it was applied. There is no "down":
//! a database is only ever moved forward, and no migration may drop user data.
//! A database written by a newer tracegate (one with migrations this binary
//! does not know) is refused rather than misread.
//!
//! A migration whose data SQL alone cannot move has a Rust step too, run in
//! the same transaction after its SQL: version 3 re-stores every version-1
//! row (read by `legacy`) in the session-linear layout, keeping its id, so
//! every record reads back exactly as before and shares what its session
//! shares.

use crate::store::error::{StoreError, StoreResult};
use crate::store::legacy;
use crate::store::row::EncodedRow;
use crate::store::session_log::SessionLog;
use rusqlite::{Connection, params};

/// One migration: its version number, its file name, its SQL, and the
/// data conversion that follows the SQL, if any.
pub struct Migration {
    /// The number the file name starts with.
    pub version: i64,
    /// The file name under `schema/`.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
    /// What it converts after its SQL, in the same transaction.
    pub convert: Option<fn(&Connection) -> StoreResult<()>>,
}

/// A migration from its file under `schema/` (the name is written once:
/// the SQL is that file's).
macro_rules! migration {
    ($version:literal, $file:literal, $convert:expr) => {
        Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("../../schema/", $file)),
            convert: $convert,
        }
    };
}

/// Every migration, in order. A test checks that this list and the `.sql`
/// files in `schema/` agree.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_initial.sql", None),
    migration!(2, "0002_spans.sql", None),
    migration!(3, "0003_session_storage.sql", Some(session_storage)),
    migration!(4, "0004_rllm.sql", None),
    migration!(5, "0005_cost.sql", None),
    migration!(6, "0006_feedback.sql", None),
    migration!(7, "0007_harness_spans.sql", None),
];

/// Applies every migration the database has not seen yet. Returns the
/// versions applied.
pub fn apply(conn: &mut Connection) -> StoreResult<Vec<i64>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )
    .map_err(StoreError::sqlite("cannot create schema_migrations"))?;

    let (found, known) = versions(conn)?;
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        run(conn, migration)?;
        applied.push(migration.version);
    }
    Ok(applied)
}

/// The schema version the database has, and the one this binary knows.
fn versions(conn: &Connection) -> StoreResult<(i64, i64)> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let found: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(StoreError::sqlite("cannot read schema_migrations"))?;
    Ok((found, known))
}

/// Refuses a store the gateway has not migrated to this binary's schema
/// yet (the commands open files without changing their schema).
pub(crate) fn require_current(conn: &Connection, path: &std::path::Path) -> StoreResult<()> {
    let (found, known) = versions(conn)?;
    match found.cmp(&known) {
        std::cmp::Ordering::Less => Err(StoreError::OlderSchema {
            path: path.to_path_buf(),
            found,
            known,
        }),
        std::cmp::Ordering::Greater => Err(StoreError::NewerSchema { found, known }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Runs one migration and records it, in one transaction.
fn run(conn: &mut Connection, migration: &Migration) -> StoreResult<()> {
    let failed = || StoreError::sqlite(format!("migration {} failed", migration.name));
    let tx = conn.transaction().map_err(failed())?;
    tx.execute_batch(migration.sql).map_err(failed())?;
    if let Some(convert) = migration.convert {
        convert(&tx)?;
    }
    tx.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
        params![
            migration.version,
            migration.name,
            crate::record::rfc3339(std::time::SystemTime::now())
        ],
    )
    .map_err(failed())?;
    tx.commit().map_err(failed())
}

/// Version 3's conversion: every row of the version-1 table `traces_v2`,
/// in id order, decoded and stored again with the same id (its session's
/// calls sharing their content as new calls do), then the old table goes.
/// Sessions, runs and spans are untouched: their counters and trace ids
/// stay true.
fn session_storage(conn: &Connection) -> StoreResult<()> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM traces_v2 ORDER BY rowid",
        legacy::COLUMNS
    ))?;
    let mut rows = stmt.query([])?;
    let mut log = SessionLog::new(Default::default());
    let mut converted = 0u64;
    while let Some(row) = rows.next()? {
        let (id, record) = legacy::decode(row)?;
        let encoded = EncodedRow::encode(record, None, None)?;
        let (placed, pending) = log.place(conn, encoded.content())?;
        encoded
            .insert_converted(conn, &placed, id)
            .map_err(StoreError::sqlite("cannot convert a trace"))?;
        log.remember(pending);
        converted += 1;
        if converted.is_multiple_of(10_000) {
            tracing::info!(converted, "converting traces to the session-linear layout");
        }
    }
    drop(rows);
    drop(stmt);
    conn.execute_batch("DROP TABLE traces_v2")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_match_the_schema_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schema");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| m.name.to_string()).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "versions are consecutive from 1");
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }

    #[test]
    fn migrations_apply_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&mut conn).unwrap().len(), MIGRATIONS.len());
        assert!(apply(&mut conn).unwrap().is_empty());
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations VALUES (999, 'future.sql', 'x')",
            [],
        )
        .unwrap();
        assert!(apply(&mut conn).unwrap_err().to_string().contains("newer"));
    }
}
