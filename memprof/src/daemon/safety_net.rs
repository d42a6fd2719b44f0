//! The safety net beside the kernel detector: each round of the procfs poll reads every process
//! the kernel does not answer for, and passes over the quiet rest. A process is quiet while
//! nothing has changed that the kernel would not report: it was read below its first level and
//! nothing happened since (no capture made, running or due), the limit of its cgroup reads what
//! its level was set against, and the kernel has refused no process since. Then the kernel
//! reports it the moment its RSS moves: at its armed level, or, never seen by the kernel (idle
//! since before memprof started), at its first change (the kernel's first sight). Reading it
//! anyway changed nothing, and beside thousands of idle processes it was most of memprof's idle
//! CPU. A process found quiet is not looked at again until something happens to it or a limit
//! moves: a round's cost is then a lookup per process and one limit read per cgroup.
//! Every `LIST_PERIOD` the processes are listed and every one is looked at, bounding what
//! the kernel could miss unseen: a quiet one at a glance (the same process, in the same
//! cgroup, below its first level: from the kernel's listing, else two small reads), any other
//! read whole. The reads of a round share each cgroup's limit and working set.
use std::time::{Duration, Instant};

use super::{processes::Record, LoopState};
use crate::assess::{
    glance::{glance_listed, Placed, Sighting},
    Assessor, LimitSource, ProcKey, Reading,
};
use crate::detect::{Candidate, Source};
use crate::kernel::ListedProc;

/// What a process's last reading was judged against.
#[derive(Clone, Copy, Debug)]
pub(super) struct LastRead {
    /// Its limit (`Reading::limit`).
    limit: u64,
    /// The kernel's counts of refused processes when it was read.
    refused: (u64, u64),
    /// Its first level then, and where it was: a listed round passes over a quiet process
    /// still there and below that level (`unchanged`).
    level: u64,
    placed: Placed,
}

/// How often the processes are listed and every one is looked at, quiet or not (in rounds:
/// every 30th at the default 10 s); the rounds between read only the processes memprof knows
/// and the kernel does not answer for. What the kernel could miss without a trace (a process moved to
/// another cgroup without exec, one the kernel cannot place in a PID namespace, one forked
/// while `rss_stat` was off its hook into a cgroup nobody watched) is then seen within that
/// time. Listing /proc and reading every process was nearly all of memprof's idle CPU, and
/// grew with the number of processes (the idle table in `docs/benchmarks.md`).
const LIST_PERIOD: Duration = Duration::from_secs(300);

/// Every how many rounds of `every` the safety net lists the processes.
pub(super) fn list_every(every: Duration) -> u64 {
    let every = every.as_millis().max(1);
    LIST_PERIOD.as_millis().div_ceil(every).max(1) as u64
}

/// The round under way.
#[derive(Default)]
pub(super) struct Round {
    started: Option<Instant>,
    /// The kernel's counts of refused processes at its start.
    refused: (u64, u64),
}

