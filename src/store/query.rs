//! The one query builder: what a caller asks for, as plain filters, and the
//! place they become SQL.
//!
//! Each filter ([`TraceFilter`], [`SessionFilter`], [`RunFilter`],
//! [`CallFilter`]) says which rows to read; empty fields do not filter. A
//! [`Select`] turns the fields that are set — and only those — into `WHERE`
//! clauses with `?` arguments: `(?1 IS NULL OR run_id = ?1)` would read the
//! same but keep SQLite from using the index, which on a store of millions
//! of calls is the difference between a seek and a scan.
//!
//! Times are compared as the RFC 3339 text the columns hold ([`epoch_text`]),
//! which sorts like the instants it names.

use crate::protocol::Operation;
use crate::record::{Status, rfc3339};
use crate::store::error::StoreResult;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, params_from_iter};
use std::time::{Duration, UNIX_EPOCH};

/// Which traces to read. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    /// Only traces of these sessions.
    pub session_ids: Vec<String>,
    /// Only traces of this run.
    pub run_id: Option<String>,
    /// Only traces that started strictly after this time (epoch seconds).
    pub since: Option<f64>,
    /// Only traces that started strictly before this time (epoch seconds).
    pub until: Option<f64>,
    /// At most this many traces.
    pub limit: Option<usize>,
    /// Only traces that asked for this model (the requested `model`).
    pub model: Option<String>,
    /// Only traces of this harness.
    pub harness: Option<String>,
    /// Only traces made by this policy (weights) version.
    pub weight_version: Option<i64>,
    /// Only traces that did not end `ok`.
    pub errors_only: bool,
    /// Only traces that ended with this status.
    pub status: Option<Status>,
    /// Only traces after this one in the filter's order (a page's last):
    /// keyset pagination, stable while calls are inserted.
    pub after: Option<TraceKey>,
    /// Leave out the calls without a model (operation `other`: model
    /// lists, token counts, any path tracegate does not know).
    pub skip_other: bool,
    /// Newest first (and `limit` keeps the newest) instead of oldest first.
    pub newest_first: bool,
}

/// Where a trace sits in the listing order: its start time, ties broken by
/// its id. A page of traces ends at one; the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceKey {
    /// The trace's `started_at`, as stored (RFC 3339, microseconds).
    pub started_at: String,
    /// The trace's id.
    pub trace_id: String,
}

/// Which sessions to read, oldest first. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only sessions created strictly after this time (epoch seconds).
    pub since: Option<f64>,
    /// Only sessions of this run.
    pub run_id: Option<String>,
    /// Only sessions without a run.
    pub without_run: bool,
    /// Only sessions whose id or run id contains this text (case-insensitive).
    pub search: Option<String>,
    /// Only sessions with at least one call asking for this model.
    pub model: Option<String>,
    /// Only sessions with at least one call of this harness.
    pub harness: Option<String>,
    /// Only sessions with at least one call that did not end `ok`.
    pub errors_only: bool,
    /// Only sessions active after this time (epoch seconds): their last
    /// call, or their creation when they have none, is later.
    pub active_after: Option<f64>,
    /// Only sessions active before this time (epoch seconds): their first
    /// call, or their creation when they have none, is earlier.
    pub active_before: Option<f64>,
    /// Newest first (and `limit` keeps the newest) instead of oldest first.
    pub newest_first: bool,
    /// At most this many sessions (the oldest, or the newest).
    pub limit: Option<usize>,
}

/// Which runs to list, newest first. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs whose id contains this text (case-insensitive).
    pub search: Option<String>,
    /// Only runs with at least one call asking for this model.
    pub model: Option<String>,
    /// Only runs with at least one call of this harness.
    pub harness: Option<String>,
    /// Only runs with at least one call of this project.
    pub project: Option<String>,
    /// Only runs with at least one call of this experiment.
    pub experiment: Option<String>,
    /// Only runs with at least one call that did not end `ok`.
    pub errors_only: bool,
    /// Only runs with a call after this time (epoch seconds).
    pub since: Option<f64>,
    /// Only runs with a call before this time (epoch seconds).
    pub until: Option<f64>,
    /// At most this many runs (the newest).
    pub limit: Option<usize>,
}

