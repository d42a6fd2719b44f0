//! Durable files: what memprof writes (spool entries, profiles in a local directory) is
//! complete under its final name or not there at all, and survives a crash of the node.
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `parts` (concatenated) to `dest` through a hidden temporary file beside it and a
/// rename, so a crash never leaves half a profile under the final name; the file (mode 0600)
/// and then its directory are synced before this returns, so what it wrote survives a crash
/// or power loss of the node.
pub async fn write_atomically(dest: &Path, parts: &[&[u8]]) -> Result<()> {
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
