//! A process as every stage knows it (`ProcKey`), and which processes are forgotten (`Forget`):
//! one value that every per-process store takes, so that exec and the sweep of exited
//! processes forget through one list (the daemon's `processes`).
use std::collections::HashMap;

use super::{
    hierarchy,
    locate::{read_proc, PROC_CGROUP_MAX},
    start_time,
};

/// A process, as distinct from its PID: the PID in memprof's namespace and its start time
/// (clock ticks since boot, `/proc/PID/stat`), so a reused PID is another process.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ProcKey {
    pub pid: u32,
    pub start: u64,
}

/// Which processes to forget, and why: stores keep different things across an exec.
#[derive(Clone, Copy, Debug)]
pub enum Forget<'a> {
    /// The process with this PID ran exec: a new program, looked at afresh. Its PID and start
    /// time stay, so its key does too.
    Exec(u32),
    /// Every process that is not `Running` (the periodic sweep; exits are noticed there).
    Exited(&'a Running),
}

impl Forget<'_> {
    /// Whether `key` is one of the processes to forget.
    pub fn covers(self, key: &ProcKey) -> bool {
        match self {
            Forget::Exec(pid) => key.pid == pid,
            Forget::Exited(running) => !running.runs(key),
        }
    }
}

/// The processes running at a sweep: the PIDs /proc lists, each with the start time of the
/// newest process memprof read under it. One listing answers for every process: asking
/// each one's start time (`alive`) cost a `/proc/PID/stat` read per process and per store at
/// every sweep, most of memprof's idle CPU beside thousands of processes. A PID taken by
/// another process is told apart by the newer start time read when the kernel reported, or
/// the safety net read, the new process.
#[derive(Debug)]
pub struct Running(HashMap<u32, Option<u64>>);

impl Running {
    /// `listed`: the PIDs of memprof's namespace; `newest`: the start time of the newest
    /// process read under a PID, if any was. `None` when the listing failed: memprof lists
    /// itself, so an empty listing is a failed one, and taking it for "every process exited"
    /// would forget them all.
    pub fn of(listed: Vec<u32>, newest: impl Fn(u32) -> Option<u64>) -> Option<Self> {
        if listed.is_empty() {
            return None;
        }
        Some(Self(
            listed.into_iter().map(|pid| (pid, newest(pid))).collect(),
        ))
    }

    fn runs(&self, key: &ProcKey) -> bool {
        self.0
            .get(&key.pid)
            .is_some_and(|newest| newest.is_none_or(|start| start == key.start))
    }
}

/// Whether the process still runs (its PID is not gone, nor taken by another process), read
/// now from its `/proc/PID/stat`.
pub fn alive(key: ProcKey) -> bool {
    start_time(key.pid) == Some(key.start)
}

/// The memory cgroup `/proc/PID/cgroup` names now, as memprof's cgroup namespace sees it (one
/// small read: neither mounts nor limits); `None` once the process is gone.
pub fn memory_cgroup_now(pid: u32) -> Option<String> {
    let text = read_proc(pid, "cgroup", PROC_CGROUP_MAX)?;
    hierarchy::parse_proc_cgroup(&text).map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_runs_while_listed_and_not_replaced() {
        let key = |pid, start| ProcKey { pid, start };
        let running = Running(HashMap::from([(7, Some(100)), (8, None)]));
        assert!(running.runs(&key(7, 100)));
        assert!(
            !running.runs(&key(7, 90)),
            "PID 7 was taken by a newer process"
        );
        assert!(
            running.runs(&key(8, 5)),
            "nothing newer was read under PID 8"
        );
        assert!(!running.runs(&key(9, 5)), "PID 9 is not listed");
        assert!(Forget::Exited(&running).covers(&key(9, 5)));
        assert!(!Forget::Exited(&running).covers(&key(7, 100)));
    }

    #[test]
    fn this_process_runs_now() {
        let me = ProcKey {
            pid: std::process::id(),
            start: start_time(std::process::id()).unwrap(),
        };
        let listed = crate::sys::pidns::listed();
        assert!(Running::of(listed, |_| None).unwrap().runs(&me));
        assert!(
            Running::of(Vec::new(), |_| None).is_none(),
            "a failed listing"
        );
        assert!(alive(me));
    }
}
