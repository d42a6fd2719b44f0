//! Programs started in a cgroup the `rss_stat` gate already watches, waiting to be read.
//!
//! Most programs a node starts live for milliseconds: exec probes, shells, `kubelet`'s helpers.
//! Reading each at its exec (status, limit, mounts, executable, sockets) cost memprof about
//! half a millisecond of CPU a program. The read at exec is there so that a new container's
//! cgroup is watched before its process can grow (`rss_gate`); where the cgroup is watched
//! already, its threshold stands for the new process too, so the read waits until the
//! program has lived `SETTLE`, and a program gone by then costs nothing more. The wait is
//! short: the read also finds a Go program's heap and endpoint, which a capture of a
//! program that grows from its start needs early.
use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

/// How long a program in a watched cgroup runs before it is read: longer than most probes
/// and shells live.
pub(super) const SETTLE: Duration = Duration::from_millis(250);
/// Programs waiting at most: beyond it (an exec storm), a program is read at once, as before.
const MAX_WAITING: usize = 1 << 16;

#[derive(Default)]
pub(super) struct Settling {
    /// When each waiting PID is due, in the order they came (every wait is `SETTLE` long).
    due: VecDeque<(Instant, u32)>,
    /// The latest deadline of each waiting PID (a second exec restarts its wait).
    waiting: HashMap<u32, Instant>,
}

impl Settling {
    /// Makes the program with this PID wait; false when too many wait already.
    pub fn defer(&mut self, pid: u32, now: Instant) -> bool {
        if self.waiting.len() >= MAX_WAITING && !self.waiting.contains_key(&pid) {
            return false;
        }
        let at = now + SETTLE;
        self.waiting.insert(pid, at);
        self.due.push_back((at, pid));
        true
    }

    /// When the next wait ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.front().map(|&(at, _)| at)
    }

    /// Up to `max` of the PIDs whose wait has ended by `now` (the rest stay due).
    pub fn take_due(&mut self, now: Instant, max: usize) -> Vec<u32> {
        let mut pids = Vec::new();
        while let Some(&(at, pid)) = self.due.front().filter(|(at, _)| *at <= now) {
            if pids.len() == max {
                break;
            }
            self.due.pop_front();
            // An earlier entry of a PID whose wait restarted is passed over.
            if self.waiting.get(&pid) == Some(&at) {
                self.waiting.remove(&pid);
                pids.push(pid);
            }
        }
        pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_due_once_it_has_lived_settle() {
        let (mut s, t0) = (Settling::default(), Instant::now());
        assert!(s.defer(7, t0));
        assert_eq!(s.next_due(), Some(t0 + SETTLE));
        assert!(s.take_due(t0 + SETTLE / 2, 9).is_empty());
        assert_eq!(s.take_due(t0 + SETTLE, 9), vec![7]);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_second_exec_restarts_the_wait_and_the_pid_is_due_once() {
        let (mut s, t0) = (Settling::default(), Instant::now());
        s.defer(7, t0);
        s.defer(8, t0 + SETTLE / 4);
        s.defer(7, t0 + SETTLE / 2);
        assert_eq!(s.take_due(t0 + SETTLE, 9), Vec::<u32>::new());
        assert_eq!(s.take_due(t0 + SETTLE + SETTLE / 4, 9), vec![8]);
        assert_eq!(s.take_due(t0 + 2 * SETTLE, 9), vec![7]);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_turn_takes_at_most_its_share_and_the_rest_stay_due() {
        let (mut s, t0) = (Settling::default(), Instant::now());
        for pid in 0..5 {
            s.defer(pid, t0);
        }
        assert_eq!(s.take_due(t0 + SETTLE, 2), vec![0, 1]);
        assert_eq!(s.next_due(), Some(t0 + SETTLE), "still due");
        assert_eq!(s.take_due(t0 + SETTLE, 9), vec![2, 3, 4]);
    }

    #[test]
    fn beyond_its_bound_a_program_is_not_deferred() {
        let (mut s, t0) = (Settling::default(), Instant::now());
        for pid in 0..MAX_WAITING as u32 {
            assert!(s.defer(pid, t0));
        }
        assert!(!s.defer(u32::MAX, t0), "full");
        assert!(s.defer(3, t0), "one already waiting may wait anew");
    }
}