/// Which calls to page through. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Only calls of this run.
    pub run_id: Option<String>,
    /// Only calls of this session.
    pub session_id: Option<String>,
    /// Only calls without a session.
    pub without_session: bool,
    /// Only calls that started strictly after this time (epoch seconds).
    pub since: Option<f64>,
    /// Only calls that started strictly before this time (epoch seconds).
    pub until: Option<f64>,
    /// Only calls committed after this cursor (a previous page's `cursor`);
    /// without it, the newest calls.
    pub after: Option<i64>,
    /// At most this many calls.
    pub limit: usize,
}

/// The SQL dialect a [`Select`] is written in: the two backends differ in
/// how arguments are numbered and in a few functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Dialect {
    /// SQLite: `?` arguments, `instr`, `+column` to steer the planner.
    #[default]
    Sqlite,
    /// PostgreSQL: `$1`, `$2`... arguments, `strpos`.
    Postgres,
}

impl Dialect {
    /// "`column` contains the argument, ignoring case".
    fn contains(self, column: &str) -> String {
        let function = match self {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
        };
        format!("{function}(lower({column}), lower(?)) > 0")
    }

    /// `column` of the outer query's alias `t`, as a value the planner
    /// must not use an index for (SQLite's unary `+`; PostgreSQL plans
    /// these itself).
    fn unindexed(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("+t.{column}"),
            Dialect::Postgres => format!("t.{column}"),
        }
    }
}

/// A `SELECT` being built: its columns and table, the conditions of the
/// filters that are set, an order and a limit.
#[derive(Debug, Clone)]
pub(crate) struct Select {
    dialect: Dialect,
    head: String,
    clauses: Vec<String>,
    args: Vec<SqlValue>,
    order: Option<&'static str>,
    limit: Option<usize>,
}

impl Select {
    /// `SELECT columns FROM table`, unrestricted.
    pub(crate) fn new(columns: &str, table: &str) -> Select {
        Select::new_in(Dialect::Sqlite, columns, table)
    }

    /// `SELECT columns FROM table` in `dialect`, unrestricted.
    pub(crate) fn new_in(dialect: Dialect, columns: &str, table: &str) -> Select {
        Select {
            dialect,
            head: format!("SELECT {columns} FROM {table}"),
            clauses: Vec::new(),
            args: Vec::new(),
            order: None,
            limit: None,
        }
    }

    /// Adds `clause` (with one `?`) when `value` is set.
    pub(crate) fn when(mut self, clause: &str, value: Option<impl Into<SqlValue>>) -> Select {
        if let Some(value) = value {
            self.clauses.push(clause.to_string());
            self.args.push(value.into());
        }
        self
    }

    /// Adds `clause` when `value` is set, every `?` of it bound to `value`.
    pub(crate) fn when_each(mut self, clause: &str, value: Option<impl Into<SqlValue>>) -> Select {
        if let Some(value) = value {
            let value = value.into();
            self.clauses.push(clause.to_string());
            for _ in clause.matches('?') {
                self.args.push(value.clone());
            }
        }
        self
    }

    /// Adds `clause` (without arguments) when `on`.
    pub(crate) fn when_on(mut self, clause: &str, on: bool) -> Select {
        if on {
            self.clauses.push(clause.to_string());
        }
        self
    }

    /// Adds "after `key` in the listing order" when `key` is set: before it
    /// when the order is newest first. The plain `started_at` bound lets
    /// SQLite seek its index; the pair breaks ties.
    pub(crate) fn when_key(mut self, key: Option<&TraceKey>, newest_first: bool) -> Select {
        if let Some(key) = key {
            let (bound, strict) = if newest_first {
                ("<=", "<")
            } else {
                (">=", ">")
            };
            self.clauses.push(format!(
                "started_at {bound} ? AND (started_at {strict} ? OR trace_id {strict} ?)"
            ));
            let (at, id) = (key.started_at.clone(), key.trace_id.clone());
            self.args.extend([at.clone(), at, id].map(SqlValue::Text));
        }
        self
    }

