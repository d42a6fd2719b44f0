//! Detect: notice that a process may be nearing its limit, and hand it on as a `Candidate`.
//! The kernel's programs (`ring`) report armed crossings within microseconds; the procfs poll
//! (`poll`) is the fallback when BPF is unavailable and a slow safety net beside it;
//! `cgroup_watch` watches each container's working set, woken by the cgroup's notifications;
//! `floor` tells when a process may be near its level at all, so that the kernel's `rss_stat`
//! program is attached only then. `start` loads the kernel programs, falling back to the poll.
pub mod cgroup_watch;
pub mod floor;
pub mod poll;
pub mod ring;

use std::time::Instant;

use anyhow::{bail, Result};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::{
    config::{Config, DetectorChoice, RssGate},
    kernel::{Arm, GoTargets, Hook, Kernel, KernelProc, ListedProc, Listing},
};
use aya::maps::{MapData, RingBuf};

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
    /// What the kernel's listing held of the process, when the safety net listed it so.
    pub listed: Option<ListedProc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The kernel saw RSS reach `level` (0: first sight of the process).
    Kernel { rss: u64, level: u64 },
    /// The procfs poll.
    Poll,
    /// A round of the safety net that did not list the processes: those known are looked at.
    Known,
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
    /// The OOM killer chose this process; its RSS and the anonymous part at the kill, in bytes
    /// (0 when the kernel's record does not say).
    OomVictim { rss: u64, anon: u64 },
    /// The process ran exec: a new program.
    Exec,
    /// `memprof capture --pid`.
    Manual,
}

impl Source {
    /// What noticed, as the metrics name it.
    pub fn detector(&self) -> &'static str {
        match self {
            Source::Kernel { .. } => "ebpf",
            Source::Poll | Source::Known => "poll",
            Source::Container { via, .. } => via,
            Source::Retry => "retry",
            Source::NextLevel => "next_level",
            Source::OomVictim { .. } => "oom_victim",
            Source::Exec => "exec",
            Source::Manual => "manual",
        }
    }
}

/// What the daemon keeps of a loaded kernel detector.
pub struct KernelHandles {
    pub arm: Arm,
    pub go: GoTargets,
    pub heap: RingBuf<MapData>,
    /// Whether `rss_stat` must be attached (`floor` decides); `None`: always attached.
    pub rss_gate: Option<watch::Sender<bool>>,
    /// The kernel's listing of processes, where it loaded (else the safety net lists /proc).
    pub listing: Option<Listing>,
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
        let loaded = Kernel::load(hook, cfg.max_procs, cfg.at_kill_ring, cfg.bpffs.as_deref());
        // What start-up read of the kernel's BTF is no longer needed.
        crate::sys::release_free_heap();
        match loaded {
            Ok(mut kernel) => {
                if kernel.pays_alone {
                    warn!(
                        "kernel programs: {}; every memprof like this one adds their cost to each page fault on the node",
                        kernel.sharing
                    );
                } else {
                    info!("kernel programs: {}", kernel.sharing);
                }
                let gate = match (cfg.rss_gate, kernel.rss_switchable()) {
                    (RssGate::Off, _) => None,
                    (RssGate::Auto, Err(why)) => {
                        info!("rss_stat gate off: {why}");
                        None
                    }
                    (RssGate::Auto, Ok(())) => Some(watch::channel(true)),
                };
                let (rss_gate, gate_rx) = gate.unzip();
                let handles = KernelHandles {
                    arm: kernel.arm(),
                    go: kernel.go_targets(),
                    heap: kernel.take_heap_ring()?,
                    rss_gate,
                    listing: kernel.listing(),
                };
                let name = match kernel.rss_layout {
                    Some(layout) => format!("ebpf {} ({layout:?} counters)", kernel.hook),
                    None => format!("ebpf {}", kernel.hook),
                };
                tokio::spawn(async move {
                    if let Err(e) = ring::forward(kernel, tx, gate_rx).await {
                        let why = format!(
                            "ring buffer reader stopped: {e:#}; only the safety-net poll remains"
                        );
                        error!("{why}");
                        crate::metrics::health::detector_stopped(&why);
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
        if let Some(level) = perf_event_paranoid().filter(|&l| l > 2) {
            warn!(
                "kernel.perf_event_paranoid is {level}: this kernel lets only CAP_SYS_ADMIN \
                 attach tracepoints; set it to 2 on the node, or grant SYS_ADMIN"
            );
        }
        warn!(
            "BPF detectors unavailable; falling back to polling procfs every {:?}",
            cfg.watch_interval
        );
    }
    Ok((None, "procfs poll".to_string()))
}

/// `kernel.perf_event_paranoid`. Above 2 (a patch Debian and Ubuntu carry, not upstream)
/// tracepoints attach only with CAP_SYS_ADMIN, whatever CAP_PERFMON says.
pub fn perf_event_paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}
