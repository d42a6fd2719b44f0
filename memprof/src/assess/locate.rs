//! Where a process's memory cgroup is: found through memprof's mounts and the process's own,
//! verified (`cgroup::View`), and shared by every process of the cgroup; relocated from
//! scratch when a reading through it fails. Every procfs file read here is bounded.
use std::{
    collections::HashMap,
    io::Read,
    sync::{Arc, Weak},
    time::Instant,
};

use tracing::warn;

use super::{identity, open, Assessor, ProcKey};
use crate::{
    cgroup::{self, hierarchy, Unreadable, View},
    sys::mounts::Mounts,
};

/// A mountinfo larger than this (a process with tens of thousands of mounts) is read this far:
/// a cgroup mount past it is not found, and only that process's limit is unknown.
const MOUNTINFO_MAX: u64 = 1 << 20;
/// `/proc/PID/cgroup`: one line per hierarchy, its path at most a few KiB.
pub(super) const PROC_CGROUP_MAX: u64 = 64 << 10;

/// Where a memory cgroup was found: shared by every process in it (one descriptor per place,
/// however many processes a cgroup holds).
pub(super) type Found = Result<Vec<View>, Unreadable>;

/// Where a process's cgroup was found, valid while its `/proc/PID/cgroup` reads the same.
pub(super) struct Located {
    pub(super) proc_cgroup: String,
    pub(super) views: Arc<Found>,
    pub(super) identity: Arc<identity::Identity>,
    /// The inode number of the cgroup's directory: the id the kernel's listing gives it.
    pub(super) memcg: Option<u64>,
    /// Whether the failure to find the limit has been logged (once per process).
    warned: bool,
}

/// A cgroup's limit as `cgroup::limit` reads it.
type Limit = Result<Option<u64>, Unreadable>;

/// What was read of each cgroup in a round, by where it was found; the finding is held for the
/// round so that its address names no other while the round lasts.
type ByFinding<T> = HashMap<usize, (Arc<Found>, T)>;

/// Each cgroup's limit and working set read in one round of the safety net: read once per
/// cgroup however many processes it holds (per process, they were most of a full round's
/// reads).
#[derive(Default)]
pub(super) struct RoundLimits {
    round: Option<Instant>,
    read: ByFinding<Limit>,
    working_set: ByFinding<Option<u64>>,
}

impl RoundLimits {
    /// This round's cache, emptied when a new round begins.
    fn at(&mut self, round: Instant) -> &mut Self {
        if self.round != Some(round) {
            *self = Self {
                round: Some(round),
                ..Default::default()
            };
        }
        self
    }
}

impl Assessor {
    /// Whether the process's memory cgroup's limit still reads `limit`, as a reading gave it.
    /// Read once per cgroup in the safety net's round `round`, however many processes it holds.
    pub fn limit_reads(&mut self, key: &ProcKey, limit: u64, round: Instant) -> bool {
        if !self.located.contains_key(key) {
            return false;
        }
        let now = self.read_limit(key, Some(round));
        now.map(|l| l.unwrap_or(self.mem_total)) == Ok(limit)
    }

    /// Whether any cgroup's limit reads otherwise than at the last call: each read once in the
    /// safety net's round `round` (shared with `limit_reads`). A cgroup found for the first
    /// time has not moved: no process in it was judged against an older limit.
    pub fn limits_moved(&mut self, round: Instant) -> bool {
        let found: Vec<Arc<Found>> = self.by_cgroup.values().filter_map(Weak::upgrade).collect();
        let mut now = HashMap::with_capacity(found.len());
        for found in found {
            let at = Arc::as_ptr(&found) as usize;
            let cache = Some(&mut self.round.at(round).read);
            let limit = once_per_round(cache, found, read_limit_of);
            now.insert(at, limit.ok());
        }
        let seen = std::mem::replace(&mut self.seen_limits, now);
        self.seen_limits
            .iter()
            .any(|(at, limit)| seen.get(at).is_some_and(|was| was != limit))
    }

    /// The working set of the process's memory cgroup (see `cgroup::working_set`), read once
    /// per cgroup in the safety net's round `round` when there is one.
    pub fn working_set_in(&mut self, key: &ProcKey, round: Option<Instant>) -> Option<u64> {
        let found = Arc::clone(&self.located.get(key)?.views);
        let cache = round.map(|r| &mut self.round.at(r).working_set);
        once_per_round(cache, found, |f| cgroup::working_set(f.as_ref().ok()?))
    }

