//! A process as every stage knows it (`ProcKey`), and which processes are forgotten (`Forget`):
//! one value that every per-process store takes, so that exec and the sweep of exited
//! processes forget through one list (the daemon's `processes`).
use super::start_time;

/// A process, as distinct from its PID: the PID in memprof's namespace and its start time
/// (clock ticks since boot, `/proc/PID/stat`), so a reused PID is another process.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ProcKey {
    pub pid: u32,
    pub start: u64,
}

/// Which processes to forget, and why: stores keep different things across an exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forget {
    /// The process with this PID ran exec: a new program, looked at afresh. Its PID and start
    /// time stay, so its key does too.
    Exec(u32),
    /// Every process no longer alive (the periodic sweep; exits are noticed there).
    Exited,
}

impl Forget {
    /// Whether `key` is one of the processes to forget.
    pub fn covers(self, key: &ProcKey) -> bool {
        match self {
            Forget::Exec(pid) => key.pid == pid,
            Forget::Exited => !alive(*key),
        }
    }
}

/// Whether the process still runs (its PID is not gone, nor taken by another process).
pub fn alive(key: ProcKey) -> bool {
    start_time(key.pid) == Some(key.start)
}
