//! Deliver: name each profile (`naming`: its `key` and `metadata`), write it to the durable
//! spool within its bounds (`spool`; `streaming` for one written as it arrives, `durable`,
//! `bounds`, `make_room`), then store it at the destination (`sink`: S3 or a directory;
//! `upload` streams large ones), retrying what is left in the spool with a backoff per
//! profile (`retry`).
pub mod bounds;
mod durable;
pub mod key;
mod make_room;
pub mod metadata;
pub mod naming;
mod retry;
pub mod sink;
pub mod spool;
pub mod streaming;
mod upload;

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Result;
use futures_util::StreamExt;
use tracing::{error, info, warn};

use bounds::Limits;
use metadata::Metadata;
use retry::Schedule;
use sink::{Body, Sink};
use spool::{Entry, Spool};
use streaming::Incoming;

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
        self.claim(key);
        let entry = match self.make_room(key, bytes.len() as u64, None).await {
            Some(false) => None,
            _ => match self.spool.put(key, meta, bytes).await {
                Ok(entry) => Some(entry),
                Err(e) => {
                    // Not durable, but not lost yet: straight to the destination.
                    warn!(
                        key,
                        "could not spool the profile, sending it directly: {e:#}"
                    );
                    None
                }
            },
        };
        // The bytes are still in memory: store them rather than read the spool file back.
        let result = self.sink.store(key, meta, Body::Memory(bytes)).await;
        self.settle(key, entry.as_ref(), true, result).await
    }

    /// Starts a profile that is written into the spool as it arrives (see `Incoming`);
    /// `finish` delivers it.
    pub async fn begin(&self, key: &str, meta: &Metadata) -> Result<Incoming> {
        self.claim(key);
        let incoming = self.spool.begin(key, meta).await;
        if incoming.is_err() {
            self.release(key);
        }
        incoming
    }

    /// Completes a streamed profile in the spool and stores it, streamed from the spool file.
    pub async fn finish(&self, incoming: Incoming) -> Result<()> {
        let key = incoming.key.clone();
        let entry = match incoming.commit().await {
            Ok(entry) => entry,
            Err(e) => {
                self.release(&key);
                return Err(e.context("the profile could not be spooled: it is lost"));
            }
        };
        let keep = self.make_room(&key, entry.bytes, Some(&entry.path)).await != Some(false);
        let body = Body::File {
            path: &entry.path,
            offset: entry.offset as u64,
            len: entry.bytes,
        };
        let result = self.sink.store(&key, &entry.meta, body).await;
        self.settle(&key, Some(&entry), keep, result).await
    }

    /// Throws away a streamed profile whose capture failed.
    pub async fn abandon(&self, incoming: Incoming) {
        let key = incoming.key.clone();
        incoming.discard().await;
        self.release(&key);
    }

    /// After an attempt to store a profile of a capture: removes its spool entry once stored;
    /// otherwise keeps it for the retry loop (`keep`) or removes it (the spool is full).
    async fn settle(
        &self,
        key: &str,
        entry: Option<&Entry>,
        keep: bool,
        result: Result<()>,
    ) -> Result<()> {
        crate::metrics::upload(match (&result, keep && entry.is_some()) {
            (Ok(()), _) => "stored",
            (Err(_), true) => "failed",
            (Err(_), false) => "lost",
        });
        let result = match (result, entry) {
            (Ok(()), Some(entry)) => self.spool.remove(entry).await,
            (Ok(()), None) => Ok(()),
            (Err(e), Some(_)) if keep => {
                let retry_in = self.note_failure(key, &e, false);
                Err(e.context(format!(
                    "kept in the spool, next attempt in {} ms",
                    retry_in.as_millis()
                )))
            }
            (Err(e), entry) => {
                if let Some(entry) = entry {
                    let _ = self.spool.remove(entry).await;
                }
                Err(e.context("not in the spool either: this profile is lost"))
            }
        };
        self.release(key);
        result
    }

    fn claim(&self, key: &str) {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.to_string());
    }

    fn release(&self, key: &str) {
        self.in_flight.lock().expect("in-flight lock").remove(key);
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
        crate::metrics::spool(pending.len(), pending.iter().map(|e| e.bytes).sum());
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
        // Streamed from the file: a large profile is never read whole.
        let body = Body::File {
            path: &entry.path,
            offset: entry.offset as u64,
            len: entry.bytes,
        };
        let result = self.sink.store(&entry.key, &entry.meta, body).await;
        crate::metrics::upload(if result.is_ok() { "stored" } else { "failed" });
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
        self.release(&entry.key);
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
