//! The PostgreSQL backend: the same store, in a database several gateway
//! replicas share.
//!
//! `db = "postgres://user:pass@host/db"` selects it (a path selects SQLite,
//! the default). The layout is `schema/postgres/`; the seam is the same
//! handles as SQLite's (`Store`, `StoreWriter`, `StoreReader`, `Reader`,
//! `Pruner`), so the API, the UI, the CLI and export do not know which
//! backend answers them.
//!
//! (Work in progress this session: the writer, the readers and the shared
//! outbox land in the files below.)

pub(crate) mod connect;
pub(crate) mod migrate;
pub(crate) mod record;
