//! A glance at a process read before: whether it is still the same process, in the memory
//! cgroup it was read in, and clear below its first level. The safety net's listed round
//! passes over such a process without a whole reading: from what the kernel's listing holds
//! of it (nothing opened), or from two small procfs reads where there is no listing or it
//! cannot tell.
use std::{
    hash::{Hash, Hasher},
    sync::LazyLock,
};

use procfs::{process::Stat, FromRead};

use super::{
    locate::{read_proc, PROC_CGROUP_MAX},
    open, Assessor, ProcKey,
};

/// How far the kernel's shared RSS count (`/proc/PID/stat`'s `rss`, the kernel's listing, and
/// what the `rss_stat` program reads) can trail the exact one (`VmRSS`): each CPU holds back
/// less than a batch of pages, `max(32, 2 × CPUs)` (per thread, 64 before 6.2). A process
/// stopped just past its level can stay below it in the shared count, and so unreported by
/// the kernel; a glance leaves a process that close to its level to a whole reading.
static COUNT_LAG: LazyLock<u64> = LazyLock::new(|| {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as u64;
    cpus * (2 * cpus).max(64) * procfs::page_size()
});

/// Whether `rss` from the shared count is below `level` even should it trail by `lag`.
fn clear_of(rss: u64, level: u64, lag: u64) -> bool {
    rss.saturating_add(lag) < level
}

/// Where a process was when it was read: a stamp of its `/proc/PID/cgroup` text, and the
/// inode number of its memory cgroup's directory (the kernel's listing names that). A cgroup
/// made again at the same path has the same text but another inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    stamp: u64,
    memcg: Option<u64>,
}

/// What a listing of the kernel holds of a process: its start time (clock ticks), its resident
/// bytes in the shared count, its memory cgroup's inode.
#[derive(Clone, Copy, Debug)]
pub struct Sighting {
    pub start: u64,
    pub rss: u64,
    pub memcg: Option<u64>,
}

impl Assessor {
    /// Where the process was when it was last located.
    pub fn placed(&self, key: &ProcKey) -> Option<Placed> {
        let located = self.located.get(key)?;
        Some(Placed {
            stamp: stamp(&located.proc_cgroup),
            memcg: located.memcg,
        })
    }

    /// A glance from procfs: its resident bytes when it is still the same process, placed as
    /// `placed` says, with less than `below` bytes resident. Two small reads
    /// (`/proc/PID/stat` and `/proc/PID/cgroup`) where a whole reading takes its status, stat,
    /// cgroup and limit.
    pub fn glance(key: &ProcKey, below: u64, placed: Placed) -> Option<u64> {
        let stat = Stat::from_read(open(key.pid, "stat")?).ok()?;
        // `rss` counts the pages `VmRSS` counts (file, anonymous, shared), from the kernel's
        // shared count.
        let rss = stat.rss.saturating_mul(procfs::page_size());
        let same = stat.starttime == key.start
            && clear_of(rss, below, *COUNT_LAG)
            && read_proc(key.pid, "cgroup", PROC_CGROUP_MAX)
                .is_some_and(|c| stamp(&c) == placed.stamp);
        same.then_some(rss)
    }
}

/// The same glance from what the kernel's listing holds of the process (`seen`): nothing is
/// read. Its memory cgroup is compared by inode; a process whose memory is charged to an
/// ancestor (cgroup v2 without the controller enabled below it) never matches here, and the
/// caller glances at its files instead. (A process that left its cgroup and came back to one
/// made again at the same path has the same `/proc/PID/cgroup` text; the limit read through
/// the directory it was found in fails then, and it is read whole before any glance.)
pub fn glance_listed(key: &ProcKey, below: u64, placed: Placed, seen: Sighting) -> Option<u64> {
    let same = seen.start == key.start
        && placed.memcg.is_some()
        && seen.memcg == placed.memcg
        && clear_of(seen.rss, below, *COUNT_LAG);
    same.then_some(seen.rss)
}

/// A stamp of a `/proc/PID/cgroup` text, kept per process instead of the text.
fn stamp(text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glance_leaves_a_process_within_the_counts_lag_of_its_level_to_a_reading() {
        let (level, lag) = (1 << 30, 512 << 10);
        assert!(clear_of(level - lag - 1, level, lag));
        assert!(
            !clear_of(level - lag, level, lag),
            "may be past it in VmRSS"
        );
        assert!(!clear_of(level, level, lag));
        assert!(!clear_of(u64::MAX, level, lag));
        assert!(*COUNT_LAG >= 64 * procfs::page_size());
    }

    #[test]
    fn a_glance_passes_over_a_process_only_as_it_was_and_below_its_level() {
        let mut assessor = Assessor::new(None).unwrap();
        let reading = assessor.read(std::process::id()).unwrap();
        let key = reading.key;
        let placed = assessor.placed(&key).unwrap();
        assert!(Assessor::glance(&key, u64::MAX, placed).is_some_and(|rss| rss > 0));
        assert_eq!(Assessor::glance(&key, 1, placed), None, "past its level");
        let moved = Placed {
            stamp: placed.stamp ^ 1,
            ..placed
        };
        assert_eq!(
            Assessor::glance(&key, u64::MAX, moved),
            None,
            "in another cgroup"
        );
        let other = ProcKey {
            start: key.start + 1,
            ..key
        };
        assert_eq!(
            Assessor::glance(&other, u64::MAX, placed),
            None,
            "another process under its PID"
        );
    }

    #[test]
    fn a_listed_glance_passes_over_a_process_only_as_it_was_and_below_its_level() {
        let key = ProcKey { pid: 7, start: 100 };
        let placed = Placed {
            stamp: 1,
            memcg: Some(42),
        };
        let seen = Sighting {
            start: 100,
            rss: 10 << 20,
            memcg: Some(42),
        };
        let level = 1 << 30;
        assert_eq!(glance_listed(&key, level, placed, seen), Some(10 << 20));
        let cases = [
            (Sighting { start: 101, ..seen }, placed, "another process"),
            (
                Sighting {
                    memcg: Some(43),
                    ..seen
                },
                placed,
                "another cgroup",
            ),
            (
                Sighting {
                    memcg: None,
                    ..seen
                },
                placed,
                "no cgroup listed",
            ),
            (
                seen,
                Placed {
                    memcg: None,
                    ..placed
                },
                "no inode when read",
            ),
            (Sighting { rss: level, ..seen }, placed, "past its level"),
        ];
        for (seen, placed, why) in cases {
            assert_eq!(glance_listed(&key, level, placed, seen), None, "{why}");
        }
    }
}
