//! One set of kernel programs per node, shared by every memprof on it (e.g. a sidecar per
//! pod). `rss_stat` fires on every page fault of every process on the node, so each instance
//! attaching its own programs would add its whole cost to the node again.
//!
//! The first instance loads the programs, attaches them and pins the shared maps under
//! `<bpffs>/memprof/abi<ABI>-<object hash>/` (another memprof build has another directory: two
//! layouts never share maps); the links are held by live instances only (`links.rs`), so a
//! node without memprof pays nothing per page fault. Later instances load only their own programs
//! (the tail-call targets of `memprof-ebpf/src/emit.rs`, which write into their own ring
//! buffers) and claim a tenant slot keyed by their PID namespace. A tenant is alive while it
//! holds a `flock` on its slot directory (`tenant-<slot>-<pidns inode>`), so a crashed one is
//! found at once, without timeouts, and reclaimed; the last one out unpins everything. Every
//! change happens under a `flock` on `<bpffs>/memprof`.
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, ProgramArray},
    Ebpf,
};
use memprof_common::{MAX_TENANTS, TENANCY_JOIN};
use tracing::{info, warn};

use super::{
    maps::Arm,
    shared_set::{clear_dir, Group},
};
use crate::sys::flock;

/// Maps every instance shares; the others (`EVENTS`, `HEAP`, `HEAP_SCRATCH`, globals) are
/// each instance's own.
pub const SHARED_MAPS: [&str; 15] = [
    "PROCS",
    "GROUPS",
    "FOREIGN",
    "STATS",
    "MM_OWNERS",
    "GO_PROCS",
    "VICTIMS",
    "EPOCH",
    "MM_CACHE",
    "TENANTS",
    "TENANCY",
    "EMIT_BTF",
    "EMIT_TP",
    "WALKERS",
    "OUTBOX",
];
/// The attached programs besides the `rss_stat` one.
pub const ATTACHED: [&str; 4] = [
    "process_exec",
    "process_exit",
    "oom_mark_victim",
    "signal_deliver",
];
/// A tenant's own programs, by program-array map.
pub const OWN: [(&str, &str); 3] = [
    ("EMIT_BTF", "emit_btf"),
    ("EMIT_TP", "emit_tp"),
    ("WALKERS", "heap_walk"),
];

/// This instance's place among the tenants of the kernel programs.
pub struct Tenant {
    pub slot: u32,
    pidns: u32,
    /// The group and the held slot directory; `None` for an instance with its own programs.
    shared: Option<(Group, PathBuf, File)>,
    tenants: HashMap<MapData, u32, u32>,
    tenancy: Array<MapData, u64>,
    arrays: Vec<ProgramArray<MapData>>,
    arm: Arm,
}

impl Tenant {
    /// Claims a slot and routes it to this instance's own programs (already loaded in `bpf`).
    /// With a group, its lock is released once the slot is claimed.
    pub fn claim(group: Option<Group>, own_pidns: u64, bpf: &mut Ebpf, arm: Arm) -> Result<Self> {
        let take =
            |bpf: &mut Ebpf, name: &str| bpf.take_map(name).with_context(|| format!("map {name}"));
        let mut tenant = Tenant {
            slot: 0,
            pidns: own_pidns as u32,
            shared: None,
            tenants: HashMap::try_from(take(bpf, "TENANTS")?)?,
            tenancy: Array::try_from(take(bpf, "TENANCY")?)?,
            arrays: OWN
                .iter()
                .map(|(map, _)| Ok(ProgramArray::try_from(take(bpf, map)?)?))
                .collect::<Result<_>>()?,
            arm,
        };
        if let Some(group) = group {
            tenant.reap(&group.dir);
            let used = tenants_in(&group.dir)?;
            if used.iter().any(|&(_, ns)| ns == tenant.pidns) {
                bail!("another memprof in this PID namespace already uses the node's shared kernel programs; give this one MEMPROF_BPFFS=off");
            }
            let Some(slot) = (0..MAX_TENANTS).find(|s| used.iter().all(|&(u, _)| u != *s)) else {
                bail!(
                    "all {MAX_TENANTS} tenant slots of the node's shared kernel programs are taken"
                );
            };
            let slot_dir = group.dir.join(format!("tenant-{slot}-{}", tenant.pidns));
            fs::create_dir(&slot_dir)
                .with_context(|| format!("creating {}", slot_dir.display()))?;
            let held = File::open(&slot_dir)?;
            flock(&held, false).context("locking the tenant slot")?;
            tenant.slot = slot;
            tenant.shared = Some((group, slot_dir, held));
        }
        for (i, (_, program)) in OWN.iter().enumerate() {
            // The BTF emitter exists only when the `tp_btf` hook is in use.
            if let Some(prog) = bpf.program(program).filter(|p| p.fd().is_ok()) {
                tenant.arrays[i].set(tenant.slot, prog.fd()?, 0)?;
            }
        }
        tenant.tenants.insert(tenant.pidns, tenant.slot, 0)?;
        tenant.bump(tenant.slot);
        tenant.bump(TENANCY_JOIN);
        tenant.arm.bump_epoch();
        if let Some((group, _, _)) = &tenant.shared {
            let _ = unlock(&group.lock);
        }
        Ok(tenant)
    }

