//! The container trigger's decisions. What the OOM killer judges is the cgroup's charge, not
//! one process's RSS: a container of several processes, each well below the per-process
//! level, is killed all the same. So each container (memory cgroup) memprof sees a process in
//! is watched as a whole: when its working set (usage minus inactive file pages, as the
//! kubelet computes it) reaches `pct` percent of its limit, its largest process that serves a
//! profile is captured, once per crossing. Like the per-process levels, a crossing re-arms
//! when the working set falls `HYSTERESIS_PCT` points of the limit below the level, and the
//! cooldown holds a second capture of the same container.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::{policy::HYSTERESIS_PCT, ProcKey};
use crate::cgroup::View;

/// After a container capture that stored nothing, the next attempt waits this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Capture the container's largest process now; the working set's percent of the limit.
    Capture { percent: f64 },
    /// At or above the level, but this crossing is handled (or the rule named holds it).
    Hold(&'static str),
    /// Below the level.
    Below,
}

/// A container memprof has seen processes in.
struct Group {
    views: Vec<View>,
    /// A watcher runs on `views` (false after it lost them).
    watched: bool,
    members: HashSet<ProcKey>,
    /// This crossing was captured (or a capture is running).
    fired: bool,
    last_stored: Option<Instant>,
    retry_due: Option<Instant>,
}

/// The containers memprof watches, keyed by their memory cgroup path as memprof reads it
/// from `/proc/PID/cgroup` (unique from memprof's point of view, relative or not).
pub struct Containers {
    pct: u8,
    cooldown: Duration,
    groups: HashMap<String, Group>,
}

impl Containers {
    pub fn new(pct: u8, cooldown: Duration) -> Self {
        Self {
            pct,
            cooldown,
            groups: HashMap::new(),
        }
    }

    pub fn pct(&self) -> u8 {
        self.pct
    }

    /// Records that process `key`, whose view of its cgroup is `views`, lives in the
    /// container at `path`; true when the container needs a watcher on these views: it is new,
    /// or its watcher lost the views it had (their process exited or changed its mounts).
    pub fn note(&mut self, path: &str, views: &[View], key: ProcKey) -> bool {
        let mut new = false;
        let group = self.groups.entry(path.to_string()).or_insert_with(|| {
            new = true;
            Group {
                views: views.to_vec(),
                watched: true,
                members: HashSet::new(),
                fired: false,
                last_stored: None,
                retry_due: None,
            }
        });
        group.members.insert(key);
        if !group.watched && group.views != views {
            group.views = views.to_vec();
            group.watched = true;
            return true;
        }
        new
    }

    /// The container's watcher could no longer read it through its views.
    pub fn lost(&mut self, path: &str) {
        if let Some(g) = self.groups.get_mut(path) {
            g.watched = false;
        }
    }

    /// The container's processes as last seen (some may have exited since).
    pub fn members(&self, path: &str) -> Vec<ProcKey> {
        let mut m: Vec<_> = self
            .groups
            .get(path)
            .into_iter()
            .flat_map(|g| g.members.iter().copied())
            .collect();
        m.sort_by_key(|k| k.pid);
        m
    }

    /// The container's working set is `working_set` of `limit` bytes at `now`: decide.
    pub fn observe(&mut self, path: &str, working_set: u64, limit: u64, now: Instant) -> Decision {
        let Some(g) = self.groups.get_mut(path) else {
            return Decision::Below;
        };
        let level = (limit as u128 * self.pct as u128).div_ceil(100) as u64;
        if working_set < level {
            let margin = (limit as u128 * HYSTERESIS_PCT as u128 / 100) as u64;
            if working_set.saturating_add(margin) < level {
                g.fired = false;
            }
            return Decision::Below;
        }
        if g.fired {
            return Decision::Hold("already captured at this crossing");
        }
        if g.retry_due.is_some_and(|due| now < due) {
            return Decision::Hold("a failed capture waits for its retry");
        }
        if g.last_stored
            .is_some_and(|t| now.duration_since(t) < self.cooldown)
        {
            return Decision::Hold("MEMPROF_COOLDOWN_SECS");
        }
        g.fired = true;
        Decision::Capture {
            percent: working_set as f64 * 100.0 / limit.max(1) as f64,
        }
    }

    /// Nothing is captured at this crossing after all (its largest process was profiled at
    /// its own level already): it stays handled until it re-arms, without a cooldown.
    pub fn skipped(&mut self, path: &str) {
        if let Some(g) = self.groups.get_mut(path) {
            g.fired = true;
        }
    }

    /// A container capture ended. One that stored nothing is tried again after `RETRY_AFTER`
    /// while the container stays above its level.
    pub fn finished(&mut self, path: &str, stored: bool, now: Instant) {
        let Some(g) = self.groups.get_mut(path) else {
            return;
        };
        if stored {
            g.last_stored = Some(now);
            g.retry_due = None;
        } else {
            g.fired = false;
            g.retry_due = Some(now + RETRY_AFTER);
        }
    }

    /// Forgets processes (`gone`). After exits, a container left without any is forgotten
    /// too and its path returned (its watcher stops); after an exec it stays, as the process
    /// is noted again at its next reading.
    pub fn forget(&mut self, gone: impl Fn(&ProcKey) -> bool, exec: bool) -> Vec<String> {
        let mut emptied = Vec::new();
        self.groups.retain(|path, g| {
            g.members.retain(|k| !gone(k));
            let keep = exec || !g.members.is_empty();
            if !keep {
                emptied.push(path.clone());
            }
            keep
        });
        emptied
    }
}

/// One of a container's processes at the moment of a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub key: ProcKey,
    pub comm: String,
    pub rss: u64,
    /// It serves a profile: a pprof endpoint was found, or its Go heap is readable.
    pub serves: bool,
}

/// The process to capture: the largest that serves a profile, else the largest.
pub fn choose(members: &[Member]) -> Option<&Member> {
    let largest = |serving: bool| {
        members
            .iter()
            .filter(|m| m.serves || !serving)
            .max_by_key(|m| (m.rss, std::cmp::Reverse(m.key.pid)))
    };
    largest(true).or_else(|| largest(false))
}

/// `pid:comm:MiB` for each member, largest first, for the log line.
pub fn describe(members: &[Member]) -> String {
    let mut sorted: Vec<_> = members.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.rss));
    let each: Vec<String> = sorted
        .iter()
        .map(|m| format!("{}:{}:{}MiB", m.key.pid, m.comm, m.rss >> 20))
        .collect();
    each.join(",")
}

#[cfg(test)]
mod tests;
