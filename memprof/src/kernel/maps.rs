//! Userspace's handles on the kernel's per-process state: the levels it arms and the Go
//! processes whose heap the kernel walks at the kill. Both only ever touch this instance's
//! own processes (its tenant slot), also when the maps are shared with other instances.
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use aya::maps::{Array, HashMap, MapData, MapError};
use memprof_common::{
    go_key, GoTarget, ProcState, FOREIGN_REFUSED, NR_MM_COUNTERS, STAT_GROUP_FULL, STAT_PROCS_FULL,
};
use tracing::warn;

use super::KernelProc;

/// Userspace's handle on the Go processes whose heap the kernel walks at the kill.
#[derive(Clone)]
pub struct GoTargets {
    pub(super) map: Arc<Mutex<HashMap<MapData, u64, GoTarget>>>,
    pub(super) slot: u32,
}

impl GoTargets {
    pub fn register(&self, ns_pid: u32, target: GoTarget) -> Result<()> {
        let mut map = self.map.lock().expect("go targets lock");
        map.insert(go_key(self.slot, ns_pid), target, 0)?;
        Ok(())
    }

    pub fn unregister(&self, ns_pid: u32) {
        let _ = self
            .map
            .lock()
            .expect("go targets lock")
            .remove(&go_key(self.slot, ns_pid));
    }
}

/// Userspace's handle on the per-process levels.
#[derive(Clone)]
pub struct Arm {
    pub(super) procs: Arc<Mutex<HashMap<MapData, u32, ProcState>>>,
    pub(super) epoch: Arc<Mutex<Array<MapData, u64>>>,
    pub(super) stats: Arc<Mutex<Array<MapData, u64>>>,
    /// Entries per group, and the processes the kernel does not follow (see `recount`).
    pub(super) groups: Arc<Mutex<HashMap<MapData, u32, u64>>>,
    pub(super) foreign: Arc<Mutex<HashMap<MapData, u32, u64>>>,
    /// This instance's tenant slot: entries routed elsewhere are another instance's.
    pub(super) slot: u32,
    /// Capacity of the kernel's process map.
    pub max_procs: u32,
}

/// `bpf_map_update_elem` flag: only replace an existing entry, never create one.
const BPF_EXIST: u64 = 2;

impl Arm {
    /// Arms the process `p` to report once its RSS reaches `level` bytes. `counters` seeds the
    /// classic hook's per-member sizes (bytes: file, anon, swap, shmem), which it otherwise
    /// learns only as each counter changes. Fails, arming nothing, when the kernel's entry is
    /// gone or belongs to another process (it exited, or ran exec, or its PID was reused) or to
    /// another tenant: an exited process is never brought back by arming.
    pub fn set(&self, p: &KernelProc, level: u64, counters: [i64; NR_MM_COUNTERS]) -> Result<()> {
        let mut procs = self.procs.lock().expect("procs lock");
        let current = match procs.get(&p.host_pid, 0) {
            Ok(state) => state,
            Err(MapError::KeyNotFound) => bail!("the process is no longer in the kernel's map"),
            Err(e) => return Err(e.into()),
        };
        if current.identity != p.identity {
            bail!("the kernel's entry now belongs to another process (exec or PID reuse)");
        }
        if current.slot != self.slot {
            bail!(
                "the kernel routes this process to another memprof (tenant slot {})",
                current.slot
            );
        }
        let state = ProcState {
            level,
            counters,
            ..current
        };
        procs.insert(p.host_pid, state, BPF_EXIST)?;
        drop(procs);
        self.bump_epoch();
        Ok(())
    }

    /// Makes every CPU's cached copy of a process's state stale.
    pub fn bump_epoch(&self) {
        let mut epoch = self.epoch.lock().expect("epoch lock");
        let next = epoch.get(&1, 0).unwrap_or(0).wrapping_add(1);
        if let Err(e) = epoch.set(1, next, 0) {
            warn!("bumping the cache epoch failed: {e}");
        }
    }

    /// Sets each group's count in the kernel to the entries it holds (a count may have drifted
    /// in a rare race), then lets every process refused for its group's share be judged again
    /// on its next counter change: one refused during a burst need not stay with the
    /// safety-net poll for its life. How many were let go.
    pub fn recount(&self) -> usize {
        let mut held: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        for (_, state) in self.procs.lock().expect("procs lock").iter().flatten() {
            if state.group != 0 {
                *held.entry(state.group).or_default() += 1;
            }
        }
        let mut groups = self.groups.lock().expect("groups lock");
        let known: Vec<u32> = groups.keys().flatten().collect();
        for group in known.into_iter().chain(held.keys().copied()) {
            let _ = groups.insert(group, held.get(&group).copied().unwrap_or(0), 0);
        }
        drop(groups);
        let mut foreign = self.foreign.lock().expect("foreign lock");
        let refused: Vec<u32> = foreign
            .iter()
            .flatten()
            .filter(|(_, v)| v & FOREIGN_REFUSED != 0)
            .map(|(pid, _)| pid)
            .collect();
        for pid in &refused {
            let _ = foreign.remove(pid);
        }
        refused.len()
    }

    /// How many times a process found the kernel's process map full, and how many times its
    /// group's share of it.
    pub fn refused(&self) -> (u64, u64) {
        let stats = self.stats.lock().expect("stats lock");
        let get = |i| stats.get(&i, 0).unwrap_or(0);
        (get(STAT_PROCS_FULL), get(STAT_GROUP_FULL))
    }
}
