//! Deliver: spool (within its bounds), then store at the destination; retry what is left in
//! the spool with a backoff per profile.
pub mod bounds;
pub mod key;
mod retry;
pub mod sink;
pub mod spool;

use std::{
    collections::HashSet,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use bounds::{Limits, Room};
use retry::Schedule;
use sink::Sink;
use spool::{Entry, Spool};

/// Writes `parts` (concatenated) to `dest` through a hidden temporary file beside it and a
/// rename, so a crash never leaves half a profile under the final name; the file (mode 0600)
/// and then its directory are synced before this returns, so what it wrote survives a crash
/// or power loss of the node.
async fn write_atomically(dest: &Path, parts: &[&[u8]]) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let dir = dest.parent().context("path without a directory")?;
    let name = dest.file_name().context("path without a file name")?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = async {
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await?;
        for part in parts {
            f.write_all(part).await?;
        }
        f.sync_all().await
    };
    write
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, dest)
        .await
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    sync_dir(dir).await
}

/// Makes a rename or removal in `dir` durable.
async fn sync_dir(dir: &Path) -> Result<()> {
    let d = tokio::fs::File::open(dir)
        .await
        .with_context(|| format!("opening {}", dir.display()))?;
    d.sync_all()
        .await
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Creates `dir` and its missing parents with mode 0700 (profiles are a process's memory).
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

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
    pub async fn deliver(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.to_string());
        let entry = self.spool_within_bounds(key, bytes).await;
        // The bytes are still in memory: store them rather than read the spool file back.
        let result = match self.sink.store(key, bytes).await {
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
    async fn spool_within_bounds(&self, key: &str, bytes: &[u8]) -> Option<Entry> {
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
        match self.spool.put(key, bytes).await {
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
        let mut stored = 0;
        for entry in pending {
            let due = self
                .schedule
                .lock()
                .expect("schedule lock")
                .due(&entry.key, now);
            if !due
                || self
                    .in_flight
                    .lock()
                    .expect("in-flight lock")
                    .contains(&entry.key)
            {
                continue;
            }
            let result = match tokio::fs::read(&entry.path).await {
                Ok(bytes) => {
                    let body = bytes.get(entry.offset..).unwrap_or_default();
                    self.sink.store(&entry.key, body).await
                }
                Err(e) => {
                    Err(anyhow::Error::new(e).context(format!("reading {}", entry.path.display())))
                }
            };
            match result {
                Ok(()) => {
                    if let Err(e) = self.spool.remove(&entry).await {
                        warn!("{e:#}");
                    }
                    self.schedule
                        .lock()
                        .expect("schedule lock")
                        .forget(&entry.key);
                    info!(key = entry.key, "spooled profile stored");
                    stored += 1;
                }
                // Dropped from the spool (it was full) while this attempt ran: nothing to retry.
                Err(_) if !entry.path.exists() => {
                    self.schedule
                        .lock()
                        .expect("schedule lock")
                        .forget(&entry.key);
                }
                Err(e) => {
                    self.note_failure(&entry.key, &e, true);
                }
            }
        }
        stored
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
