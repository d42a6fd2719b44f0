//! Reading a process's memory cgroup, for assess (its limit) and detect (its container's
//! working set): where the cgroup's files are, found from the process's own view, and what
//! they say (`hierarchy`: parsing mountinfo, `/proc/PID/cgroup` and the limit files).
//!
//! In a pod each container has its own mount namespace, whose `/sys/fs/cgroup` shows only its
//! own cgroup (v1: runc bind-mounts the container's directory; v2: a cgroup namespace rooted
//! at the container's cgroup). memprof's `/sys/fs/cgroup` is therefore the wrong place to look
//! for another container's limit. The process's own mounts are reachable through
//! `/proc/PID/root` and described by `/proc/PID/mountinfo`; both that file and
//! `/proc/PID/cgroup` render cgroup paths relative to the *reader's* cgroup namespace, so they
//! match each other. memprof's own mounts are tried as well: on a node with the host's
//! cgroupfs they reach the pod-level cgroups above the container.
use std::{
    fmt,
    path::{Path, PathBuf},
};

pub mod hierarchy;

use hierarchy::{cgroup_dir, effective_limit, parse_mountinfo, parse_proc_cgroup, CgroupMount};

/// Why a process's memory cgroup cannot be read (its limit is then the node's MemTotal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// `/proc/PID/cgroup` names no memory (v1) or unified (v2) cgroup.
    NoMemoryCgroup,
    /// The cgroup's path is under no mount of its kind, neither the process's nor memprof's.
    NotMounted { path: String, v2: bool },
    /// None of the places it was found at holds a memory cgroup's files.
    NoFiles(Vec<PathBuf>),
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NoMemoryCgroup => write!(
                f,
                "it belongs to no memory cgroup (no memory line in /proc/PID/cgroup)"
            ),
            Self::NotMounted { path, v2 } => {
                let kind = if *v2 { "cgroup2" } else { "v1 memory cgroup" };
                write!(
                    f,
                    "its cgroup {path:?} is under no {kind} mount, neither its own nor memprof's"
                )
            }
            Self::NoFiles(dirs) => {
                let dirs: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
                write!(f, "no memory cgroup at {}", dirs.join(" or "))
            }
        }
    }
}

/// A place where the process's memory cgroup can be read, and the top of that hierarchy as
/// seen there (the walk for a tighter ancestor limit stops at it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub dir: PathBuf,
    pub top: PathBuf,
    pub v2: bool,
}

/// The process's memory cgroup as reachable from memprof: through the process's own mounts
/// (`target_mountinfo`, below `target_root`, i.e. `/proc/PID/root`) and through memprof's
/// (`own`). The error names why neither works.
pub fn views(
    proc_cgroup: &str,
    target_mountinfo: &str,
    target_root: &Path,
    own: &[CgroupMount],
) -> Result<Vec<View>, Unreadable> {
    let (v2, path) = parse_proc_cgroup(proc_cgroup).ok_or(Unreadable::NoMemoryCgroup)?;
    let mut views = Vec::new();
    if let Some((dir, top)) = cgroup_dir(&parse_mountinfo(target_mountinfo), v2, &path) {
        let under_root = |p: &Path| target_root.join(p.strip_prefix("/").unwrap_or(p));
        views.push(View {
            dir: under_root(&dir),
            top: under_root(&top),
            v2,
        });
    }
    if let Some((dir, top)) = cgroup_dir(own, v2, &path) {
        views.push(View { dir, top, v2 });
    }
    if views.is_empty() {
        return Err(Unreadable::NotMounted { path, v2 });
    }
    Ok(views)
}

/// The tightest limit seen through any of `views` (`None`: unlimited); an error when no view
/// leads to a memory cgroup.
pub fn limit(
    views: &[View],
    read: impl Fn(&Path) -> Option<String>,
) -> Result<Option<u64>, Unreadable> {
    let limits: Vec<Option<u64>> = views
        .iter()
        .filter_map(|v| effective_limit(&v.dir, &v.top, v.v2, &read))
        .collect();
    if limits.is_empty() {
        let dirs = views.iter().map(|v| v.dir.clone()).collect();
        return Err(Unreadable::NoFiles(dirs));
    }
    Ok(limits.into_iter().flatten().min())
}

/// The cgroup's charge: v2 `memory.current`, v1 `memory.usage_in_bytes`, from the first view
/// that has it.
pub fn usage(views: &[View], read: impl Fn(&Path) -> Option<String>) -> Option<u64> {
    views.iter().find_map(|v| usage_of(v, &read))
}

fn usage_of(v: &View, read: impl Fn(&Path) -> Option<String>) -> Option<u64> {
    let file = if v.v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    read(&v.dir.join(file))?.trim().parse().ok()
}

/// The working set of the process's memory cgroup, as the kubelet computes it: usage minus
/// inactive file pages (v2 `memory.current` − `inactive_file`, v1 `memory.usage_in_bytes` −
/// `total_inactive_file`), from the first view that has both.
pub fn working_set(views: &[View], read: impl Fn(&Path) -> Option<String>) -> Option<u64> {
    views.iter().find_map(|v| {
        let stat_key = if v.v2 {
            "inactive_file"
        } else {
            "total_inactive_file"
        };
        let usage = usage_of(v, &read)?;
        let stat = read(&v.dir.join("memory.stat"))?;
        let inactive: u64 = stat.lines().find_map(|l| {
            let (k, n) = l.split_once(' ')?;
            (k == stat_key).then(|| n.trim().parse().ok())?
        })?;
        Some(usage.saturating_sub(inactive))
    })
}

#[cfg(test)]
mod tests;
