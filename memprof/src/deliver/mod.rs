//! Deliver: spool (within its bounds), then store at the destination; retry what is left in
//! the spool with a backoff per profile.
pub mod bounds;
mod durable;
pub mod key;
pub mod metadata;
mod retry;
pub mod sink;
pub mod spool;

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Result;
use futures_util::StreamExt;
use tracing::{error, info, warn};

use bounds::{Limits, Room};
use metadata::Metadata;
use retry::Schedule;
use sink::Sink;
use spool::{Entry, Spool};

/// Spooled profiles sent at the same time by one flush.
const FLUSH_PARALLEL: usize = 4;
/// How often the spool is checked for profiles whose wait is over.
const RETRY_TICK: Duration = Duration::from_secs(1);

pub struct Deliverer {
    spool: Spool,
    sink: Sink,
    limits: Limits,
    schedule: Mutex<Schedule>,
    /// Keys a capture task is delivering right now; the retry loop leaves them alone so a
    /// profile is not sent twice.
    in_flight: Mutex<HashSet<String>>,
}

impl Deliverer {
    pub fn new(spool: Spool, sink: Sink, limits: Limits) -> Self {
        Self {
            spool,
            sink,
            limits,
            schedule: Mutex::default(),
            in_flight: Mutex::default(),
        }
    }

    pub fn describe(&self) -> String {
        self.sink.describe()
    }

