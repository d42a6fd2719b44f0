//! Assess: re-read a candidate's RSS from procfs and its memory limit through `cgroup` (a
//! `Reading`), say who it is in Kubernetes terms (`identity`), and decide: `policy` (levels,
//! hysteresis, cooldown, retries), `container` (the container trigger), `scope` (which
//! processes are watched), `rate` (captures per minute). `process` names a process (`ProcKey`)
//! and which ones every store forgets (`Forget`); `glance` tells whether a process read before
//! is as it was, for the safety net to pass over.
pub mod container;
pub mod glance;
pub mod identity;
mod locate;
pub mod policy;
mod process;
pub mod rate;
pub mod scope;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Weak},
    time::Instant,
};

use anyhow::{Context, Result};
use procfs::FromRead;

pub use crate::cgroup::View as CgroupDir;
use crate::cgroup::{self, hierarchy, View};
use locate::{Found, Located};
pub use process::{alive, memory_cgroup_now, Forget, ProcKey, Running};

/// Where `Reading::limit` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSource {
    /// The process's memory cgroup (the tightest limit up its hierarchy).
    Cgroup,
    /// The node's MemTotal: the cgroup has no limit.
    Unlimited,
    /// The node's MemTotal: the process's cgroup could not be found (logged once).
    Unresolved,
}

/// What a process looks like right now.
#[derive(Clone, Debug)]
pub struct Reading {
    pub key: ProcKey,
    pub comm: String,
    pub rss: u64,
    /// RSS by kind in bytes, in `rss_stat` member order: file, anon, swap, shmem.
    pub counters: [i64; 4],
    pub limit: u64,
    pub limit_source: LimitSource,
    /// Namespace, pod and container, when the process runs in Kubernetes.
    pub identity: Arc<identity::Identity>,
    /// When the reading was complete: the decision follows it at once, so the time from
    /// detection to here is what deciding took (logged with every profile stored).
    pub at: Instant,
}

impl Reading {
    /// RSS as a percentage of the limit.
    pub fn percent(&self) -> f64 {
        self.rss as f64 * 100.0 / self.limit.max(1) as f64
    }
}

/// Reads processes and their limits. Holds what does not change (memprof's own cgroup mounts,
/// the node's memory size) and where each process's cgroup was found.
pub struct Assessor {
    own_mounts: Vec<hierarchy::CgroupMount>,
    mem_total: u64,
    located: HashMap<ProcKey, Located>,
    /// Each memory cgroup (`v2`, path) found, while a process in it is located.
    by_cgroup: HashMap<(bool, String), Weak<Found>>,
    /// The kubelet's pod log tree, when memprof can see it (node mode).
    pods: Option<identity::PodsTree>,
    /// memprof runs in the node's PID namespace (one memprof for every pod).
    node_wide: bool,
    /// Each cgroup's limit as read in the safety net's current round (see `limit_reads`).
    round: locate::RoundLimits,
    /// Each cgroup's limit as `limits_moved` last read it, by where it was found.
    seen_limits: HashMap<usize, Option<Option<u64>>>,
}

