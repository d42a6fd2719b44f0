//! The durable spool: every profile is written here before it is sent, and removed only once
//! the destination has it. Whatever is left (the destination was down, memprof was killed) is
//! sent again later, so a captured profile is never dropped silently.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Spool {
    dir: PathBuf,
}

/// One spooled profile: its object key and the file holding it.
pub struct Entry {
    pub key: String,
    pub path: PathBuf,
}

/// Keys contain '/', file names cannot: escape '%' and '/' reversibly.
fn file_name(key: &str) -> String {
    key.replace('%', "%25").replace('/', "%2F")
}

fn key_of(file_name: &str) -> String {
    file_name.replace("%2F", "/").replace("%25", "%")
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating spool {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes atomically (temp file + rename), so a crash never leaves half a profile behind.
    pub async fn put(&self, key: &str, bytes: &[u8]) -> Result<Entry> {
        let path = self.dir.join(file_name(key));
        super::write_atomically(&path, bytes).await?;
        Ok(Entry {
            key: key.to_string(),
            path,
        })
    }

    pub async fn remove(&self, entry: &Entry) -> Result<()> {
        tokio::fs::remove_file(&entry.path)
            .await
            .with_context(|| format!("removing {}", entry.path.display()))
    }

    /// Profiles still waiting for delivery, oldest first.
    pub fn pending(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
        {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let modified = e.metadata().and_then(|m| m.modified()).ok();
            entries.push((
                modified,
                Entry {
                    key: key_of(&name),
                    path: e.path(),
                },
            ));
        }
        entries.sort_by_key(|(t, _)| *t);
        Ok(entries.into_iter().map(|(_, e)| e).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roundtrip_keeps_key_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let key = "memprof/ns/pod/comm%x/t_pid-1_90pct.heap.pb.gz";
        let entry = spool.put(key, b"profile").await.unwrap();
        let pending = spool.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].key, key);
        assert_eq!(std::fs::read(&pending[0].path).unwrap(), b"profile");
        spool.remove(&entry).await.unwrap();
        assert!(spool.pending().unwrap().is_empty());
    }
}
