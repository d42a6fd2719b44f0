//! The loop's table of processes: one record per process it follows, and `forget`, the one
//! place that lists every store keeping something per process — this table, the policy, the
//! assessor's cgroup cache, the container trigger, the `rss_stat` gate's cgroups and capture's
//! own (who each process was, its Go heap, its endpoint) — used alike after an exec and by the
//! sweep of exited ones.
use std::collections::{HashMap, HashSet};

use tracing::warn;

use super::LoopState;
use crate::{
    assess::{Forget, ProcKey},
    kernel::KernelProc,
};

/// Processes the table holds at most: far above what one node runs, so that a PID storm
/// cannot grow memprof without bound between two sweeps.
const MAX_RECORDS: usize = 1 << 16;

/// What the loop knows of one process.
#[derive(Default)]
pub(super) struct Record {
    /// Announced in the log ("watching process").
    pub announced: bool,
    /// Looked at for a Go heap and an endpoint.
    pub discovered: bool,
    /// The process as the kernel reported it (needed to arm a level).
    pub kernel: Option<KernelProc>,
    /// The level armed in the kernel now.
    pub armed: Option<u64>,
    /// The kernel has reported the process (so it has an entry in the kernel's map).
    pub reported: bool,
    /// What the last reading's decision was made against (see `safety_net`).
    pub last: Option<super::safety_net::LastRead>,
}

#[derive(Default)]
pub(super) struct ProcessTable {
    records: HashMap<ProcKey, Record>,
    /// The start time of the newest process read under each PID, followed or not: which
    /// process a PID names now (the safety net's lookup, the sweep's `Running`), and so
    /// which PIDs any store may hold (an exec of one that is not here forgets nothing).
    newest: HashMap<u32, u64>,
    /// Whether a full table was logged since the last sweep.
    warned_full: bool,
    /// Whether a process was read for the first time, or refused for want of room, since the
    /// sweep last listed them.
    grown: bool,
}

impl ProcessTable {
    /// Whether a process with this PID may be looked at: the table has room, or holds it
    /// already. Asked before any store takes the process in. A full table is logged once per
    /// sweep; a new process is looked at again at its next event, after the sweep made room.
    pub fn has_room_for(&mut self, pid: u32) -> bool {
        if self.records.len() < MAX_RECORDS || self.records.keys().any(|k| k.pid == pid) {
            return true;
        }
        // The next sweep lists the processes, to make room.
        self.grown = true;
        if !std::mem::replace(&mut self.warned_full, true) {
            warn!(
                max = MAX_RECORDS,
                "the process table is full; new processes wait for the next sweep"
            );
        }
        false
    }

    /// The process was just read.
    pub fn read(&mut self, key: ProcKey) {
        self.grown |= self.newest.insert(key.pid, key.start) != Some(key.start);
    }

    /// Whether a process was read for the first time, or refused, since the last listing.
    pub fn grown(&self) -> bool {
        self.grown
    }

    /// The sweep listed the processes.
    pub fn listed(&mut self) {
        self.grown = false;
    }

