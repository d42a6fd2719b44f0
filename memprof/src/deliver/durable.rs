//! Durable files: what memprof writes (spool entries, profiles in a local directory) is
//! complete under its final name or not there at all, and survives a crash of the node.
use std::path::Path;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Writes `parts` (concatenated) to `dest` through a hidden temporary file beside it and a
/// rename, so a crash never leaves half a profile under the final name; the file (mode 0600)
/// and then its directory are synced before this returns, so what it wrote survives a crash
/// or power loss of the node.
pub async fn write_atomically(dest: &Path, parts: &[&[u8]]) -> Result<()> {
    let (dir, tmp) = temporary(dest)?;
    let write = async {
        let mut f = create(&tmp).await?;
        for part in parts {
            f.write_all(part).await?;
        }
        f.sync_all().await
    };
    write
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    publish(&tmp, dest, dir).await
}

/// As `write_atomically`, with `len` bytes of `src` from `offset` (streamed, not read whole).
pub async fn copy_atomically(dest: &Path, src: &Path, offset: u64, len: u64) -> Result<()> {
    let (dir, tmp) = temporary(dest)?;
    let copy = async {
        let mut from = tokio::fs::File::open(src).await?;
        from.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut f = create(&tmp).await?;
        let copied = tokio::io::copy(&mut from.take(len), &mut f).await?;
        if copied != len {
            return Err(std::io::Error::other(format!("{copied} of {len} bytes")));
        }
        f.sync_all().await
    };
    copy.await
        .with_context(|| format!("copying {} to {}", src.display(), tmp.display()))?;
    publish(&tmp, dest, dir).await
}

/// `len` bytes of `src` from `offset` (a spooled alert: small, bounded by the spool's limits).
pub async fn read_at(src: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let read = async {
        let mut from = tokio::fs::File::open(src).await?;
        from.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut bytes = Vec::with_capacity(len.min(1 << 20) as usize);
        from.take(len).read_to_end(&mut bytes).await?;
        Ok::<_, std::io::Error>(bytes)
    };
    read.await
        .with_context(|| format!("reading {}", src.display()))
}

/// The directory of `dest` and the hidden temporary file beside it.
fn temporary(dest: &Path) -> Result<(&Path, std::path::PathBuf)> {
    let dir = dest.parent().context("path without a directory")?;
    let name = dest.file_name().context("path without a file name")?;
    Ok((dir, dir.join(format!(".{}.tmp", name.to_string_lossy()))))
}

/// Creates `path` (mode 0600) for writing, locked (`flock`) for as long as it is open: a hidden
/// file nobody holds is a crash's leftover (see `leftover`), one being written is not — even
/// when another memprof (`memprof capture` beside the daemon) opens the same spool.
pub(super) async fn create(path: &Path) -> std::io::Result<tokio::fs::File> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?
        .into_std()
        .await;
    crate::sys::flock(&file, false)?;
    Ok(tokio::fs::File::from_std(file))
}

/// Whether `path`, a temporary file, was left by a writer that is gone (nobody holds its lock).
pub fn leftover(path: &Path) -> bool {
    std::fs::File::open(path).is_ok_and(|f| crate::sys::flock(&f, false).is_ok())
}

/// Gives the synced temporary file its final name, durably.
async fn publish(tmp: &Path, dest: &Path, dir: &Path) -> Result<()> {
    tokio::fs::rename(tmp, dest)
        .await
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    sync_dir(dir).await
}

/// Makes a rename or removal in `dir` durable.
pub async fn sync_dir(dir: &Path) -> Result<()> {
    let d = tokio::fs::File::open(dir)
        .await
        .with_context(|| format!("opening {}", dir.display()))?;
    d.sync_all()
        .await
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Creates `dir` and its missing parents with mode 0700 (profiles are a process's memory).
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}
