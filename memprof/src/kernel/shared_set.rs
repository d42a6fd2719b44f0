//! Finding the node's shared set of kernel programs (`tenant.rs`), or deciding to load this
//! instance's own: where the set is pinned, whether a live instance still holds it
//! (`links.rs`), and the lock over every change to it.
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use memprof_common::ABI_VERSION;
use tracing::warn;

use super::{
    bpffs,
    links::{self, Held},
    offsets, Hook,
};
use crate::sys::flock;

/// How this instance gets its kernel programs.
pub enum Plan {
    /// Loads and attaches its own, unpinned; the reason it does not share.
    Solo(String),
    /// Loads and attaches them, and pins the maps for later instances.
    Create(Group),
    /// Joins the set of earlier instances, which uses this hook; holds its links.
    Join(Group, Hook, Held),
}

/// A pinned set's directory, and the lock over all changes to it.
pub struct Group {
    pub(super) lock: File,
    pub dir: PathBuf,
}

/// Decides how to get the programs and, when sharing, takes the group's lock (held until the
/// tenant has claimed its slot).
pub fn plan(bpffs: Option<&Path>, own_pidns: u64, object: &[u8]) -> Result<Plan> {
    let Some(bpffs) = bpffs else {
        return Ok(Plan::Solo(
            "sharing is off (MEMPROF_BPFFS: share only where the node's pods trust each other)"
                .into(),
        ));
    };
    if own_pidns == offsets::INIT_PIDNS_INUM {
        return Ok(Plan::Solo(
            "memprof runs in the node's PID namespace, where one instance sees every process"
                .into(),
        ));
    }
    if !bpffs::is_bpffs(bpffs) {
        return Ok(Plan::Solo(format!(
            "{} is not a bpffs mount (mount the node's /sys/fs/bpf there)",
            bpffs.display()
        )));
    }
    if !links::may_hold_others() {
        return Ok(Plan::Solo(
            "holding the links of other instances' programs needs CAP_SYS_ADMIN".into(),
        ));
    }
    let root = bpffs.join("memprof");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let lock = File::open(&root).with_context(|| format!("opening {}", root.display()))?;
    flock(&lock, true).with_context(|| format!("locking {}", root.display()))?;
    let dir = root.join(format!("abi{ABI_VERSION}-{:016x}", fnv1a(object)));
    let group = Group { lock, dir };
    if !group.dir.exists() {
        fs::create_dir(&group.dir).with_context(|| format!("creating {}", group.dir.display()))?;
        return Ok(Plan::Create(group));
    }
    match links::find(&group.dir)? {
        Some((hook, held)) => Ok(Plan::Join(group, hook, held)),
        None => {
            warn!(
                dir = %group.dir.display(),
                "replacing a set of shared kernel programs that no live memprof holds (the last one was killed, or died while creating it)"
            );
            clear_dir(&group.dir)?;
            Ok(Plan::Create(group))
        }
    }
}

/// FNV-1a: a stable name for the BPF object, so that only identical builds share.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Removes every pin (and tenant directory) in `dir`.
pub(super) fn clear_dir(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let removed = if path.is_dir() {
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.with_context(|| format!("unpinning {}", path.display()))?;
    }
    Ok(())
}