    /// Spools the profile and stores it at once. On failure the profile stays in the spool for
    /// the retry loop and the error is returned for the log.
    pub async fn deliver(&self, key: &str, meta: &Metadata, bytes: &[u8]) -> Result<()> {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.to_string());
        let entry = self.spool_within_bounds(key, meta, bytes).await;
        // The bytes are still in memory: store them rather than read the spool file back.
        let result = match self.sink.store(key, meta, bytes).await {
            Ok(()) => match &entry {
                Some(entry) => self.spool.remove(entry).await,
                None => Ok(()),
            },
            Err(e) if entry.is_some() => {
                let retry_in = self.note_failure(key, &e, false);
                Err(e.context(format!(
                    "kept in the spool, next attempt in {} ms",
                    retry_in.as_millis()
                )))
            }
            Err(e) => Err(e.context("not in the spool either: this profile is lost")),
        };
        self.in_flight.lock().expect("in-flight lock").remove(key);
        result
    }

    /// Spools `bytes` as `key`, first making room as `limits` say; `None` when it is not
    /// spooled (refused, or the spool cannot be written), which the log says.
    async fn spool_within_bounds(&self, key: &str, meta: &Metadata, bytes: &[u8]) -> Option<Entry> {
        let waiting = match self.spool.pending() {
            Ok(w) => w,
            Err(e) => {
                warn!(
                    key,
                    "could not read the spool, sending the profile directly: {e:#}"
                );
                return None;
            }
        };
        let sizes: Vec<u64> = waiting.iter().map(|e| e.bytes).collect();
        match bounds::room(&self.limits, &sizes, bytes.len() as u64) {
            Room::Refuse => {
                error!(
                    key,
                    bytes = bytes.len(),
                    waiting = waiting.len(),
                    waiting_bytes = sizes.iter().sum::<u64>(),
                    limits = ?self.limits,
                    "spool full: this profile is not spooled (the oldest are kept); sending it directly"
                );
                return None;
            }
            Room::Admit { drop } => {
                for i in drop {
                    let old = &waiting[i];
                    match self.spool.remove(old).await {
                        Ok(()) => {
                            self.schedule
                                .lock()
                                .expect("schedule lock")
                                .forget(&old.key);
                            error!(
                                dropped = old.key,
                                bytes = sizes[i],
                                limits = ?self.limits,
                                for_key = key,
                                "spool full: dropped the oldest spooled profile to keep the newest"
                            );
                        }
                        Err(e) => warn!("{e:#}"),
                    }
                }
            }
        }
        match self.spool.put(key, meta, bytes).await {
            Ok(entry) => Some(entry),
            Err(e) => {
                // Not durable, but not lost yet: straight to the destination.
                warn!(
                    key,
                    "could not spool the profile, sending it directly: {e:#}"
                );
                None
            }
        }
    }

    /// Schedules the next attempt and returns the wait. A permanent error is logged once per
    /// profile; a transient one when `log_transient` (the caller logs it otherwise).
    fn note_failure(&self, key: &str, e: &anyhow::Error, log_transient: bool) -> Duration {
        let permanent = sink::is_permanent(e);
        let failed =
            self.schedule
                .lock()
                .expect("schedule lock")
                .failed(key, Instant::now(), permanent);
        if failed.first_permanent {
            error!(
                key,
                "storing the profile cannot succeed until the configuration changes: {e:#}; it stays in the spool and is retried every few minutes"
            );
        } else if log_transient {
            warn!(
                key,
                failures = failed.failures,
                retry_in_ms = failed.retry_in.as_millis() as u64,
                "spooled profile not stored yet: {e:#}"
            );
        }
        failed.retry_in
    }

    /// Sends the spooled profiles whose wait is over; returns how many were stored.
    pub async fn flush(&self) -> usize {
        self.flush_due(Instant::now()).await
    }

    /// As `flush`, as if it were `now`.
    async fn flush_due(&self, now: Instant) -> usize {
        let pending = match self.spool.pending() {
            Ok(p) => p,
            Err(e) => {
                warn!("reading the spool failed: {e:#}");
                return 0;
            }
        };
        // Claimed while it is sent: a capture task, the retry loop and the shutdown's drain
        // never send one profile at the same time.
        let due: Vec<Entry> = pending
            .into_iter()
            .filter(|e| {
                self.schedule
                    .lock()
                    .expect("schedule lock")
                    .due(&e.key, now)
                    && self
                        .in_flight
                        .lock()
                        .expect("in-flight lock")
                        .insert(e.key.clone())
            })
            .collect();
        // A few at a time: one hung upload does not hold the others.
        futures_util::stream::iter(due)
            .map(|entry| self.send_spooled(entry))
            .buffer_unordered(FLUSH_PARALLEL)
            .filter(|stored| std::future::ready(*stored))
            .count()
            .await
    }

    /// Sends one claimed spool entry; whether it is stored.
    async fn send_spooled(&self, entry: Entry) -> bool {
        let result = match tokio::fs::read(&entry.path).await {
            Ok(bytes) => {
                let body = bytes.get(entry.offset..).unwrap_or_default();
                self.sink.store(&entry.key, &entry.meta, body).await
            }
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("reading {}", entry.path.display())))
            }
        };
        let stored = match result {
            Ok(()) => {
                if let Err(e) = self.spool.remove(&entry).await {
                    warn!("{e:#}");
                }
                self.schedule
                    .lock()
                    .expect("schedule lock")
                    .forget(&entry.key);
                info!(key = entry.key, "spooled profile stored");
                true
            }
            // Dropped from the spool (it was full) while this attempt ran: nothing to retry.
            Err(_) if !entry.path.exists() => {
                self.schedule
                    .lock()
                    .expect("schedule lock")
                    .forget(&entry.key);
                false
            }
            Err(e) => {
                self.note_failure(&entry.key, &e, true);
                false
            }
        };
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&entry.key);
        stored
    }

    /// Sends every spooled profile, whatever its backoff, until the spool is empty (at
    /// shutdown, under a deadline).
    pub async fn drain(&self) {
        loop {
            let far = Instant::now() + Duration::from_secs(86_400 * 365);
            self.flush_due(far).await;
            if self.waiting().map_or(true, |n| n == 0) {
                return;
            }
            tokio::time::sleep(RETRY_TICK).await;
        }
    }

    /// How many profiles wait in the spool.
    pub fn waiting(&self) -> Result<usize> {
        Ok(self.spool.pending()?.len())
    }

    /// Retries the spool for as long as memprof runs (a background task).
    pub async fn retry_loop(&self) {
        loop {
            self.flush().await;
            tokio::time::sleep(RETRY_TICK).await;
        }
    }
}

#[cfg(test)]
mod tests;
