//! Assess: re-read a candidate's RSS from procfs and its memory limit through `cgroup` (a
//! `Reading`), say who it is in Kubernetes terms (`identity`), and decide: `policy` (levels,
//! hysteresis, cooldown, retries), `container` (the container trigger), `scope` (which
//! processes are watched), `rate` (captures per minute). `process` names a process (`ProcKey`)
//! and which ones every store forgets (`Forget`).
pub mod container;
pub mod identity;
pub mod policy;
mod process;
pub mod rate;
pub mod scope;

use std::{
    collections::HashMap,
    io::Read,
    path::PathBuf,
    sync::{Arc, Weak},
};

use anyhow::{Context, Result};
use procfs::FromRead;
use tracing::warn;

pub use crate::cgroup::View as CgroupDir;
use crate::cgroup::{self, hierarchy, Unreadable, View};
pub use process::{alive, Forget, ProcKey};

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
}

impl Reading {
    /// RSS as a percentage of the limit.
    pub fn percent(&self) -> f64 {
        self.rss as f64 * 100.0 / self.limit.max(1) as f64
    }
}

/// A mountinfo larger than this (a process with tens of thousands of mounts) is read this far:
/// a cgroup mount past it is not found, and only that process's limit is unknown.
const MOUNTINFO_MAX: u64 = 1 << 20;
/// `/proc/PID/cgroup`: one line per hierarchy, its path at most a few KiB.
const PROC_CGROUP_MAX: u64 = 64 << 10;

/// Where a memory cgroup was found: shared by every process in it (one descriptor per place,
/// however many processes a cgroup holds).
type Found = Result<Vec<View>, Unreadable>;

/// Where a process's cgroup was found, valid while its `/proc/PID/cgroup` reads the same.
struct Located {
    proc_cgroup: String,
    views: Arc<Found>,
    identity: Arc<identity::Identity>,
    /// Whether the failure to find the limit has been logged (once per process).
    warned: bool,
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
        })
    }

    /// `None` when the process is gone or has no memory of its own (a kernel thread).
    pub fn read(&mut self, pid: u32) -> Option<Reading> {
        let status = procfs::process::Status::from_read(open(pid, "status")?).ok()?;
        let (rss, counters) = rss_of(&status)?;
        let key = ProcKey {
            pid,
            start: start_time(pid)?,
        };
        let (limit, limit_source) = match self.limit(key, &status.name) {
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
        })
    }

    /// The process's limit (`None`: unlimited), read from its own view of its cgroup. Where
    /// the cgroup is cannot change without `/proc/PID/cgroup` changing, so it is looked up
    /// once per process and cgroup; the limit itself is read every time (it can be resized).
    fn limit(&mut self, key: ProcKey, comm: &str) -> Result<Option<u64>, ()> {
        let proc_cgroup = read_proc(key.pid, "cgroup", PROC_CGROUP_MAX).ok_or(())?;
        let cached = self
            .located
            .get(&key)
            .is_some_and(|l| l.proc_cgroup == proc_cgroup);
        if !cached {
            self.locate(key, proc_cgroup.clone(), false);
        }
        let mut limit = self.read_limit(&key);
        if limit.is_err() && cached {
            // The process may have changed its mounts since (a container runtime sets them
            // up after placing the process in its cgroup), or the cgroup was made anew: look
            // again, from scratch, before giving up.
            self.locate(key, proc_cgroup, true);
            limit = self.read_limit(&key);
        }
        let located = self.located.get_mut(&key).expect("just located");
        limit.map_err(|why| {
            if !std::mem::replace(&mut located.warned, true) {
                warn!(
                    pid = key.pid,
                    comm = comm.escape_debug().to_string(),
                    "memory limit unknown, measuring against the node's MemTotal: {why}"
                );
            }
        })
    }

    /// Finds the process's memory cgroup: where another process in the same cgroup found it,
    /// unless `fresh`, else through both memprof's and the process's mounts, verified.
    fn locate(&mut self, key: ProcKey, proc_cgroup: String, fresh: bool) {
        let mountinfo = read_proc(key.pid, "mountinfo", MOUNTINFO_MAX).unwrap_or_default();
        let memory = hierarchy::parse_proc_cgroup(&proc_cgroup);
        let known = memory
            .as_ref()
            .filter(|_| !fresh)
            .and_then(|m| self.by_cgroup.get(m)?.upgrade())
            .filter(|found| found.is_ok());
        let views = known.unwrap_or_else(|| {
            let found = Arc::new(find_cgroup(
                key.pid,
                &proc_cgroup,
                &mountinfo,
                &self.own_mounts,
            ));
            if let Some(m) = memory {
                self.by_cgroup.insert(m, Arc::downgrade(&found));
            }
            found
        });
        let identity = Arc::new(identity::resolve(
            &proc_cgroup,
            &mountinfo,
            self.pods.as_ref(),
        ));
        let warned = self.located.get(&key).is_some_and(|l| l.warned);
        self.located.insert(
            key,
            Located {
                proc_cgroup,
                views,
                identity,
                warned,
            },
        );
    }

    fn read_limit(&self, key: &ProcKey) -> Result<Option<u64>, Unreadable> {
        match &*self.located[key].views {
            Ok(views) => cgroup::limit(views),
            Err(why) => Err(why.clone()),
        }
    }

    /// The process's memory cgroup path (the memory line on v1, the unified one on v2), as
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

    /// The working set of the process's memory cgroup now (see `cgroup::working_set`).
    pub fn working_set(&self, key: &ProcKey) -> Option<u64> {
        cgroup::working_set(self.views(key)?)
    }

    /// Forgets where processes' cgroups are: an exec'd one's mounts are final now, and who it
    /// is is looked up afresh.
    pub fn forget(&mut self, which: Forget) {
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

/// Up to `max` bytes of a procfs file of the process, cut after its last whole line.
fn read_proc(pid: u32, file: &str, max: u64) -> Option<String> {
    let mut bytes = Vec::new();
    open(pid, file)?.take(max).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 == max {
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(whole);
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The process's memory cgroup, found and verified at each place it may be reached from.
fn find_cgroup(
    pid: u32,
    proc_cgroup: &str,
    mountinfo: &str,
    own: &[hierarchy::CgroupMount],
) -> Found {
    let places = cgroup::places(proc_cgroup, mountinfo, own)?;
    let (mut views, mut why) = (Vec::new(), Vec::new());
    for place in &places {
        match View::open(place, pid) {
            Ok(v) => views.push(v),
            Err(e) => why.push(e),
        }
    }
    if views.is_empty() {
        return Err(Unreadable::NoFiles(why));
    }
    Ok(views)
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
        };
        assert!((r.percent() - 78.125).abs() < 1e-9);
    }
}
