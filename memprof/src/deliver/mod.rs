//! Deliver: spool, then store at the destination; retry what is left in the spool.
pub mod key;
pub mod sink;
pub mod spool;

use std::time::Duration;

use anyhow::Result;
use tracing::{info, warn};

use sink::Sink;
use spool::Spool;

/// How often spooled leftovers are retried.
const RETRY_EVERY: Duration = Duration::from_secs(30);

pub struct Deliverer {
    spool: Spool,
    sink: Sink,
}

impl Deliverer {
    pub fn new(spool: Spool, sink: Sink) -> Self {
        Self { spool, sink }
    }

    pub fn describe(&self) -> String {
        self.sink.describe()
    }

    /// Spools the profile and stores it. On failure the profile stays in the spool for the
    /// retry loop and the error is returned for the log.
    pub async fn deliver(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let entry = self.spool.put(key, bytes).await?;
        self.sink.store(key, &entry.path).await?;
        self.spool.remove(&entry).await
    }

    /// Sends whatever the spool holds; returns how many were stored.
    pub async fn flush(&self) -> usize {
        let pending = match self.spool.pending() {
            Ok(p) => p,
            Err(e) => {
                warn!("reading the spool failed: {e:#}");
                return 0;
            }
        };
        let mut stored = 0;
        for entry in pending {
            match self.sink.store(&entry.key, &entry.path).await {
                Ok(()) => {
                    if let Err(e) = self.spool.remove(&entry).await {
                        warn!("{e:#}");
                    }
                    info!(key = entry.key, "spooled profile stored");
                    stored += 1;
                }
                Err(e) => {
                    warn!(key = entry.key, "spooled profile still not stored: {e:#}");
                    break;
                }
            }
        }
        stored
    }

    /// Retries the spool forever (run as a background task).
    pub async fn retry_loop(&self) {
        loop {
            self.flush().await;
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
}
