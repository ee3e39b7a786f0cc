//! Pruning on PostgreSQL: SQLite's rules (`store::prune`: the same tables,
//! predicates and recounts, in chunks), with two differences. A span may go
//! once a collector has it (`exported_at`, the shared outbox's mark, not
//! one exporter's cursor); and the space goes back through `VACUUM`, which
//! on PostgreSQL neither locks the tables nor shrinks the files (it makes
//! the space reusable: `VACUUM FULL` by hand returns it to the disk).

use super::connect::Server;
use crate::store::database::PostgresUrl;
use crate::store::error::{StoreError, StoreResult};
use crate::store::prune::{
    CHUNK_ROWS, COUNTED, DOOMED, PruneOptions, PruneReport, Reclaimed, TableRows, recount_sql,
};
use postgres::Client;
use postgres::types::ToSql;

/// Which spans are old, here: exported ones (all with `force`).
const OLD_SPANS: &str = "created_at < $1 AND ($2 OR exported_at IS NOT NULL)";

/// Opens the database `url` to prune it (read-only unless `writable`).
pub(crate) fn open(url: &PostgresUrl, writable: bool) -> StoreResult<Client> {
    let server = Server::parse(url.url(), url.shown().to_string())?;
    let mut client = server.connect("prune")?;
    super::migrate::require_current(&mut client, server.shown())?;
    if !writable {
        client
            .batch_execute("SET default_transaction_read_only = on")
            .map_err(StoreError::postgres("cannot open the database read-only"))?;
    }
    Ok(client)
}

/// The predicate of `table`'s old rows, in PostgreSQL's numbering
/// (`$1` the cutoff, `$2` force).
fn old_rows(table: &str, sqlite: &str) -> String {
    if table == "spans" {
        return OLD_SPANS.to_string();
    }
    sqlite.replace(":cutoff", "$1").replace(":force", "$2")
}

/// Deletes (or, with `dry_run`, counts) everything older than the cutoff
/// and recomputes the counters of what is kept.
pub(crate) fn prune(client: &mut Client, options: &PruneOptions) -> StoreResult<PruneReport> {
    let mut report = PruneReport {
        deleted: Vec::new(),
        recounted: Vec::new(),
    };
    for doomed in DOOMED {
        let old = old_rows(doomed.table, doomed.old);
        let rows = if options.dry_run {
            let sql = format!("SELECT COUNT(*) FROM {} WHERE {old}", doomed.table);
            count(client, &sql, options)?
        } else {
            delete_in_chunks(client, doomed.table, &old, options)?
        };
        report.deleted.push(TableRows {
            table: doomed.table,
            rows,
        });
    }
    for (table, key) in COUNTED {
        let rows = if options.dry_run {
            let old = DOOMED
                .iter()
                .find(|d| d.table == *table)
                .map_or("false".to_string(), |d| old_rows(d.table, d.old));
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE first_seen < $1 AND NOT ({old})");
            count(client, &sql, options)?
        } else {
            let sql = recount_sql(table, key).replace(":cutoff", "$1");
            client
                .execute(&sql, &[&options.cutoff])
                .map_err(failed(table))?
        };
        report.recounted.push(TableRows { table, rows });
    }
    Ok(report)
}

/// The parameters a statement uses: `$1` the cutoff, and `$2` force when
/// it names it.
fn params<'a>(sql: &str, options: &'a PruneOptions) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&options.cutoff];
    if sql.contains("$2") {
        params.push(&options.force);
    }
    params
}

/// Runs a `SELECT COUNT(*)` with the prune parameters.
fn count(client: &mut Client, sql: &str, options: &PruneOptions) -> StoreResult<u64> {
    let row = client
        .query_one(sql, &params(sql, options))
        .map_err(failed("counting"))?;
    Ok(row.get::<_, i64>(0).unsigned_abs())
}

/// Deletes the old rows of one table, [`CHUNK_ROWS`] per transaction.
fn delete_in_chunks(
    client: &mut Client,
    table: &'static str,
    old: &str,
    options: &PruneOptions,
) -> StoreResult<u64> {
    let sql = format!(
        "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {old} LIMIT {CHUNK_ROWS})"
    );
    let mut total = 0u64;
    loop {
        let deleted = client
            .execute(&sql, &params(&sql, options))
            .map_err(failed(table))?;
        total += deleted;
        if deleted < CHUNK_ROWS as u64 {
            return Ok(total);
        }
    }
}

/// `VACUUM` (the space of deleted rows becomes reusable); the database's
/// size before and after.
pub(crate) fn vacuum(client: &mut Client) -> StoreResult<Reclaimed> {
    let size = |client: &mut Client| -> StoreResult<u64> {
        let row = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .map_err(failed("the database size"))?;
        Ok(row.get::<_, i64>(0).unsigned_abs())
    };
    let before = size(client)?;
    client
        .batch_execute("VACUUM")
        .map_err(StoreError::postgres("VACUUM failed"))?;
    Ok(Reclaimed {
        before,
        after: size(client)?,
        log_truncated: true,
    })
}

/// An error of the prune step on `what`.
fn failed(what: &str) -> impl Fn(postgres::Error) -> StoreError {
    StoreError::postgres(format!("pruning {what}"))
}