impl Assessor {
    /// `pods_dir`: the kubelet's `/var/log/pods`, used when it exists.
    pub fn new(pods_dir: Option<PathBuf>) -> Result<Self> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
        let meminfo =
            procfs::Meminfo::from_file("/proc/meminfo").context("reading /proc/meminfo")?;
        Ok(Self {
            own_mounts: hierarchy::parse_mountinfo(&mountinfo),
            mem_total: meminfo.mem_total,
            located: HashMap::new(),
            by_cgroup: HashMap::new(),
            pods: pods_dir.filter(|d| d.is_dir()).map(identity::PodsTree::new),
            node_wide: crate::sys::pidns::own().ok() == Some(crate::sys::pidns::INITIAL),
            round: Default::default(),
            seen_limits: HashMap::new(),
        })
    }

    /// `None` when the process is gone or has no memory of its own (a kernel thread).
    pub fn read(&mut self, pid: u32) -> Option<Reading> {
        self.read_in(pid, None)
    }

    /// As `read`, in the safety net's round `round`: each cgroup's limit is read once in it.
    pub fn read_in(&mut self, pid: u32, round: Option<Instant>) -> Option<Reading> {
        let status = procfs::process::Status::from_read(open(pid, "status")?).ok()?;
        let (rss, counters) = rss_of(&status)?;
        let key = ProcKey {
            pid,
            start: start_time(pid)?,
        };
        let (limit, limit_source) = match self.limit(key, &status.name, round) {
            Ok(Some(limit)) => (limit, LimitSource::Cgroup),
            Ok(None) => (self.mem_total, LimitSource::Unlimited),
            Err(()) => (self.mem_total, LimitSource::Unresolved),
        };
        let identity = self
            .located
            .get(&key)
            .map(|l| Arc::clone(&l.identity))
            .unwrap_or_default();
        Some(Reading {
            key,
            comm: status.name,
            rss,
            counters,
            limit,
            limit_source,
            identity,
            at: Instant::now(),
        })
    }

    /// `/proc/PID/cgroup` read at its last reading says.
    pub fn cgroup_path(&self, key: &ProcKey) -> String {
        self.located
            .get(key)
            .and_then(|l| hierarchy::parse_proc_cgroup(&l.proc_cgroup))
            .map(|(_, path)| path)
            .unwrap_or_default()
    }

    /// The process's cgroup path, and its verified directory (where its `memory.stat` is read
    /// from) when the cgroup was found.
    pub fn cgroup_of(&self, key: &ProcKey) -> (String, Option<View>) {
        let dir = self.views(key).and_then(|v| v.first()).cloned();
        (self.cgroup_path(key), dir)
    }

    /// Where the process's memory cgroup can be read, when it was found.
    pub fn views(&self, key: &ProcKey) -> Option<&[View]> {
        Some(
            self.located
                .get(key)?
                .views
                .as_ref()
                .as_ref()
                .ok()?
                .as_slice(),
        )
    }

    /// What the process's memory cgroup's charge is made of now (see `cgroup::charge`).
    pub fn charge(&self, key: &ProcKey) -> Option<cgroup::charge::Charge> {
        cgroup::charge::charge(self.views(key)?)
    }

    /// The working set of the process's memory cgroup now (see `cgroup::working_set`).
    pub fn working_set(&self, key: &ProcKey) -> Option<u64> {
        cgroup::working_set(self.views(key)?)
    }

    /// Whose share of the capture budget the process's captures count against: its pod when
    /// memprof watches the node and the pod is known, otherwise its container (memory cgroup).
    pub fn tenant(&self, key: &ProcKey) -> String {
        let pod = self
            .located
            .get(key)
            .and_then(|l| l.identity.pod_uid.as_ref());
        match pod {
            Some(uid) if self.node_wide => format!("pod {uid}"),
            _ => format!("cgroup {}", self.cgroup_path(key)),
        }
    }

    /// Forgets where processes' cgroups are: an exec'd one's mounts are final now, and who it
    /// is is looked up afresh.
    pub fn forget(&mut self, which: Forget<'_>) {
        self.retain(|k| !which.covers(k));
    }

    /// Forgets every process but those `keep` names (`memprof top`'s screen), and the cgroups
    /// no process is located in any more.
    pub fn retain(&mut self, keep: impl Fn(&ProcKey) -> bool) {
        self.located.retain(|k, _| keep(k));
        self.by_cgroup.retain(|_, found| found.strong_count() > 0);
    }
}

/// The process's start time in clock ticks since boot (`/proc/PID/stat`).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = procfs::process::Stat::from_read(open(pid, "stat")?).ok()?;
    Some(stat.starttime)
}

fn open(pid: u32, file: &str) -> Option<std::fs::File> {
    std::fs::File::open(format!("/proc/{pid}/{file}")).ok()
}

/// RSS (file + anon + shmem, as the kernel's `rss_stat` counts it) from /proc/<pid>/status.
fn rss_of(status: &procfs::process::Status) -> Option<(u64, [i64; 4])> {
    let kib = |v: Option<u64>| v.unwrap_or(0) * 1024;
    let rss = kib(Some(status.vmrss?));
    let counters = [
        kib(status.rssfile) as i64,
        kib(status.rssanon) as i64,
        kib(status.vmswap) as i64,
        kib(status.rssshmem) as i64,
    ];
    Some((rss, counters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_from_recorded_status() {
        let text = include_bytes!("../../tests/fixtures/proc-status.go-service");
        let status = procfs::process::Status::from_read(&text[..]).unwrap();
        let (rss, counters) = rss_of(&status).unwrap();
        assert_eq!(status.name, "leaky");
        assert_eq!(rss, 421_364 * 1024);
        assert_eq!(counters, [5_012 * 1024, 416_352 * 1024, 0, 0]);
        assert_eq!(counters.iter().sum::<i64>() as u64, rss);
    }

    #[test]
    fn kernel_thread_has_no_rss() {
        let text = include_bytes!("../../tests/fixtures/proc-status.kthread");
        let status = procfs::process::Status::from_read(&text[..]).unwrap();
        assert!(rss_of(&status).is_none());
    }

    #[test]
    fn percent_of_limit() {
        let r = Reading {
            key: ProcKey { pid: 1, start: 1 },
            comm: "x".into(),
            rss: 400 << 20,
            counters: [0; 4],
            limit: 512 << 20,
            limit_source: LimitSource::Cgroup,
            identity: Default::default(),
            at: Instant::now(),
        };
        assert!((r.percent() - 78.125).abs() < 1e-9);
    }
}
