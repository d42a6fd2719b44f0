//! Detect: notice that a process may be nearing its limit. The kernel detector (`ebpf`)
//! reports armed crossings within microseconds; the procfs poll (`poll`) is the fallback when
//! BPF is unavailable and a slow safety net beside it.
mod arm;
mod attach;
pub mod btf;
pub mod container;
pub mod ebpf;
mod group;
pub mod layout;
mod links;
pub(crate) mod pin;
pub mod poll;
mod tenancy;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use memprof_common::Identity;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{Config, DetectorChoice};
use aya::maps::{MapData, RingBuf};
use ebpf::{Arm, GoTargets, Hook, Kernel};

/// A process worth a look.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// PID in memprof's namespace (0 when the kernel saw a process memprof cannot see).
    pub ns_pid: u32,
    /// The process as the kernel knows it, when the kernel reported it (needed to arm it).
    pub kernel: Option<KernelProc>,
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
    /// The process's container reached the container level (`MEMORY_CONTAINER_PERCENTAGE`):
    /// its working set's percent of the limit in tenths, and what noticed it.
    Container {
        percent_tenths: u32,
        via: &'static str,
    },
    /// A failed capture's retry is due.
    Retry,
    /// A capture was stored: the next level is due.
    NextLevel,
    /// The OOM killer chose this process.
    OomVictim,
    /// The process ran exec: a new program.
    Exec,
    /// `memprof capture --pid`.
    Manual,
}

/// A process as the kernel knows it: its host PID and identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelProc {
    pub host_pid: u32,
    pub identity: Identity,
}

impl KernelProc {
    /// The start time in clock ticks, as `/proc/PID/stat` gives it, when the kernel knew it.
    pub fn start_ticks(&self) -> Option<u64> {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        (self.identity.start_ns != 0).then(|| self.identity.start_ns / (1_000_000_000 / hz))
    }
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

/// What the daemon keeps of a loaded kernel detector.
pub struct KernelHandles {
    pub arm: Arm,
    pub go: GoTargets,
    pub heap: RingBuf<MapData>,
}

/// Loads the kernel detector the configuration asks for, falling back to polling under `auto`.
/// Returns the kernel's handles (none when polling) and the detector's name.
pub fn start(cfg: &Config, tx: mpsc::Sender<Candidate>) -> Result<(Option<KernelHandles>, String)> {
    let hooks: &[Hook] = match cfg.detector {
        DetectorChoice::Auto => &[Hook::Btf, Hook::Classic],
        DetectorChoice::Btf => &[Hook::Btf],
        DetectorChoice::Classic => &[Hook::Classic],
        DetectorChoice::Poll => &[],
    };
    let mut failures = Vec::new();
    for &hook in hooks {
        match Kernel::load(hook, cfg.max_procs, cfg.bpffs.as_deref()) {
            Ok(mut kernel) => {
                if kernel.pays_alone {
                    warn!(
                        "kernel programs: {}; every memprof like this one adds their cost to each page fault on the node",
                        kernel.sharing
                    );
                } else {
                    info!("kernel programs: {}", kernel.sharing);
                }
                let handles = KernelHandles {
                    arm: kernel.arm(),
                    go: kernel.go_targets(),
                    heap: kernel.take_heap_ring()?,
                };
                let name = match kernel.rss_layout {
                    Some(layout) => format!("ebpf {} ({layout:?} counters)", kernel.hook),
                    None => format!("ebpf {}", kernel.hook),
                };
                tokio::spawn(async move {
                    if let Err(e) = kernel.run(tx).await {
                        error!(
                            "ring buffer reader stopped: {e:#}; only the safety-net poll remains"
                        );
                    }
                });
                return Ok((Some(handles), name));
            }
            Err(e) => {
                warn!("{hook} unavailable: {e:#}");
                failures.push(format!("{hook}: {e:#}"));
            }
        }
    }
    if cfg.detector != DetectorChoice::Auto && cfg.detector != DetectorChoice::Poll {
        bail!(
            "detector {:?} could not start: {}",
            cfg.detector,
            failures.join("; ")
        );
    }
    if !failures.is_empty() {
        warn!(
            "BPF detectors unavailable; falling back to polling procfs every {:?}",
            cfg.watch_interval
        );
    }
    Ok((None, "procfs poll".to_string()))
}
