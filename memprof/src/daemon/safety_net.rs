//! The safety net beside the kernel detector: each round of the procfs poll reads every process
//! the kernel does not answer for, and passes over the quiet rest. A process is quiet while
//! nothing has changed that the kernel would not report: it was read below its first level and
//! nothing happened since (no capture made, running or due), the limit of its cgroup reads what
//! its level was set against, and the kernel has refused no process since. Then the kernel
//! reports it the moment its RSS moves: at its armed level, or, never seen by the kernel (idle
//! since before memprof started), at its first change (the kernel's first sight). Reading it
//! anyway changed nothing, and beside thousands of idle processes it was most of memprof's idle
//! CPU. A round's cost is then one /proc listing and one limit read per cgroup. Every
//! `FULL_EVERY` rounds all are read anyway, bounding what the kernel could miss unseen.
use std::time::Instant;

use super::{processes::Record, LoopState};
use crate::assess::{LimitSource, Reading};

/// What a process's last reading was judged against.
#[derive(Clone, Copy, Debug)]
pub(super) struct LastRead {
    /// Its limit (`Reading::limit`).
    limit: u64,
    /// The kernel's counts of refused processes when it was read.
    refused: (u64, u64),
}

/// Every this many rounds (once a minute at the default 10 s) every process is read, quiet or
/// not: what the kernel could miss without a trace (a process moved to another cgroup without
/// exec, one the kernel cannot place in a PID namespace, a cgroup recreated at the same path,
/// rss_stat failing to go back on its hook) is then seen within that time.
const FULL_EVERY: u64 = 6;

/// The round under way.
#[derive(Default)]
pub(super) struct Round {
    started: Option<Instant>,
    /// The kernel's counts of refused processes at its start.
    refused: (u64, u64),
    /// Rounds begun so far.
    count: u64,
}

impl Record {
    /// Notes what the reading was judged against. An unresolved limit is not noted: such a
    /// process is read every round, its cgroup looked for again.
    pub fn judged(&mut self, reading: &Reading, round: &Round) {
        self.last = (reading.limit_source != LimitSource::Unresolved).then_some(LastRead {
            limit: reading.limit,
            refused: round.refused,
        });
    }
}

impl LoopState {
    /// The kernel disarms a process as it reports its crossing: from here on it does not answer
    /// for it, also should the event go unhandled (the table full, the process unreadable).
    pub(super) fn disarmed(&mut self, pid: u32) {
        if let Some(record) = self.table.newest(pid).and_then(|k| self.table.get_mut(&k)) {
            record.armed = None;
        }
    }

    /// Whether the safety net's round (the poll's candidates detected at `round`) may pass over
    /// this process (see the module's comment).
    pub(super) fn quiet(&mut self, pid: u32, round: Instant) -> bool {
        let Some(arm) = &self.arm else {
            return false;
        };
        if self.round.started != Some(round) {
            self.round = Round {
                started: Some(round),
                refused: arm.refused(),
                count: self.round.count + 1,
            };
        }
        if self.round.count.is_multiple_of(FULL_EVERY) {
            return false;
        }
        let refused = self.round.refused;
        let Some(key) = self.table.newest(pid) else {
            return false;
        };
        let Some(record) = self.table.get(&key) else {
            return false;
        };
        let Some(last) = record.last.filter(|l| l.refused == refused) else {
            return false;
        };
        // Never reported: the kernel has not seen it yet, unless it refused it (then only the
        // safety net watches it; which ones it refused is not known, so none is passed over
        // once the kernel has refused any).
        let followed = record.armed.is_some() || (!record.reported && refused == (0, 0));
        followed
            && record.announced
            && self.policy.untouched(&key)
            && self.assessor.limit_reads(&key, last.limit, round)
    }
}