    /// Whether this instance shares the programs, and where they are pinned.
    pub fn shared_dir(&self) -> Option<&Path> {
        self.shared.as_ref().map(|(g, _, _)| g.dir.as_path())
    }

    /// Reclaims the slots of tenants that died without leaving (their ring buffers and
    /// programs are freed once nothing routes to them).
    pub fn reap_dead(&mut self) {
        let Some((group, _, _)) = &self.shared else {
            return;
        };
        let dir = group.dir.clone();
        // A duplicate shares the open file description, and with it the lock.
        let Ok(lock) = group.lock.try_clone() else {
            return;
        };
        if flock(&lock, true).is_ok() {
            self.reap(&dir);
            let _ = unlock(&lock);
        }
    }

    fn reap(&mut self, dir: &Path) {
        let Ok(tenants) = tenants_in(dir) else {
            return;
        };
        for (slot, pidns) in tenants {
            let path = dir.join(format!("tenant-{slot}-{pidns}"));
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if flock(&file, false).is_err() {
                continue; // alive
            }
            self.clear(slot, pidns);
            let _ = fs::remove_dir(&path);
            info!(
                slot,
                pidns, "reclaimed the slot of a memprof that exited without leaving"
            );
        }
    }

    fn clear(&mut self, slot: u32, pidns: u32) {
        for array in &mut self.arrays {
            let _ = array.clear_index(&slot);
        }
        if self.tenants.get(&pidns, 0).ok() == Some(slot) {
            let _ = self.tenants.remove(&pidns);
        }
        self.bump(slot);
        self.arm.bump_epoch();
    }

    fn bump(&mut self, idx: u32) {
        let next = self.tenancy.get(&idx, 0).unwrap_or(0).wrapping_add(1);
        if let Err(e) = self.tenancy.set(idx, next, 0) {
            warn!("bumping tenancy generation {idx} failed: {e}");
        }
    }
}

impl Drop for Tenant {
    /// Leaves: routes nothing more to this instance and, when it was the last, unpins the maps
    /// (the programs leave their hooks as the links close).
    fn drop(&mut self) {
        let Some((group, slot_dir, held)) = self.shared.take() else {
            return;
        };
        if flock(&group.lock, true).is_err() {
            return;
        }
        self.clear(self.slot, self.pidns);
        let _ = fs::remove_dir(&slot_dir);
        drop(held);
        self.reap(&group.dir);
        if tenants_in(&group.dir)
            .map(|t| t.is_empty())
            .unwrap_or(false)
        {
            match clear_dir(&group.dir).and_then(|()| Ok(fs::remove_dir(&group.dir)?)) {
                Ok(()) => {
                    info!(dir = %group.dir.display(), "last memprof out: shared kernel programs unpinned")
                }
                Err(e) => warn!("unpinning the shared kernel programs: {e:#}"),
            }
        }
        let _ = unlock(&group.lock);
    }
}

fn unlock(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor.
    match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// `(slot, pidns inode)` of every tenant directory in `dir`.
fn tenants_in(dir: &Path) -> Result<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("tenant-")) else {
            continue;
        };
        if let Some((slot, ns)) = rest.split_once('-') {
            if let (Ok(slot), Ok(ns)) = (slot.parse(), ns.parse()) {
                out.push((slot, ns));
            }
        }
    }
    Ok(out)
}
