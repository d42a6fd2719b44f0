//! The spool's leftovers: what a capture could not store at once is sent again when its wait
//! (`retry`) is over, a few at a time, for as long as memprof runs, and all of it at shutdown.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering::SeqCst},
        Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use futures_util::StreamExt;
use tracing::{info, warn};

use super::{sink::Body, spool::Entry, Deliverer, Role};

/// Spooled objects sent at the same time by one flush.
const FLUSH_PARALLEL: usize = 4;
/// How often the spool is checked for objects whose wait is over, while it may hold any.
const RETRY_TICK: Duration = Duration::from_secs(1);
/// While the spool is known to be empty, how often its directory's time is looked at: what
/// another process puts there is found then, or, should a coarse clock hide the change, by the
/// listing every `LIST_PERIOD` (this process's deliveries wake the loop at once).
const STAMP_EVERY: Duration = Duration::from_secs(5);
/// The spool is listed at least this often whatever `Changes` says.
const LIST_PERIOD: Duration = Duration::from_secs(60);

impl Deliverer {
    /// Sends the spooled profiles whose wait is over; returns how many were stored.
    pub async fn flush(&self) -> usize {
        self.flush_due(Instant::now()).await
    }

    /// As `flush`, as if it were `now`.
    pub(super) async fn flush_due(&self, now: Instant) -> usize {
        let seen = (self.changes.count(), self.spool.stamp());
        let pending = match self.spool.pending() {
            Ok(p) => p,
            Err(e) => {
                warn!("reading the spool failed: {e:#}");
                return 0;
            }
        };
        if pending.is_empty() {
            self.changes.empty_at(seen);
        }
        if self.role == Role::Profiles {
            crate::metrics::spool(pending.len(), pending.iter().map(|e| e.bytes).sum());
        }
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
        self.role
            .count(if result.is_ok() { "stored" } else { "failed" });
        let stored = match result {
            Ok(()) => {
                if let Err(e) = self.spool.remove(&entry).await {
                    warn!("{e:#}");
                }
                self.schedule
                    .lock()
                    .expect("schedule lock")
                    .forget(&entry.key);
                info!(key = entry.key, "spooled {} stored", self.role.noun());
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
            Err(e) if self.role.gives_up(&e) => {
                self.role.count("lost");
                warn!(key = entry.key, "{e:#}: the alert is dropped");
                let _ = self.spool.remove(&entry).await;
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
    pub fn waiting(&self) -> anyhow::Result<usize> {
        Ok(self.spool.pending()?.len())
    }

    /// Retries the spool for as long as memprof runs (a background task).
    pub async fn retry_loop(&self) {
        let mut listed: Option<Instant> = None;
        loop {
            let mut may_hold = self.changes.may_hold(self.spool.stamp());
            if may_hold || listed.is_none_or(|t| t.elapsed() >= LIST_PERIOD) {
                listed = Some(Instant::now());
                self.flush().await;
                may_hold = self.changes.may_hold(self.spool.stamp());
            }
            // Ticking every second while the spool is empty was a share of memprof's idle CPU
            // (each tick a wakeup).
            let wait = if may_hold { RETRY_TICK } else { STAMP_EVERY };
            tokio::select! {
                _ = self.changes.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Whether the spool may hold anything, so that the retry loop lists it only then (listing it
/// every second was a steady share of memprof's idle CPU). This process's deliveries are
/// counted as they begin and as they end; anything else that puts a profile there (`memprof
/// capture`, a former instance) changes the directory's modification time. Once a listing
/// found the spool empty, it stays so until one of them moves; what a coarse clock could hide
/// is found by the listing every `LIST_PERIOD`, and what an earlier run left by the first.
#[derive(Default)]
pub(super) struct Changes {
    count: AtomicU64,
    /// Woken when the count moves: the retry loop, waiting while the spool is empty.
    wake: tokio::sync::Notify,
    /// The count and the directory's time when a listing found the spool empty.
    empty_at: Mutex<Option<(u64, Option<SystemTime>)>>,
}

impl Changes {
    pub(super) fn moved(&self) {
        self.count.fetch_add(1, SeqCst);
        self.wake.notify_one();
    }

    fn count(&self) -> u64 {
        self.count.load(SeqCst)
    }

    /// A listing begun at `seen` (the count, the directory's time) found nothing.
    fn empty_at(&self, seen: (u64, Option<SystemTime>)) {
        *self.empty_at.lock().expect("spool changes") = Some(seen);
    }

    /// Whether the spool may hold anything, its directory's time being `stamp` now.
    fn may_hold(&self, stamp: Option<SystemTime>) -> bool {
        let empty_at = *self.empty_at.lock().expect("spool changes");
        stamp.is_none() || empty_at != Some((self.count(), stamp))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::Changes;

    #[test]
    fn the_spool_is_listed_again_once_anything_may_have_put_a_profile_there() {
        let c = Changes::default();
        let t = Some(SystemTime::UNIX_EPOCH);
        assert!(c.may_hold(t), "never listed: an earlier run's leftovers");
        c.empty_at((c.count(), t));
        assert!(!c.may_hold(t));
        assert!(
            c.may_hold(t.map(|t| t + Duration::from_millis(1))),
            "another process wrote to the directory"
        );
        assert!(c.may_hold(None), "the directory's time unknown");
        c.moved();
        assert!(c.may_hold(t), "a delivery began");
        // A listing that began before a delivery ended says nothing of what it left.
        let seen = (c.count(), t);
        c.moved();
        c.empty_at(seen);
        assert!(c.may_hold(t));
    }
}
