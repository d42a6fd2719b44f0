//! The durable spool: every profile is written here before it is sent, and removed only once
//! the destination has it. Whatever is left (the destination was down, memprof was killed) is
//! sent again later, so a captured profile is never dropped silently.
//!
//! An entry is one file, `<hash of the key>.spool` (mode 0600, in a 0700 directory, synced
//! with its directory before it counts as spooled), holding a header line with the object key,
//! a line with the profile's metadata (JSON), and then the profile: keys can be far longer
//! than a file name may be (a pod name alone may have 253 characters). Files of the earlier
//! layouts (a header without metadata; a file named by the escaped key) are still read and
//! delivered.
use std::{
    hash::{Hash, Hasher},
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::{metadata::Metadata, streaming::Incoming};

/// What a spool file starts with, before the key and a newline; then the metadata line.
const MAGIC: &[u8] = b"memprof-spool 2 ";
/// The earlier header: the key only.
const MAGIC_V1: &[u8] = b"memprof-spool 1 ";
const SUFFIX: &str = ".spool";
/// Room for the header when reading it back (keys are well below this).
const HEADER_MAX: usize = 16 * 1024;

pub struct Spool {
    dir: PathBuf,
}

/// One spooled profile: its object key, the file holding it and where the profile starts.
pub struct Entry {
    pub key: String,
    pub meta: Metadata,
    pub path: PathBuf,
    pub offset: usize,
    /// Bytes of the profile (without the header).
    pub bytes: u64,
}

/// A file name for `key`, the same for the same key (a key names one object).
fn file_name(key: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    format!("{:016x}-{}{SUFFIX}", h.finish(), key.len())
}

/// The earlier layout: the key itself, with '%' and '/' escaped.
fn legacy_key(file_name: &str) -> String {
    file_name.replace("%2F", "/").replace("%25", "%")
}

/// A spool file's header: the key and the metadata, a line each, within `HEADER_MAX` (a key
/// is well below it; metadata values are cut to fit), so every entry can be read back.
fn head(key: &str, meta: &Metadata) -> Vec<u8> {
    let json = meta.json_within(HEADER_MAX.saturating_sub(MAGIC.len() + key.len() + 2));
    [MAGIC, key.as_bytes(), b"\n", &json, b"\n"].concat()
}

/// The key, the metadata and the profile's offset from the start of a spool file.
fn header(start: &[u8]) -> Option<(String, Metadata, usize)> {
    let line = |from: usize| {
        let end = from + start[from..].iter().position(|b| *b == b'\n')?;
        Some((&start[from..end], end + 1))
    };
    let v1 = start.starts_with(MAGIC_V1);
    if !v1 && !start.starts_with(MAGIC) {
        return None;
    }
    let (key, after_key) = line(MAGIC.len())?;
    let key = std::str::from_utf8(key).ok()?.to_string();
    if v1 {
        return Some((key, Metadata::new(), after_key));
    }
    let (meta, offset) = line(after_key)?;
    Some((key, Metadata::from_json(meta)?, offset))
}

impl Spool {
    /// Opens (creates) the spool; files a crash left half-written are removed (not those another
    /// memprof on this spool is writing).
    pub fn open(dir: &Path) -> Result<Self> {
        super::durable::private_dir(dir)
            .with_context(|| format!("opening spool {}", dir.display()))?;
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let temporary = name.ends_with(".tmp") || name.ends_with(".partial");
            if name.starts_with('.') && temporary && super::durable::leftover(&e.path()) {
                tracing::warn!(file = %e.path().display(), "removing a spool file a crash left half-written");
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Starts an entry whose body is written as it arrives (see `Incoming`).
    pub async fn begin(&self, key: &str, meta: &Metadata) -> Result<Incoming> {
        let name = file_name(key);
        let tmp = self.dir.join(format!(".{name}.partial"));
        Incoming::create(tmp, self.dir.join(name), key, meta, head(key, meta)).await
    }

    /// Writes atomically and durably (see `write_atomically`).
    pub async fn put(&self, key: &str, meta: &Metadata, bytes: &[u8]) -> Result<Entry> {
        let path = self.dir.join(file_name(key));
        let head = head(key, meta);
        super::durable::write_atomically(&path, &[&head, bytes]).await?;
        Ok(Entry {
            key: key.to_string(),
            meta: meta.clone(),
            path,
            offset: head.len(),
            bytes: bytes.len() as u64,
        })
    }

    pub async fn remove(&self, entry: &Entry) -> Result<()> {
        tokio::fs::remove_file(&entry.path)
            .await
            .with_context(|| format!("removing {}", entry.path.display()))?;
        super::durable::sync_dir(&self.dir).await
    }

    /// The directory's modification time (`None`: unreadable): a profile renamed into it, by
    /// whatever process, moves it.
    pub fn stamp(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok()
    }

    /// Objects still waiting for delivery, oldest first. A file whose header cannot be read
    /// is skipped with an error in the log, and kept.
    pub fn pending(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
        {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Hidden files are writes in progress; directories are other spools (the alerts'
            // live under this one, `alerts/`).
            if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let (key, meta, offset) = if name.ends_with(SUFFIX) {
                let mut start = Vec::with_capacity(HEADER_MAX);
                let read = std::fs::File::open(e.path())
                    .and_then(|f| f.take(HEADER_MAX as u64).read_to_end(&mut start));
                match read.ok().and_then(|_| header(&start)) {
                    Some(h) => h,
                    None => {
                        tracing::error!(file = %e.path().display(), "unreadable spool file, kept");
                        continue;
                    }
                }
            } else {
                (legacy_key(&name), Metadata::new(), 0)
            };
            let stat = e.metadata().ok();
            let modified = stat.as_ref().and_then(|m| m.modified().ok());
            let len = stat.map_or(0, |m| m.len());
            entries.push((
                modified,
                Entry {
                    key,
                    meta,
                    path: e.path(),
                    offset,
                    bytes: len.saturating_sub(offset as u64),
                },
            ));
        }
        entries.sort_by_key(|(t, _)| *t);
        Ok(entries.into_iter().map(|(_, e)| e).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn body(e: &Entry) -> Vec<u8> {
        std::fs::read(&e.path).unwrap()[e.offset..].to_vec()
    }

    #[tokio::test]
    async fn roundtrip_keeps_key_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let key = "memprof/ns/pod/comm%x/t_pid-1_90pct.heap.pb.gz";
        let mut meta = Metadata::new();
        meta.set("cmdline", "app\n--flag");
        let entry = spool.put(key, &meta, b"profile").await.unwrap();
        let pending = spool.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].key, key);
        assert_eq!(pending[0].meta, meta);
        assert_eq!(body(&pending[0]), b"profile");
        spool.remove(&entry).await.unwrap();
        // Another spool inside this one (the alerts') holds nothing of this one's.
        Spool::open(&dir.path().join("spool/alerts/0123")).unwrap();
        assert!(spool.pending().unwrap().is_empty());
        // Arguments JSON escapes six-fold: the header is cut to fit, the entry stays readable.
        meta.set("cmdline", "\u{1}".repeat(4 << 10));
        spool.put(key, &meta, b"profile").await.unwrap();
        let pending = spool.pending().unwrap();
        assert!(pending[0].meta.get("cmdline").unwrap().ends_with("[…cut]"));
        assert_eq!(body(&pending[0]), b"profile");
    }

    #[tokio::test]
    async fn the_longest_keys_spool_privately() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let spool = Spool::open(&spool_dir).unwrap();
        // A 63-character namespace and a 253-character pod name.
        let key = format!(
            "memprof/{}/{}/app/20261125T030405.123Z_pid-7_83pct.heap.pb.gz",
            "n".repeat(63),
            "p".repeat(253)
        );
        let entry = spool.put(&key, &Metadata::new(), b"heap").await.unwrap();
        assert_eq!(spool.pending().unwrap()[0].key, key);
        assert_eq!(body(&entry), b"heap");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spool_dir), 0o700);
        assert_eq!(mode(&entry.path), 0o600);
    }

    #[tokio::test]
    async fn files_of_the_earlier_layout_are_still_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let key = "memprof/ns/pod/app/t_pid-1_90pct.heap.pb.gz";
        std::fs::write(dir.path().join(key.replace('/', "%2F")), b"old").unwrap();
        std::fs::write(dir.path().join("broken.spool"), b"not a header").unwrap();
        let v1 = [MAGIC_V1, b"memprof/v1.heap.pb.gz\nheap v1"].concat();
        std::fs::write(dir.path().join("v1.spool"), v1).unwrap();
        let mut pending = spool.pending().unwrap();
        pending.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(
            pending.len(),
            2,
            "the unreadable file is skipped, not dropped"
        );
        assert_eq!(
            (pending[0].key.as_str(), body(&pending[0])),
            (key, b"old".to_vec())
        );
        assert_eq!(
            (pending[1].key.as_str(), body(&pending[1])),
            ("memprof/v1.heap.pb.gz", b"heap v1".to_vec())
        );
        assert!(dir.path().join("broken.spool").exists());
    }
}
