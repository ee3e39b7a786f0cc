//! The record's fixed vocabularies as SQL values: each enum is stored as its
//! wire name (`openai`, `chat`, `client_closed`, `upstream_timeout`), so
//! `sqlite3` shows the same words the API returns, and a word this binary
//! does not know reads back as an error, never as a wrong value.

use crate::protocol::{Operation, Protocol};
use crate::record::{ErrorKind, Status};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Implements `ToSql` and `FromSql` for an enum with `as_str` and a parser.
macro_rules! stored_as_text {
    ($type:ty, $parse:expr) => {
        impl ToSql for $type {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $type {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                let parse: fn(&str) -> Option<$type> = $parse;
                parse(text)
                    .ok_or_else(|| FromSqlError::Other(format!("unknown value '{text}'").into()))
            }
        }
    };
}

stored_as_text!(Protocol, Protocol::parse);
stored_as_text!(Operation, Operation::parse);
stored_as_text!(Status, Status::parse);
stored_as_text!(ErrorKind, ErrorKind::parse);
