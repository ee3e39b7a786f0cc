//! Schema migrations on PostgreSQL: the numbered files of
//! `schema/postgres/`, forward only, like SQLite's.
//!
//! Several replicas may start at once against one empty database: the
//! migrations run under a transaction-level advisory lock, so one replica
//! applies them and the others, once it is done, find nothing left to do.

use crate::store::error::{StoreError, StoreResult};
use postgres::Client;

/// One migration: its version, its file under `schema/postgres/`, its SQL.
pub(crate) struct Migration {
    /// The number the file name starts with.
    pub version: i64,
    /// The file name.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

/// Every migration, in order (a test checks it against the directory).
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "0001_initial.sql",
    sql: include_str!("../../../schema/postgres/0001_initial.sql"),
}];

/// The advisory lock key migrations hold (any fixed number: "tracegat").
const MIGRATION_LOCK: i64 = 0x7472_6163_6567_6174;

/// Applies every migration the database has not seen, under the migration
/// lock. Returns the versions applied.
pub(crate) fn apply(client: &mut Client) -> StoreResult<Vec<i64>> {
    let failed = |what: &str| StoreError::postgres(format!("cannot migrate the database: {what}"));
    let mut tx = client.transaction().map_err(failed("begin"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed("lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .map_err(failed("schema_migrations"))?;
    let found = found(&mut tx)?;
    let known = known();
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql)
            .map_err(failed(migration.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .map_err(failed(migration.name))?;
        applied.push(migration.version);
    }
    tx.commit().map_err(failed("commit"))?;
    Ok(applied)
}

/// Refuses a database not migrated to this binary's schema (the commands
/// read without migrating).
pub(crate) fn require_current(client: &mut Client, shown: &str) -> StoreResult<()> {
    let found = found(client)?;
    let known = known();
    match found.cmp(&known) {
        std::cmp::Ordering::Less => Err(StoreError::OlderSchema {
            path: shown.into(),
            found,
            known,
        }),
        std::cmp::Ordering::Greater => Err(StoreError::NewerSchema { found, known }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// The newest migration this binary knows.
fn known() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The newest migration the database has (0: none, or not a store yet).
fn found(client: &mut impl postgres::GenericClient) -> StoreResult<i64> {
    let failed = || StoreError::postgres("cannot read schema_migrations");
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(failed())?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(failed())?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_match_the_schema_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/postgres");
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
        }
    }
}
