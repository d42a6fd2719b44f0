//! Deliver: name each profile (`naming`: its `key` and `metadata`), write it to the durable
//! spool within its bounds (`spool`; `streaming` for one written as it arrives, `durable`,
//! `bounds`, `make_room`), then store it at the destination (`sink`: S3 or a directory;
//! `upload` streams large ones), retrying what is left in the spool with a backoff per
//! profile (`retry`). Alerts (`alerts`: a kill, a stored profile) go to each webhook
//! (`webhook`) the same way, through a spool and retries of their own.
pub mod alerts;
pub mod bounds;
mod durable;
pub mod key;
mod make_room;
pub mod metadata;
pub mod naming;
mod redeliver;
mod retry;
mod role;
pub mod sink;
pub mod spool;
pub mod streaming;
mod upload;
pub mod webhook;

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Result;
use tracing::{error, warn};

use bounds::Limits;
use metadata::Metadata;
use retry::Schedule;
use role::Role;
use sink::{Body, Sink};
use spool::{Entry, Spool};
use streaming::Incoming;

pub struct Deliverer {
    spool: Spool,
    sink: Sink,
    limits: Limits,
    schedule: Mutex<Schedule>,
    /// Keys a capture task is delivering right now; the retry loop leaves them alone so a
    /// profile is not sent twice.
    in_flight: Mutex<HashSet<String>>,
    /// Whether the spool may hold anything (see `redeliver::Changes`).
    changes: redeliver::Changes,
    role: Role,
}

impl Deliverer {
    pub fn new(spool: Spool, sink: Sink, limits: Limits) -> Self {
        Self {
            spool,
            sink,
            limits,
            schedule: Mutex::default(),
            in_flight: Mutex::default(),
            changes: Default::default(),
            role: Role::Profiles,
        }
    }

    /// The same, carrying alerts.
    pub fn for_alerts(self) -> Self {
        Self {
            role: Role::Alerts,
            ..self
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
                        "could not spool the {}, sending it directly: {e:#}",
                        self.role.noun()
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
                return Err(e.context(format!(
                    "the {} could not be spooled: it is lost",
                    self.role.noun()
                )));
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
        // An alert its webhook refuses is not kept for a retry.
        let keep = keep && !result.as_ref().is_err_and(|e| self.role.gives_up(e));
        self.role.count(match (&result, keep && entry.is_some()) {
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
                Err(e.context(format!(
                    "not in the spool either: this {} is lost",
                    self.role.noun()
                )))
            }
        };
        self.release(key);
        result
    }

    fn claim(&self, key: &str) {
        self.changes.moved();
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.to_string());
    }

    fn release(&self, key: &str) {
        self.in_flight.lock().expect("in-flight lock").remove(key);
        self.changes.moved();
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
                "storing the {} cannot succeed until the configuration changes: {e:#}; it stays in the spool and is retried every few minutes",
                self.role.noun()
            );
        } else if log_transient {
            warn!(
                key,
                failures = failed.failures,
                retry_in_ms = failed.retry_in.as_millis() as u64,
                "spooled {} not stored yet: {e:#}",
                self.role.noun()
            );
        }
        failed.retry_in
    }
}

#[cfg(test)]
mod tests;
