//! Calls the gateway carries on without their client: a route with
//! `finish_on_client_close = true` reads the answer of a call whose client
//! left to its end, in a task of its own, and records it whole.
//!
//! Those tasks outlive their connection, so the server cannot drain them by
//! draining connections. They are tracked here instead: on shutdown the
//! server waits for them as long as it waits for calls in flight
//! (`shutdown_grace`), then cancels the rest — a cancelled task drops its
//! call, whose capture records what had arrived (`client_closed`) before
//! the store is flushed.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tasks finishing calls whose client left.
#[derive(Clone, Default)]
pub struct Detached {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Detached {
    /// Runs `work` in a task of its own, until it ends or shutdown cancels it.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Waits up to `grace` for every task, then cancels those left and waits
    /// for them to drop their calls (which records them).
    pub async fn drain(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                calls = self.tracker.len(),
                "calls finishing for clients that left are still running after {grace:?}; \
                 cancelling them (recorded as client_closed with what arrived)"
            );
            self.cancel.cancel();
            self.tracker.wait().await;
        }
    }
}
