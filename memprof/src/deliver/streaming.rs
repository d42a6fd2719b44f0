//! A profile written into the spool as it arrives, so a large one (a heap dump of gigabytes)
//! is never held whole in memory: its header (key and metadata) first, then the body chunk by
//! chunk, into a hidden file that becomes a spool entry only once complete and synced. A
//! capture that fails leaves nothing behind; one cut short by a crash leaves a hidden file
//! that `Spool::pending` never lists and the next start removes.
use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio::io::{AsyncWriteExt, BufWriter};

use super::{metadata::Metadata, spool::Entry};

/// Write buffer: large enough for few system calls, small beside any profile worth streaming.
const BUFFER: usize = 256 * 1024;

pub struct Incoming {
    pub(super) key: String,
    pub(super) meta: Metadata,
    file: BufWriter<tokio::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
    offset: usize,
    written: u64,
}

impl Incoming {
    pub(super) async fn create(
        tmp: PathBuf,
        dest: PathBuf,
        key: &str,
        meta: &Metadata,
        head: Vec<u8>,
    ) -> Result<Self> {
        let file = super::durable::create(&tmp)
            .await
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut file = BufWriter::with_capacity(BUFFER, file);
        file.write_all(&head).await?;
        Ok(Self {
            key: key.to_string(),
            meta: meta.clone(),
            file,
            tmp,
            dest,
            offset: head.len(),
            written: 0,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Body bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk of the body.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.file
            .write_all(chunk)
            .await
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Syncs the file and gives it its entry's name (then syncs the directory): from here on
    /// the profile counts as spooled.
    pub(super) async fn commit(mut self) -> Result<Entry> {
        let done = async {
            self.file.flush().await?;
            self.file.get_ref().sync_all().await
        };
        done.await
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        tokio::fs::rename(&self.tmp, &self.dest)
            .await
            .with_context(|| format!("renaming {}", self.tmp.display()))?;
        let dir = self
            .dest
            .parent()
            .context("spool file without a directory")?;
        super::durable::sync_dir(dir).await?;
        Ok(Entry {
            key: self.key,
            meta: self.meta,
            path: self.dest,
            offset: self.offset,
            bytes: self.written,
        })
    }

    /// Throws away what was written (the capture failed).
    pub async fn discard(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}