    /// The process's limit (`None`: unlimited), read from its own view of its cgroup. Where
    /// the cgroup is cannot change without `/proc/PID/cgroup` changing, so it is looked up
    /// once per process and cgroup; the limit itself is read every time (it can be resized).
    pub(super) fn limit(
        &mut self,
        key: ProcKey,
        comm: &str,
        round: Option<Instant>,
    ) -> Result<Option<u64>, ()> {
        let proc_cgroup = read_proc(key.pid, "cgroup", PROC_CGROUP_MAX).ok_or(())?;
        let cached = self
            .located
            .get(&key)
            .is_some_and(|l| l.proc_cgroup == proc_cgroup);
        let shared = !cached && self.locate(key, proc_cgroup.clone(), false);
        let mut limit = self.read_limit(&key, round);
        if limit.is_err() && (cached || shared) {
            // The process may have changed its mounts since (a container runtime sets them
            // up after placing the process in its cgroup), or the cgroup was made anew at the
            // same path (another process's finding is then stale): look again, from scratch,
            // before giving up.
            self.locate(key, proc_cgroup, true);
            limit = self.read_limit(&key, round);
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
    /// unless `fresh` (true is returned then), else through both memprof's and the process's
    /// mounts, verified.
    fn locate(&mut self, key: ProcKey, proc_cgroup: String, fresh: bool) -> bool {
        let mountinfo = read_proc(key.pid, "mountinfo", MOUNTINFO_MAX).unwrap_or_default();
        let memory = hierarchy::parse_proc_cgroup(&proc_cgroup);
        let known = memory
            .as_ref()
            .filter(|_| !fresh)
            .and_then(|m| self.by_cgroup.get(m)?.upgrade())
            .filter(|found| found.is_ok());
        let shared = known.is_some();
        let views = known.unwrap_or_else(|| {
            let found = find_cgroup(key.pid, &proc_cgroup, &mountinfo, &self.own_mounts);
            // What was read belongs to this process only if it still runs: a PID reused in
            // between would have had another process's root verified for this cgroup.
            if super::start_time(key.pid) != Some(key.start) {
                let gone = "the process exited while its cgroup was being found".to_string();
                return Arc::new(Err(Unreadable::NoFiles(vec![gone])));
            }
            let found = Arc::new(found);
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
                memcg: views
                    .as_ref()
                    .as_ref()
                    .ok()
                    .and_then(|v| Some(v.first()?.identity()?.1)),
                views,
                identity,
                warned,
            },
        );
        shared
    }

    /// The limit through where the process's cgroup was found; read once per cgroup in the
    /// safety net's round `round` when there is one.
    fn read_limit(&mut self, key: &ProcKey, round: Option<Instant>) -> Limit {
        let found = Arc::clone(&self.located[key].views);
        let cache = round.map(|r| &mut self.round.at(r).read);
        once_per_round(cache, found, read_limit_of)
    }
}

/// The limit of the cgroup at `found`, read now.
fn read_limit_of(found: &Found) -> Limit {
    match found {
        Ok(views) => cgroup::limit(views),
        Err(why) => Err(why.clone()),
    }
}

/// `read` of the cgroup at `found`: from the round's `cache`, read into it the first time;
/// read now when there is no round.
fn once_per_round<T: Clone>(
    cache: Option<&mut ByFinding<T>>,
    found: Arc<Found>,
    read: impl FnOnce(&Found) -> T,
) -> T {
    let Some(cache) = cache else {
        return read(&found);
    };
    let (_, value) = cache
        .entry(Arc::as_ptr(&found) as usize)
        .or_insert_with(|| {
            let value = read(&found);
            (found, value)
        });
    value.clone()
}

/// Up to `max` bytes of a procfs file of the process, cut after its last whole line.
pub(super) fn read_proc(pid: u32, file: &str, max: u64) -> Option<String> {
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
    let mounts = Mounts::parse(mountinfo);
    let (mut views, mut why) = (Vec::new(), Vec::new());
    for place in &places {
        match View::open(place, pid, &mounts) {
            Ok(v) => views.push(v),
            Err(e) => why.push(e),
        }
    }
    if views.is_empty() {
        return Err(Unreadable::NoFiles(why));
    }
    Ok(views)
}
