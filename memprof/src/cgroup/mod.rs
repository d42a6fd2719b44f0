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
//!
//! Everything under `/proc/PID/root` is the process's to forge, so a place found there is never
//! reopened by its path: `view` resolves it once into a directory descriptor, verified to be
//! the process's memory cgroup, and reads every file relative to it.
use std::{fmt, path::PathBuf};

pub mod charge;
pub mod hierarchy;
mod view;

use hierarchy::{cgroup_dir, effective_limit, parse_mountinfo, parse_proc_cgroup, CgroupMount};
pub use view::View;

/// Why a process's memory cgroup cannot be read (its limit is then the node's MemTotal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// `/proc/PID/cgroup` names no memory (v1) or unified (v2) cgroup.
    NoMemoryCgroup,
    /// The cgroup's path is under no mount of its kind, neither the process's nor memprof's.
    NotMounted { path: String, v2: bool },
    /// No place it was found at is the process's memory cgroup (each says why), or none
    /// holds a memory cgroup's files any more.
    NoFiles(Vec<String>),
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
            Self::NoFiles(why) => write!(f, "no memory cgroup at {}", why.join(" or ")),
        }
    }
}

/// A place where the process's memory cgroup may be read: a directory and the top of that
/// hierarchy as seen there (the walk for a tighter ancestor limit stops at it), both inside
/// the process's root (`in_target`) or memprof's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub in_target: bool,
    pub dir: PathBuf,
    pub top: PathBuf,
    pub v2: bool,
}

/// The cgroup files of one place, read `up` levels above the process's own cgroup.
pub trait Files {
    fn v2(&self) -> bool;
    /// How many levels there are above the process's cgroup up to the top of this view.
    fn depth(&self) -> usize;
    fn read(&self, up: usize, file: &str) -> Option<String>;
    /// Where this is, for a message.
    fn describe(&self) -> String;
}

/// Where the process's memory cgroup may be reached from memprof: through memprof's own mounts
/// (`own`; first, because on a node the tenant has no say in them) and through the process's
/// (`target_mountinfo`, inside its root). The error names why neither works.
pub fn places(
    proc_cgroup: &str,
    target_mountinfo: &str,
    own: &[CgroupMount],
) -> Result<Vec<Place>, Unreadable> {
    let (v2, path) = parse_proc_cgroup(proc_cgroup).ok_or(Unreadable::NoMemoryCgroup)?;
    let mut places = Vec::new();
    if let Some((dir, top)) = cgroup_dir(own, v2, &path) {
        places.push(Place {
            in_target: false,
            dir,
            top,
            v2,
        });
    }
    if let Some((dir, top)) = cgroup_dir(&parse_mountinfo(target_mountinfo), v2, &path) {
        places.push(Place {
            in_target: true,
            dir,
            top,
            v2,
        });
    }
    if places.is_empty() {
        return Err(Unreadable::NotMounted { path, v2 });
    }
    Ok(places)
}

/// The tightest limit seen through any of `views` (`None`: unlimited); an error when no view
/// leads to a memory cgroup.
pub fn limit<F: Files>(views: &[F]) -> Result<Option<u64>, Unreadable> {
    let limits: Vec<Option<u64>> = views.iter().filter_map(effective_limit).collect();
    if limits.is_empty() {
        return Err(Unreadable::NoFiles(
            views.iter().map(Files::describe).collect(),
        ));
    }
    Ok(limits.into_iter().flatten().min())
}

/// The cgroup's charge: v2 `memory.current`, v1 `memory.usage_in_bytes`, from the first view
/// that has it.
pub fn usage<F: Files>(views: &[F]) -> Option<u64> {
    views.iter().find_map(usage_of)
}

fn usage_of(v: &impl Files) -> Option<u64> {
    let file = if v.v2() {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    v.read(0, file)?.trim().parse().ok()
}

/// The working set of the process's memory cgroup, as the kubelet computes it: usage minus
/// inactive file pages (v2 `memory.current` − `inactive_file`, v1 `memory.usage_in_bytes` −
/// `total_inactive_file`), from the first view that has both.
pub fn working_set<F: Files>(views: &[F]) -> Option<u64> {
    views.iter().find_map(|v| {
        let stat_key = if v.v2() {
            "inactive_file"
        } else {
            "total_inactive_file"
        };
        let usage = usage_of(v)?;
        let stat = v.read(0, "memory.stat")?;
        let inactive: u64 = stat.lines().find_map(|l| {
            let (k, n) = l.split_once(' ')?;
            (k == stat_key).then(|| n.trim().parse().ok())?
        })?;
        Some(usage.saturating_sub(inactive))
    })
}

#[cfg(test)]
mod tests;