impl Record {
    /// Notes what the reading was judged against: its first `level` and where it was
    /// (`Assessor::placed`). An unresolved limit is not noted: such a process is read every
    /// round, its cgroup looked for again.
    pub fn judged(&mut self, reading: &Reading, level: u64, placed: Option<Placed>, round: &Round) {
        let resolved = reading.limit_source != LimitSource::Unresolved;
        self.last = placed.filter(|_| resolved).map(|placed| LastRead {
            limit: reading.limit,
            refused: round.refused,
            level,
            placed,
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

    /// A round's start (the poll's candidates detected at `round`): the kernel's counts of
    /// refused processes are taken then.
    pub(super) fn begin_round(&mut self, round: Instant) {
        if self.round.started != Some(round) {
            self.round = Round {
                started: Some(round),
                refused: self.arm.as_ref().map_or((0, 0), |arm| arm.refused()),
            };
        }
    }

    /// A round that did not list the processes (`Source::Known`): each process read before is
    /// read again unless quiet. One found quiet stays passed over (`quiet_since`) until
    /// something happens to it (a candidate names it, a capture of it ends, it is forgotten)
    /// or some cgroup's limit moves: a round then costs a lookup per process and a limit read
    /// per cgroup, not a look at each (most of memprof's idle CPU beside thousands of idle
    /// processes). Once the kernel has refused any process, the processes are listed all the
    /// same: which ones it refused, nobody but the listing knows.
    pub(super) fn known_round(&mut self, round: Instant) {
        self.begin_round(round);
        let pids = match self.round.refused {
            (0, 0) => {
                if self.assessor.limits_moved(round) {
                    self.quiet_since.clear();
                }
                self.table.pids_but(&self.quiet_since)
            }
            _ => {
                self.quiet_since.clear();
                crate::sys::pidns::listed()
            }
        };
        let me = std::process::id();
        for ns_pid in pids.into_iter().filter(|&p| p != me) {
            match self.quiet(ns_pid, round) {
                Some((key, _)) => {
                    self.quiet_since.insert(key);
                }
                None => self.assess(Candidate {
                    ns_pid,
                    kernel: None,
                    detected: round,
                    source: Source::Poll,
                    listed: None,
                }),
            }
        }
    }

    /// Something happened to the process under `pid`: the next round looks at it again.
    pub(super) fn stirred(&mut self, pid: u32) {
        if let Some(key) = self.table.newest(pid) {
            self.quiet_since.remove(&key);
        }
    }

    /// In a listed round: whether the process may be passed over all the same, being quiet
    /// and, at a glance, the same process in the same cgroup, below its first level. What the
    /// listing is there to bound (see `LIST_PERIOD`) changes one of those. The glance is at
    /// what the kernel's listing held of it (`listed`), else at its procfs files.
    pub(super) fn unchanged(
        &mut self,
        pid: u32,
        round: Instant,
        listed: Option<ListedProc>,
    ) -> bool {
        let Some((key, last)) = self.quiet(pid, round) else {
            return false;
        };
        // Where the listing cannot tell (no memory cgroup listed, or one that is not the
        // process's own: cgroup v2 without the controller below it), its files can.
        let procfs = || Assessor::glance(&key, last.level, last.placed);
        let rss = match listed {
            Some(ListedProc {
                start,
                rss: Some(rss),
                memcg,
                ..
            }) => {
                let seen = Sighting { start, rss, memcg };
                glance_listed(&key, last.level, last.placed, seen).or_else(procfs)
            }
            _ => procfs(),
        };
        let Some(rss) = rss else {
            return false;
        };
        // What the OOM record says should the process die: as fresh as a reading's (the
        // working set is read once per cgroup in the round).
        let working_set = self.assessor.working_set_in(&key, Some(round));
        self.capturer.glanced(key, rss, working_set);
        true
    }

    /// Whether a round may pass over this process (see the module's comment): its key and
    /// what it was last judged against when it may.
    fn quiet(&mut self, pid: u32, round: Instant) -> Option<(ProcKey, LastRead)> {
        self.arm.as_ref()?;
        let refused = self.round.refused;
        let key = self.table.newest(pid)?;
        let record = self.table.get(&key)?;
        let last = record.last.filter(|l| l.refused == refused)?;
        // Never reported: the kernel has not seen it yet, unless it refused it (then only the
        // safety net watches it; which ones it refused is not known, so none is passed over
        // once the kernel has refused any).
        let followed = record.armed.is_some() || (!record.reported && refused == (0, 0));
        let quiet = followed
            && record.announced
            && self.policy.untouched(&key)
            && self.assessor.limit_reads(&key, last.limit, round);
        quiet.then_some((key, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_processes_are_listed_every_five_minutes_whatever_the_interval() {
        assert_eq!(list_every(Duration::from_secs(10)), 30);
        assert_eq!(list_every(Duration::from_secs(60)), 5);
        assert_eq!(list_every(Duration::from_secs(7)), 43);
        assert_eq!(list_every(Duration::from_secs(600)), 1);
    }
}
