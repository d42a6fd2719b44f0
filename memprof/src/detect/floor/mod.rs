//! Detect, coarsely: whether any watched process may be near its level, so that the kernel's
//! `rss_stat` program (which every page fault on the node pays for) need only be attached
//! then (`kernel::gate`). A process's RSS is charged to its memory cgroup, so while the
//! cgroup's usage is below half the lowest level of each process in it, every one of them is
//! far from its level; each watched cgroup has that half mark, and `hold` switches the program.
//!
//! cgroup v1: a usage threshold at the mark (`cgroup_watch::notify`), so nothing is read while
//! idle (usage re-read every 10 s as a safety net, every second while past the mark). cgroup
//! v2 has no usage thresholds: `memory.current` is read every `V2_POLL` (100 ms), which is the
//! race margin the gate costs there (a process must take longer than that to grow from half
//! its level to its level). A process whose cgroup was not found, a cgroup whose usage cannot
//! be read, or a v1 cgroup where no threshold can be set (read-only files) holds the program
//! attached: no detection is traded for cost.
mod hold;

use std::{
    collections::{HashMap, HashSet},
    fmt::Debug,
    hash::Hash,
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    task::AbortHandle,
};

use super::cgroup_watch::notify::Notifier;
use crate::cgroup::{self, Files, View};
use hold::Reach;

/// cgroup v2: how often a watched cgroup's `memory.current` is read.
const V2_POLL: Duration = Duration::from_millis(100);
/// cgroup v1: how often usage is re-read beside the threshold, below the mark and past it.
const V1_SAFETY_NET: Duration = Duration::from_secs(10);
const V1_PAST: Duration = Duration::from_secs(1);
/// How often a cgroup that cannot be watched is tried again.
const BLIND_RETRY: Duration = Duration::from_secs(10);

type Reports = mpsc::UnboundedSender<(String, Reach)>;

/// The watched cgroups, by path, and the processes (by `K`) that cannot be watched by theirs.
pub struct Floor<K> {
    cgroups: HashMap<String, Watched<K>>,
    blind: HashSet<K>,
    reports: Reports,
}

struct Watched<K> {
    /// The directories its watcher reads, and which they are (see `View::identity`).
    views: Vec<View>,
    dirs: Vec<Option<(u64, u64)>>,
    /// Each process's half mark.
    members: HashMap<K, u64>,
    /// The lowest of them, where the watcher sets its threshold.
    mark: watch::Sender<u64>,
    task: AbortHandle,
}

impl<K> Watched<K> {
    fn update_mark(&self) {
        let lowest = self.members.values().copied().min().unwrap_or(u64::MAX);
        self.mark
            .send_if_modified(|m| std::mem::replace(m, lowest) != lowest);
    }
}

impl<K: Copy + Eq + Hash + Debug> Floor<K> {
    /// Starts the gate: `rss` is told whether `rss_stat` must be attached, after `hold` below
    /// every mark before it may be detached.
    pub fn start(hold: Duration, rss: watch::Sender<bool>) -> Self {
        let (reports, rx) = mpsc::unbounded_channel();
        tokio::spawn(hold::run(hold, rx, rss));
        Self {
            cgroups: HashMap::new(),
            blind: HashSet::new(),
            reports,
        }
    }

