//! Deliver: spool, then store at the destination; retry what is left in the spool.
pub mod key;
pub mod sink;
pub mod spool;

use std::{collections::HashSet, path::Path, sync::Mutex, time::Duration};

use anyhow::{Context, Result};
use tracing::{info, warn};

use sink::Sink;
use spool::Spool;

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

/// How often spooled leftovers are retried.
const RETRY_EVERY: Duration = Duration::from_secs(30);

pub struct Deliverer {
    spool: Spool,
    sink: Sink,
    /// Keys a capture task is delivering right now; the retry loop leaves them alone so a
    /// profile is not sent twice.
    in_flight: Mutex<HashSet<String>>,
}

impl Deliverer {
    pub fn new(spool: Spool, sink: Sink) -> Self {
        Self {
            spool,
            sink,
            in_flight: Mutex::default(),
        }
    }

    pub fn describe(&self) -> String {
        self.sink.describe()
    }

    /// Spools the profile and stores it. On failure the profile stays in the spool for the
    /// retry loop and the error is returned for the log.
    pub async fn deliver(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.to_string());
        let result = async {
            let entry = match self.spool.put(key, bytes).await {
                Ok(entry) => Some(entry),
                Err(e) => {
                    // Not durable, but not lost: straight to the destination.
                    warn!(
                        key,
                        "could not spool the profile, sending it directly: {e:#}"
                    );
                    None
                }
            };
            // The bytes are still in memory: store them rather than read the spool file back.
            self.sink.store(key, bytes).await?;
            match entry {
                Some(entry) => self.spool.remove(&entry).await,
                None => Ok(()),
            }
        }
        .await;
        self.in_flight.lock().expect("in-flight lock").remove(key);
        result
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
            if self
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile whose destination fails stays in the spool and is stored by the next flush.
    #[tokio::test]
    async fn failed_delivery_is_kept_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        // A file where the destination directory should be makes every store fail.
        std::fs::write(&dest, b"not a directory").unwrap();
        let d = Deliverer::new(
            Spool::open(&dir.path().join("spool")).unwrap(),
            Sink::local(&dest),
        );
        let key = "memprof/ns/pod/app/t_pid-7_91pct.heap.pb.gz";
        assert!(d.deliver(key, b"heap").await.is_err());
        assert_eq!(d.flush().await, 0);

        std::fs::remove_file(&dest).unwrap();
        assert_eq!(d.flush().await, 1);
        assert_eq!(std::fs::read(dest.join(key)).unwrap(), b"heap");
        assert_eq!(d.flush().await, 0, "the spool is empty once stored");
    }

    /// A spool that cannot be written does not lose the profile: it goes straight to the
    /// destination.
    #[tokio::test]
    async fn an_unwritable_spool_sends_directly() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let spool = Spool::open(&spool_dir).unwrap();
        // A file where the spool directory was makes every spooling fail.
        std::fs::remove_dir(&spool_dir).unwrap();
        std::fs::write(&spool_dir, b"not a directory").unwrap();
        let dest = dir.path().join("dest");
        let d = Deliverer::new(spool, Sink::local(&dest));
        let key = "memprof/ns/pod/app/t_pid-7_91pct.heap.pb.gz";
        d.deliver(key, b"heap").await.unwrap();
        assert_eq!(std::fs::read(dest.join(key)).unwrap(), b"heap");
    }
}
