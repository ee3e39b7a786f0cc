//! Connecting to the PostgreSQL server a `postgres://` database names.
//!
//! The store's threads are blocking by design (one writer thread, readers
//! on the runtime's blocking pool), so connections are the `postgres`
//! crate's: tokio-postgres' own blocking client. Each connection is tagged
//! with the replica's instance id (`application_name`), so
//! `pg_stat_activity` tells the replicas apart.

use crate::store::error::{StoreError, StoreResult};
use postgres::{Client, Config, NoTls};
use std::str::FromStr;
use std::time::Duration;

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection string parsed once, ready to open connections.
#[derive(Clone)]
pub(crate) struct Server {
    config: Config,
    /// The URL without its password, for messages.
    shown: String,
}

impl Server {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub(crate) fn parse(url: &str, shown: String) -> StoreResult<Server> {
        let mut config = Config::from_str(url).map_err(StoreError::postgres(format!(
            "cannot read the PostgreSQL address {shown}"
        )))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(Server { config, shown })
    }

    /// Opens one connection, named `tracegate <instance>` on the server.
    pub(crate) fn connect(&self, instance: &str) -> StoreResult<Client> {
        let mut config = self.config.clone();
        config.application_name(&format!("tracegate {instance}"));
        config.connect(NoTls).map_err(StoreError::postgres(format!(
            "cannot connect to {}",
            self.shown
        )))
    }

    /// The URL without its password.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }
}