    /// Process `key`, in the memory cgroup at `path` (read through `views`; `None`: not
    /// found), reaches its lowest level at `level` bytes.
    pub fn note(&mut self, key: K, path: &str, views: Option<&[View]>, level: u64) {
        let Some(views) = views.filter(|v| !path.is_empty() && !v.is_empty()) else {
            if self.blind.insert(key) {
                let why = Reach::Blind("its memory cgroup was not found".into());
                let _ = self.reports.send((blind(&key), why));
            }
            return;
        };
        if self.blind.remove(&key) {
            let _ = self.reports.send((blind(&key), Reach::Gone));
        }
        let mark = level / 2;
        let dirs: Vec<_> = views.iter().map(View::identity).collect();
        if let Some(w) = self.cgroups.get_mut(path) {
            let was = w.members.insert(key, mark);
            if w.dirs == dirs {
                // Each process is noted at every reading: the lowest mark is looked for (over
                // every member) only when one moved.
                if was != Some(mark) {
                    w.update_mark();
                }
                return;
            }
            // The cgroup was removed and made again at its path (a service restarted before
            // the sweep forgot the old one): its watcher reads a directory that is gone, so a
            // new one watches the new directory, for every member.
            w.task.abort();
        }
        let members = match self.cgroups.remove(path) {
            Some(w) => w.members,
            None => HashMap::from([(key, mark)]),
        };
        let lowest = members.values().copied().min().unwrap_or(mark);
        let (tx, rx) = watch::channel(lowest);
        let watcher = watch_cgroup(path.to_string(), views.to_vec(), rx, self.reports.clone());
        let w = Watched {
            views: views.to_vec(),
            dirs,
            members,
            mark: tx,
            task: tokio::spawn(watcher).abort_handle(),
        };
        self.cgroups.insert(path.to_string(), w);
    }

    /// Whether the cgroup at `path` is watched (some process in it was noted), and the
    /// directory watched is still the one there (not removed, maybe made again).
    pub fn watches(&self, path: &str) -> bool {
        self.cgroups
            .get(path)
            .is_some_and(|w| w.views.iter().all(View::present))
    }

    /// Stops watching for processes that are `gone`, and cgroups left without any.
    pub fn forget(&mut self, gone: impl Fn(&K) -> bool) {
        let reports = &self.reports;
        self.blind.retain(|k| {
            let keep = !gone(k);
            if !keep {
                let _ = reports.send((blind(k), Reach::Gone));
            }
            keep
        });
        self.cgroups.retain(|path, w| {
            w.members.retain(|k, _| !gone(k));
            if w.members.is_empty() {
                w.task.abort();
                let _ = reports.send((path.clone(), Reach::Gone));
                return false;
            }
            w.update_mark();
            true
        });
    }
}

fn blind(key: &impl Debug) -> String {
    format!("{key:?}")
}

/// Reports where the cgroup stands whenever that changes, until aborted.
async fn watch_cgroup(path: String, views: Vec<View>, mut mark: watch::Receiver<u64>, to: Reports) {
    let v1 = views.iter().any(|v| !v.v2());
    let mut notifier = Notifier::none();
    let mut armed_at = None;
    let mut reported = None;
    loop {
        let at = *mark.borrow_and_update();
        if v1 && (armed_at != Some(at) || !notifier.thresholds()) {
            notifier = Notifier::threshold(&views, at);
            armed_at = Some(at);
        }
        // Read after the threshold is set: a crossing in between is seen here.
        let reach = match cgroup::usage(&views) {
            // Removed, or emptied: no process is left in it to grow.
            None if !occupied(&views) => Reach::Far,
            None => Reach::Blind("its usage cannot be read".into()),
            Some(_) if v1 && !notifier.thresholds() => {
                Reach::Blind(format!("no usage threshold: {}", notifier.describe()))
            }
            Some(usage) if usage >= at => Reach::Near { usage, mark: at },
            Some(_) => Reach::Far,
        };
        let every = match &reach {
            Reach::Blind(_) => BLIND_RETRY,
            _ if !v1 => V2_POLL,
            Reach::Near { .. } => V1_PAST,
            _ => V1_SAFETY_NET,
        };
        let kind = std::mem::discriminant(&reach);
        if reported != Some(kind) {
            reported = Some(kind);
            if to.send((path.clone(), reach)).is_err() {
                return;
            }
        }
        tokio::select! {
            _ = notifier.wait() => {}
            _ = tokio::time::sleep(every) => {}
            changed = mark.changed() => if changed.is_err() { return },
        }
    }
}

/// Whether a process may still be in the cgroup: its `cgroup.procs` lists one, or cannot be
/// read for another reason than the cgroup being gone (ENOENT, ENODEV: removed).
fn occupied(views: &[View]) -> bool {
    views.iter().any(|v| match v.read_text("cgroup.procs") {
        Ok(procs) => !procs.trim().is_empty(),
        Err(e) => !e.ends_with("(os error 2)") && !e.ends_with("(os error 19)"),
    })
}
