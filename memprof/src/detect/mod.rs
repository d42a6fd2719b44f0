//! Detect: notice that a process may be nearing its limit. The kernel detector (`ebpf`)
//! reports armed crossings within microseconds; the procfs poll (`poll`) is the fallback when
//! BPF is unavailable and a slow safety net beside it.
pub mod btf;
pub mod ebpf;
pub mod layout;
pub mod poll;

use std::time::{Duration, Instant};

/// A process worth a look.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// PID in memprof's namespace (0 when the kernel saw a process memprof cannot see).
    pub ns_pid: u32,
    /// Host PID, known when the kernel reported it (needed to arm its level).
    pub host_pid: Option<u32>,
    /// When the detector noticed.
    pub detected: Instant,
    pub source: Source,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The kernel saw RSS reach `level` (0: first sight of the process).
    Kernel { rss: u64, level: u64 },
    /// The procfs poll.
    Poll,
    /// The OOM killer chose this process.
    OomVictim,
}

/// Converts a `bpf_ktime_get_ns()` stamp (CLOCK_MONOTONIC, like `Instant`) into an `Instant`.
pub fn monotonic_from_ktime(ktime_ns: u64) -> Instant {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let now = Instant::now();
    now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(ktime_ns)))
        .unwrap_or(now)
}
