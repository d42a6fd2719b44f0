//! Capture: pull evidence out of a live process. Today that is the Go runtime's heap profile
//! over HTTP (`http`: the endpoint found among the process's sockets, fetched in its network
//! namespace and streamed into the spool by `http::download`) or read from the process's memory
//! (`goheap`), at the threshold (`threshold`)
//! and at the kill (`at_kill`); when neither yields a profile, a generic `snapshot` of what the
//! kernel says of the process is stored instead; `oom_record` stores a record of each kill.
//! `handover` gives each profile's facts to delivery, which names it; `seen` keeps who each
//! process was (the OOM record needs it after the process is gone); `processes` is how the
//! daemon tells capture of processes appearing and going. Other kinds (JVM) plug in here.
pub mod accounting;
pub mod at_kill;
pub mod goheap;
pub mod grew;
mod handover;
pub mod http;
mod kill_memory;
pub mod oom_record;
mod processes;
pub mod seen;
pub mod snapshot;
pub mod summary;
pub mod threshold;

use std::sync::Arc;

use crate::{
    config::{Config, GoHeapMode},
    deliver::{naming::Naming, Deliverer},
    kernel::GoTargets,
};
use http::{endpoint::Endpoints, pprof::Pprof};
use seen::Seen;

/// A captured profile, ready for delivery.
#[derive(Clone, Debug)]
pub struct Profile {
    /// What kind of evidence, used in the file name (e.g. "heap").
    pub kind: &'static str,
    /// File extension (e.g. "pb.gz").
    pub extension: &'static str,
    pub bytes: Vec<u8>,
}

/// Everything a capture needs, shared by the capture tasks. Its state is capture's own: the
/// daemon tells it of processes through `processes.rs`.
pub struct Capturer {
    endpoints: Endpoints,
    deliverer: Arc<Deliverer>,
    /// Who each process is and what it used (see `seen`).
    seen: Seen,
    /// Object keys and metadata.
    naming: Naming,
    go_heap: GoHeapMode,
    /// `MEMORY_CRITICAL_BYTES`, for naming profiles of processes without a limit.
    levels_bytes: Vec<u64>,
    goheap: goheap::registry::Registry,
    read_bounds: goheap::read::Bounds,
    /// One permit per read from process memory under way.
    reads: Arc<tokio::sync::Semaphore>,
    /// The memory accounting of kills whose record is not written yet.
    kills: std::sync::Mutex<kill_memory::KillMemory>,
    /// Each process's first and last heap profile, summarized (what grew, for its record).
    episodes: std::sync::Mutex<grew::Episodes>,
    /// One profile summarized at a time (each may take tens of megabytes to decode).
    summarizing: tokio::sync::Semaphore,
    /// Webhooks told of kills (and, when asked, of each profile).
    alerts: Option<Arc<crate::deliver::alerts::Alerts>>,
}

/// How long what is stored after a kill (the at-kill profile, the OOM record) waits for the
/// process's threshold captures still in flight (reading or symbolizing), so it can name them.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Buckets a read from process memory keeps (a profile with more is marked truncated).
const READ_MAX_BUCKETS: usize = 100_000;
/// Stack frames of all buckets a read keeps: 32 MiB of PCs, room for the bucket cap at 40
/// frames each (a large Go service's profile has a few hundred thousand; a process forging its
/// bucket list could otherwise list 100,000 buckets of 1,024 frames, 800 MB).
const READ_MAX_FRAMES: usize = 4 << 20;
/// Reads from process memory at once: each holds up to `READ_MAX_FRAMES` and its profile.
const READS_AT_ONCE: usize = 2;

impl Capturer {
    /// Everything from the configuration, delivering through `deliverer`; `go_targets` when
    /// the kernel walks Go heaps at the kill.
    pub fn new(cfg: &Config, go_targets: Option<GoTargets>, deliverer: Arc<Deliverer>) -> Self {
        let pprof = Pprof::new(
            cfg.pprof_port,
            &cfg.pprof_path,
            cfg.capture_timeout,
            cfg.capture_max_bytes,
        );
        // Go programs are still discovered (an endpoint is probed only on Go programs), but
        // with no memory read, none is registered for the kernel's walk.
        let go_targets = go_targets.filter(|_| cfg.go_heap != GoHeapMode::EndpointOnly);
        let goheap = goheap::registry::Registry::new(go_targets)
            .enabling_profiling(cfg.go_enable_profiling)
            .endpoint_only(cfg.go_heap == GoHeapMode::EndpointOnly);
        Self {
            endpoints: Endpoints::new(Arc::new(pprof), cfg.pprof_ports.clone(), goheap.clone()),
            deliverer,
            seen: Seen::default(),
            naming: Naming::from_env(&cfg.key_prefix),
            go_heap: cfg.go_heap,
            levels_bytes: cfg.levels_bytes.clone(),
            goheap,
            read_bounds: goheap::read::Bounds {
                max_buckets: READ_MAX_BUCKETS,
                max_frames: READ_MAX_FRAMES,
                deadline: cfg.capture_timeout,
                max_profile_bytes: cfg.capture_max_bytes,
            },
            reads: Arc::new(tokio::sync::Semaphore::new(READS_AT_ONCE)),
            kills: Default::default(),
            episodes: Default::default(),
            summarizing: tokio::sync::Semaphore::new(1),
            alerts: None,
        }
    }

    /// The same, alerting these webhooks.
    pub fn with_alerts(self, alerts: Option<Arc<crate::deliver::alerts::Alerts>>) -> Self {
        Self { alerts, ..self }
    }
}
