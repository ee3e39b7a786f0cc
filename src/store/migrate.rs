//! Schema migrations: numbered SQL files from `schema/`, applied forward only.
//!
//! Each migration runs once, in its own transaction, and is recorded in the
//! `schema_migrations` table with the time it was applied. There is no "down":
//! a database is only ever moved forward, and no migration may drop user data.
//! A database written by a newer tracegate (one with migrations this binary
//! does not know) is refused rather than misread.

use crate::store::error::{StoreError, StoreResult};
use rusqlite::{Connection, params};

/// One migration: its version number, its file name, and its SQL.
pub struct Migration {
    /// The number the file name starts with.
    pub version: i64,
    /// The file name under `schema/`.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

/// Every migration, in order. A test checks that this list and the `.sql`
/// files in `schema/` agree.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial.sql",
        sql: include_str!("../../schema/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "0002_spans.sql",
        sql: include_str!("../../schema/0002_spans.sql"),
    },
    // Version 3 is the session-storage layout (another branch); this one
    // depends on none of its tables.
    Migration {
        version: 4,
        name: "0004_rllm.sql",
        sql: include_str!("../../schema/0004_rllm.sql"),
    },
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

    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let found: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(StoreError::sqlite("cannot read schema_migrations"))?;
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        run(conn, migration).map_err(StoreError::sqlite(format!(
            "migration {} failed",
            migration.name
        )))?;
        applied.push(migration.version);
    }
    Ok(applied)
}

/// Runs one migration and records it, in one transaction.
fn run(conn: &mut Connection, migration: &Migration) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(migration.sql)?;
    tx.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
        params![
            migration.version,
            migration.name,
            crate::record::rfc3339(std::time::SystemTime::now())
        ],
    )?;
    tx.commit()
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
        // Versions increase from 1; 3 (session storage) lands from another
        // branch, so until it does the list skips it.
        let mut previous = 0;
        for m in MIGRATIONS {
            assert!(m.version > previous, "versions increase");
            assert!(m.version == previous + 1 || m.version == 4, "no gap but 3");
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            previous = m.version;
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
