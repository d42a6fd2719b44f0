//! Assess: re-read a candidate's RSS from procfs and its memory limit from its cgroup, and
//! decide (in `policy`) whether to capture now.
pub mod cgroup;
pub mod policy;

use anyhow::{Context, Result};
use procfs::FromRead;

/// What a process looks like right now.
#[derive(Clone, Debug)]
pub struct Reading {
    pub comm: String,
    pub rss: u64,
    /// RSS by kind in bytes, in `rss_stat` member order: file, anon, swap, shmem.
    pub counters: [i64; 4],
    pub limit: u64,
    /// True when `limit` is the node's MemTotal because the cgroup has no limit.
    pub unlimited: bool,
}

impl Reading {
    /// RSS as a percentage of the limit.
    pub fn percent(&self) -> f64 {
        self.rss as f64 * 100.0 / self.limit.max(1) as f64
    }
}

/// Reads processes and their limits. Holds what does not change: the cgroup mounts and the
/// node's memory size.
pub struct Assessor {
    mounts: Vec<cgroup::CgroupMount>,
    mem_total: u64,
}

impl Assessor {
    pub fn new() -> Result<Self> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
        let meminfo =
            procfs::Meminfo::from_file("/proc/meminfo").context("reading /proc/meminfo")?;
        Ok(Self {
            mounts: cgroup::parse_mountinfo(&mountinfo),
            mem_total: meminfo.mem_total,
        })
    }

    /// `None` when the process is gone or has no memory of its own (a kernel thread).
    pub fn read(&self, pid: u32) -> Option<Reading> {
        let file = std::fs::File::open(format!("/proc/{pid}/status")).ok()?;
        let status = procfs::process::Status::from_read(file).ok()?;
        let (rss, counters) = rss_of(&status)?;
        let limit = cgroup::limit_of(pid, &self.mounts);
        Some(Reading {
            comm: status.name,
            rss,
            counters,
            limit: limit.unwrap_or(self.mem_total),
            unlimited: limit.is_none(),
        })
    }
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
            comm: "x".into(),
            rss: 400 << 20,
            counters: [0; 4],
            limit: 512 << 20,
            unlimited: false,
        };
        assert!((r.percent() - 78.125).abs() < 1e-9);
    }
}