    /// Adds `column IN (...)` when `values` is not empty.
    pub(crate) fn when_any(mut self, column: &str, values: &[String]) -> Select {
        if !values.is_empty() {
            let marks = vec!["?"; values.len()].join(", ");
            self.clauses.push(format!("{column} IN ({marks})"));
            self.args.extend(values.iter().cloned().map(SqlValue::Text));
        }
        self
    }

    /// Orders by `order` (an `ORDER BY` list).
    pub(crate) fn order(mut self, order: &'static str) -> Select {
        self.order = Some(order);
        self
    }

    /// Keeps at most `limit` rows.
    pub(crate) fn limit(mut self, limit: Option<usize>) -> Select {
        self.limit = limit;
        self
    }

    /// The statement's text.
    pub(crate) fn sql(&self) -> String {
        let mut sql = self.head.clone();
        if !self.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.clauses.join(" AND "));
        }
        if let Some(order) = self.order {
            sql.push_str(" ORDER BY ");
            sql.push_str(order);
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        match self.dialect {
            Dialect::Sqlite => sql,
            Dialect::Postgres => numbered(&sql),
        }
    }

    /// The statement's arguments, in the order of their `?`.
    pub(crate) fn args(&self) -> &[SqlValue] {
        &self.args
    }

    /// Runs the statement and decodes every row with `decode`.
    pub(crate) fn rows<T>(
        &self,
        conn: &Connection,
        mut decode: impl FnMut(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut stmt = conn.prepare(&self.sql())?;
        let mut rows = stmt.query(params_from_iter(self.args()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(decode(row)?);
        }
        Ok(out)
    }
}

/// `sql` with its `?` arguments numbered `$1`, `$2`... (PostgreSQL's).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl TraceFilter {
    /// `columns` of the matching traces, in the filter's order and limit.
    pub(crate) fn select(&self, columns: &str) -> Select {
        self.select_in(Dialect::Sqlite, columns)
    }

    /// [`select`](Self::select) in `dialect`.
    pub(crate) fn select_in(&self, dialect: Dialect, columns: &str) -> Select {
        let order = if self.newest_first {
            "started_at DESC, trace_id DESC"
        } else {
            "started_at, trace_id"
        };
        self.restrict(Select::new_in(dialect, columns, "traces"))
            .order(order)
            .limit(self.limit)
    }

    /// `select` restricted to the matching traces (order and limit are the
    /// caller's).
    pub(crate) fn restrict(&self, select: Select) -> Select {
        select
            .when_any("session_id", &self.session_ids)
            .when("run_id = ?", self.run_id.clone())
            .when("model = ?", self.model.clone())
            .when("harness = ?", self.harness.clone())
            .when("weight_version = ?", self.weight_version)
            .when_on("status != 'ok'", self.errors_only)
            .when("status = ?", self.status.map(|s| s.as_str().to_string()))
            .when("operation != ?", self.skip_other.then(other_operation))
            .when("started_at > ?", self.since.map(epoch_text))
            .when("started_at < ?", self.until.map(epoch_text))
            .when_key(self.after.as_ref(), self.newest_first)
    }
}

/// The operation of calls without a model, as its column holds it.
fn other_operation() -> String {
    Operation::Other.as_str().to_string()
}

impl SessionFilter {
    /// `columns` of the matching sessions, oldest (or newest) first.
    pub(crate) fn select(&self, columns: &str) -> Select {
        self.select_in(Dialect::Sqlite, columns)
    }