    /// Every PID a process was read under, but those whose newest process is in `but`.
    pub fn pids_but(&self, but: &HashSet<ProcKey>) -> Vec<u32> {
        self.newest
            .iter()
            .filter(|&(&pid, &start)| !but.contains(&ProcKey { pid, start }))
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// The newest process read under this PID.
    pub fn newest(&self, pid: u32) -> Option<ProcKey> {
        let start = *self.newest.get(&pid)?;
        Some(ProcKey { pid, start })
    }

    /// The process's record, made at first sight (`None`: no room, see `has_room_for`).
    pub fn record(&mut self, key: ProcKey) -> Option<&mut Record> {
        if self.records.len() >= MAX_RECORDS && !self.records.contains_key(&key) {
            return None;
        }
        Some(self.records.entry(key).or_default())
    }

    pub fn get(&self, key: &ProcKey) -> Option<&Record> {
        self.records.get(key)
    }

    pub fn get_mut(&mut self, key: &ProcKey) -> Option<&mut Record> {
        self.records.get_mut(key)
    }

    /// Drops the records of the processes `gone`; the sweep also drops which process their
    /// PIDs name, which an exec leaves as it is (the key stays: see `newest`).
    fn forget(&mut self, gone: impl Fn(&ProcKey) -> bool, sweep: bool) {
        self.records.retain(|k, _| !gone(k));
        if sweep {
            self.newest
                .retain(|&pid, &mut start| !gone(&ProcKey { pid, start }));
        }
        self.warned_full &= !sweep;
    }
}

impl LoopState {
    /// Forgets processes everywhere memprof keeps them.
    pub(super) fn forget(&mut self, which: Forget<'_>) {
        let gone = |k: &ProcKey| which.covers(k);
        let exec = matches!(which, Forget::Exec(_));
        self.table.forget(gone, !exec);
        self.quiet_since.retain(|k| !gone(k));
        self.policy.forget(gone, exec);
        self.assessor.forget(which);
        self.capturer.forget(which);
        let emptied = self.containers.as_mut().map(|c| c.forget(gone, exec));
        for path in emptied.unwrap_or_default() {
            if let Some(w) = self.watchers.remove(&path) {
                w.abort();
            }
        }
        // An exec'd process keeps its key and cgroup: it is read again (`exec_seen`).
        if let Some(floor) = self.floor.as_mut().filter(|_| !exec) {
            floor.forget(gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32) -> ProcKey {
        ProcKey { pid, start: 1 }
    }

    #[test]
    fn a_record_is_made_at_first_sight_and_forgotten() {
        let mut t = ProcessTable::default();
        t.record(key(7)).unwrap().armed = Some(42);
        assert_eq!(t.get(&key(7)).unwrap().armed, Some(42));
        t.forget(|k| k.pid == 7, true);
        assert!(t.get(&key(7)).is_none());
    }

    #[test]
    fn a_pid_names_the_newest_process_read_under_it() {
        let mut t = ProcessTable::default();
        t.read(ProcKey { pid: 7, start: 1 });
        t.read(ProcKey { pid: 7, start: 9 });
        assert_eq!(t.newest(7), Some(ProcKey { pid: 7, start: 9 }));
        t.forget(|k| k.start == 9, true);
        assert_eq!(t.newest(7), None);
    }

    #[test]
    fn a_round_looks_at_every_pid_but_the_newest_processes_passed_over() {
        let mut t = ProcessTable::default();
        for (pid, start) in [(7, 1), (8, 1), (8, 2), (9, 1)] {
            t.read(ProcKey { pid, start });
        }
        let passed = HashSet::from([key(7), ProcKey { pid: 8, start: 1 }]);
        let mut pids = t.pids_but(&passed);
        pids.sort_unstable();
        assert_eq!(
            pids,
            [8, 9],
            "PID 8 names a newer process than the one passed over"
        );
    }

    #[test]
    fn the_sweep_lists_again_after_a_new_process_or_a_refusal() {
        let mut t = ProcessTable::default();
        t.read(key(7));
        assert!(t.grown(), "a new process");
        t.listed();
        t.read(key(7));
        assert!(!t.grown(), "the same process read again");
        t.read(ProcKey { pid: 7, start: 2 });
        assert!(t.grown(), "its PID taken by another");
        t.listed();
        for pid in 0..MAX_RECORDS as u32 {
            t.record(key(pid)).unwrap();
        }
        assert!(!t.has_room_for(u32::MAX));
        assert!(t.grown(), "room is to be made");
    }

    #[test]
    fn a_full_table_refuses_new_processes_until_room_is_made() {
        let mut t = ProcessTable::default();
        for pid in 0..MAX_RECORDS as u32 {
            t.record(key(pid)).unwrap();
        }
        assert!(!t.has_room_for(u32::MAX));
        assert!(t.record(key(u32::MAX)).is_none());
        assert!(t.has_room_for(3), "a known process keeps its record");
        assert!(t.record(key(3)).is_some());
        t.forget(|k| k.pid == 3, true);
        assert!(t.has_room_for(u32::MAX));
        assert!(t.record(key(u32::MAX)).is_some());
    }
}
