//! The attachments of the node's shared set live exactly as long as a live memprof holds
//! them. Links are never pinned: the creator holds the ones it made, and each instance that
//! joins takes descriptors of the same links by their kernel IDs. When the last instance dies,
//! by SIGKILL too, the kernel closes its descriptors, the programs leave their hooks, and page
//! faults on the node stop paying for a listener that is gone. The pinned maps stay (memory
//! only, no cost per event) until the next instance finds nothing holding them and replaces
//! the set.
use std::{io, os::fd::OwnedFd, path::Path};

use anyhow::{Context, Result};
use aya::{maps::MapData, programs::links::FdLink};

use super::{
    bpffs,
    tenant::{ATTACHED, SHARED_MAPS},
    Hook,
};

/// The links this instance keeps alive: those it made, or those it found.
#[derive(Default)]
pub struct Held {
    made: Vec<FdLink>,
    found: Vec<OwnedFd>,
}

impl Held {
    pub fn made(made: Vec<FdLink>) -> Self {
        Held {
            made,
            found: Vec::new(),
        }
    }

    /// How many links this instance keeps alive (for the log).
    pub fn count(&self) -> usize {
        self.made.len() + self.found.len()
    }
}

/// Whether this process may take descriptors of other processes' links (`CAP_SYS_ADMIN`):
/// the kernel checks the capability before it looks the ID up, so ID 0 (never a link's) tells.
pub fn may_hold_others() -> bool {
    !matches!(bpffs::link_fd_by_id(0), Err(e) if e.kind() == io::ErrorKind::PermissionDenied)
}

/// Descriptors of every link of the set pinned in `dir`, and the hook its `rss_stat` program
/// uses, when the set is whole and alive; `None` when nothing (or not all of it) is attached.
/// A link is the set's when its program uses one of the set's pinned maps.
pub fn find(dir: &Path) -> Result<Option<(Hook, Held)>> {
    let mut maps = Vec::new();
    for name in SHARED_MAPS {
        let pinned = dir.join(name);
        if pinned.exists() {
            let map = MapData::from_pin(&pinned)
                .with_context(|| format!("opening {}", pinned.display()))?;
            maps.push(map.info()?.id());
        }
    }
    // Programs come and go while the kernel is listed: one gone in between is skipped.
    let ours: Vec<(u32, String)> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.iter().any(|id| maps.contains(id)))
        })
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_string())))
        .collect();
    let mut held = Held::default();
    let mut names = Vec::new();
    for link in aya::programs::loaded_links().filter_map(Result::ok) {
        let Some((_, name)) = ours.iter().find(|(id, _)| *id == link.program_id()) else {
            continue;
        };
        match bpffs::link_fd_by_id(link.id()) {
            Ok(fd) => {
                held.found.push(fd);
                names.push(name.as_str());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // detached meanwhile
            Err(e) => return Err(e).context("taking a descriptor of a shared link"),
        }
    }
    tracing::debug!(?names, "links of the shared set found alive");
    let attached = |program: &str| names.iter().any(|n| kernel_name(program) == *n);
    let hook = [Hook::Btf, Hook::Classic]
        .into_iter()
        .find(|h| attached(h.program()));
    Ok(match hook {
        Some(hook) if ATTACHED.iter().all(|p| attached(p)) => Some((hook, held)),
        _ => None,
    })
}

/// A program's name as the kernel keeps it (`BPF_OBJ_NAME_LEN`: 15 bytes and a NUL).
fn kernel_name(program: &str) -> &str {
    &program[..program.len().min(15)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_names_are_cut_at_15_bytes() {
        assert_eq!(super::kernel_name("rss_stat_classic"), "rss_stat_classi");
        assert_eq!(super::kernel_name("oom_mark_victim"), "oom_mark_victim");
    }
}