    /// [`select`](Self::select) in `dialect`.
    pub(crate) fn select_in(&self, dialect: Dialect, columns: &str) -> Select {
        let order = if self.newest_first {
            "created_at DESC, session_id DESC"
        } else {
            "created_at, session_id"
        };
        let search = format!(
            "({} OR {})",
            dialect.contains("session_id"),
            dialect.contains("COALESCE(run_id, '')")
        );
        let mut select = Select::new_in(dialect, columns, "sessions")
            .when("created_at > ?", self.since.map(epoch_text))
            .when("run_id = ?", self.run_id.clone())
            .when_on("run_id IS NULL", self.without_run)
            .when("error_count > ?", self.errors_only.then_some(0))
            .when(
                "COALESCE(last_seen, created_at) > ?",
                self.active_after.map(epoch_text),
            )
            .when(
                "COALESCE(first_seen, created_at) < ?",
                self.active_before.map(epoch_text),
            );
        for (column, value) in [("model", &self.model), ("harness", &self.harness)] {
            // As for runs: `+` keeps SQLite on the session_id index.
            let clause = format!(
                "EXISTS (SELECT 1 FROM traces t \
                 WHERE t.session_id = sessions.session_id AND {} = ?)",
                dialect.unindexed(column)
            );
            select = select.when(&clause, value.clone());
        }
        select
            .when_each(&search, self.search.clone())
            .order(order)
            .limit(self.limit)
    }
}

impl RunFilter {
    /// `columns` of the matching runs, newest first.
    pub(crate) fn select(&self, columns: &str) -> Select {
        self.select_in(Dialect::Sqlite, columns)
    }

    /// [`select`](Self::select) in `dialect`.
    pub(crate) fn select_in(&self, dialect: Dialect, columns: &str) -> Select {
        let mut select = Select::new_in(dialect, columns, "runs")
            .when(&dialect.contains("run_id"), self.search.clone())
            .when("error_count > ?", self.errors_only.then_some(0))
            .when("last_seen > ?", self.since.map(epoch_text))
            .when("first_seen < ?", self.until.map(epoch_text));
        let facets = [
            ("model", &self.model),
            ("harness", &self.harness),
            ("project", &self.project),
            ("experiment", &self.experiment),
        ];
        for (column, value) in facets {
            // `+` keeps SQLite on the run_id index: walking each run's calls
            // until one matches beats walking every call of a common model
            // once per run.
            let clause = format!(
                "EXISTS (SELECT 1 FROM traces t WHERE t.run_id = runs.run_id AND {} = ?)",
                dialect.unindexed(column)
            );
            select = select.when(&clause, value.clone());
        }
        select.order("first_seen DESC, run_id").limit(self.limit)
    }
}

impl CallFilter {
    /// `columns` of the matching calls: with `after`, the oldest committed
    /// since the cursor (so that a cut page resumes cleanly); without, the
    /// newest. Commit order is the `id`'s.
    pub(crate) fn select(&self, columns: &str) -> Select {
        self.select_in(Dialect::Sqlite, columns)
    }

    /// [`select`](Self::select) in `dialect`.
    pub(crate) fn select_in(&self, dialect: Dialect, columns: &str) -> Select {
        let order = if self.after.is_some() {
            "id ASC"
        } else {
            "id DESC"
        };
        Select::new_in(dialect, columns, "traces")
            .when("run_id = ?", self.run_id.clone())
            .when("session_id = ?", self.session_id.clone())
            .when_on("session_id IS NULL", self.without_session)
            .when("started_at > ?", self.since.map(epoch_text))
            .when("started_at < ?", self.until.map(epoch_text))
            .when("id > ?", self.after)
            .order(order)
            .limit(Some(self.limit))
    }
}

/// Epoch seconds as the RFC 3339 text the time columns hold. Stored times
/// have microsecond precision; rounding to it makes a timestamp read back
/// from a record select strictly after that record.
pub(crate) fn epoch_text(seconds: f64) -> String {
    let micros = (seconds.max(0.0) * 1e6).round() as u64;
    rfc3339(UNIX_EPOCH + Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_set_filters_become_conditions() {
        let all = TraceFilter::default().select("trace_id");
        assert_eq!(
            all.sql(),
            "SELECT trace_id FROM traces ORDER BY started_at, trace_id"
        );
        let some = TraceFilter {
            session_ids: vec!["a".into(), "b".into()],
            harness: Some("h".into()),
            errors_only: true,
            limit: Some(3),
            ..TraceFilter::default()
        }
        .select("trace_id");
        assert_eq!(
            some.sql(),
            "SELECT trace_id FROM traces WHERE session_id IN (?, ?) AND harness = ? \
             AND status != 'ok' ORDER BY started_at, trace_id LIMIT 3"
        );
        assert_eq!(some.args().len(), 3);
    }
}
