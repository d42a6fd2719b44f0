//! The pipeline: detectors feed candidates to one loop that assesses them, asks the policy, and
//! hands captures to background tasks that capture and deliver.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use tokio::{sync::mpsc, task::JoinSet};
use tracing::{debug, error, info, warn};

use crate::{
    assess::{
        policy::{Decision, Policy},
        Assessor, Reading,
    },
    capture::{listener, pprof::Pprof},
    config::{Config, Destination, DetectorChoice},
    deliver::{
        key::{object_key, KeyParts, Place},
        sink::Sink,
        spool::Spool,
        Deliverer,
    },
    detect::{
        ebpf::{Arm, Hook, Kernel},
        poll, Candidate, Source,
    },
};

/// How long in-flight captures may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How often state of exited processes is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Everything a capture task needs, shared between tasks.
struct Shared {
    pprof: Pprof,
    deliverer: Deliverer,
    place: Place,
    key_prefix: String,
}

pub async fn run(cfg: Config) -> Result<()> {
    let assessor = Assessor::new()?;
    let pprof = Pprof::new(
        cfg.pprof_port,
        &cfg.pprof_path,
        cfg.capture_timeout,
        cfg.capture_max_bytes,
    )?;
    let sink = match &cfg.destination {
        Destination::S3 { bucket, region } => Sink::s3(bucket, region).await?,
        Destination::Local(dir) => Sink::local(dir),
    };
    let deliverer = Deliverer::new(Spool::open(&cfg.spool_dir)?, sink);
    let shared = Arc::new(Shared {
        pprof,
        deliverer,
        place: Place::from_env(),
        key_prefix: cfg.key_prefix.clone(),
    });

    let (tx, mut rx) = mpsc::channel::<Candidate>(8192);
    let (arm, detector) = start_detector(&cfg, tx.clone())?;
    let poll_every = if arm.is_some() {
        cfg.safety_net_interval
    } else {
        cfg.watch_interval
    };
    info!(
        detector,
        poll_every_ms = poll_every.as_millis() as u64,
        threshold_pct = cfg.threshold_pct,
        destination = shared.deliverer.describe(),
        pprof = shared.pprof.url(),
        "memprof started"
    );
    tokio::spawn(poll::run(poll_every, tx));
    let retry = Arc::clone(&shared);
    tokio::spawn(async move { retry.deliverer.retry_loop().await });

    let mut state = LoopState {
        assessor,
        policy: Policy::new(cfg.threshold_pct, cfg.cooldown),
        arm,
        hosts: HashMap::new(),
        armed: HashMap::new(),
        captures: JoinSet::new(),
        shared,
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            Some(c) = rx.recv() => state.handle(c),
            _ = sweep.tick() => state.sweep(),
            Some(done) = state.captures.join_next(), if !state.captures.is_empty() => {
                if let Err(e) = done { error!("capture task failed: {e}") }
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!(in_flight = state.captures.len(), "shutting down");
    let drain = async { while state.captures.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("in-flight captures did not finish in time; spooled profiles are sent on the next start");
    }
    Ok(())
}

/// Loads the kernel detector the configuration asks for, falling back to polling under `auto`.
fn start_detector(cfg: &Config, tx: mpsc::Sender<Candidate>) -> Result<(Option<Arm>, String)> {
    let hooks: &[Hook] = match cfg.detector {
        DetectorChoice::Auto => &[Hook::Btf, Hook::Classic],
        DetectorChoice::Btf => &[Hook::Btf],
        DetectorChoice::Classic => &[Hook::Classic],
        DetectorChoice::Poll => &[],
    };
    let mut failures = Vec::new();
    for &hook in hooks {
        match Kernel::load(hook) {
            Ok(kernel) => {
                let arm = kernel.arm();
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
                return Ok((Some(arm), name));
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

struct LoopState {
    assessor: Assessor,
    policy: Policy,
    arm: Option<Arm>,
    /// ns PID → host PID, learned from kernel events (needed to arm a level).
    hosts: HashMap<u32, u32>,
    /// ns PID → level currently armed in the kernel.
    armed: HashMap<u32, u64>,
    captures: JoinSet<()>,
    shared: Arc<Shared>,
}

impl LoopState {
    fn handle(&mut self, c: Candidate) {
        tracing::trace!(?c, "candidate");
        if let Source::OomVictim = c.source {
            info!(
                pid = c.ns_pid,
                host_pid = c.host_pid,
                "OOM killer chose process"
            );
            return;
        }
        if c.ns_pid == 0 || c.ns_pid == std::process::id() {
            return;
        }
        match (c.host_pid, c.source) {
            (Some(host), Source::Kernel { .. }) => {
                self.hosts.insert(c.ns_pid, host);
                // The kernel disarms a process when it reports it.
                self.armed.remove(&c.ns_pid);
            }
            // The kernel already watches an armed process: the safety net skips it, so its
            // cost does not grow with the number of processes memprof watches.
            (_, Source::Poll) if self.armed.contains_key(&c.ns_pid) => return,
            _ => {}
        }
        let Some(reading) = self.assessor.read(c.ns_pid) else {
            return;
        };
        match self
            .policy
            .observe(c.ns_pid, reading.rss, reading.limit, Instant::now())
        {
            Decision::Arm(level) => self.arm_level(c.ns_pid, level, &reading),
            Decision::Capture => self.capture(c, reading),
            Decision::Hold(reason) => debug!(pid = c.ns_pid, ?reason, "above threshold, holding"),
        }
    }

    fn arm_level(&mut self, pid: u32, level: u64, reading: &Reading) {
        let (Some(arm), Some(&host)) = (&self.arm, self.hosts.get(&pid)) else {
            return;
        };
        if self.armed.get(&pid) == Some(&level) {
            return;
        }
        arm.set(host, pid, level, reading.counters);
        self.armed.insert(pid, level);
        debug!(pid, host_pid = host, level, rss = reading.rss, "armed");
    }

    fn capture(&mut self, c: Candidate, reading: Reading) {
        let shared = Arc::clone(&self.shared);
        self.captures.spawn(async move {
            let pid = c.ns_pid;
            let percent = reading.percent();
            if !listener::listens_on(pid, shared.pprof.port()) {
                warn!(
                    pid,
                    comm = reading.comm,
                    percent = format!("{percent:.1}"),
                    port = shared.pprof.port(),
                    "over the threshold, but the process serves no pprof endpoint; nothing captured"
                );
                return;
            }
            let fetch_start = Instant::now();
            let profile = match shared.pprof.capture().await {
                Ok(p) => p,
                Err(e) => {
                    warn!(
                        pid,
                        comm = reading.comm,
                        percent = format!("{percent:.1}"),
                        "capture failed: {e:#}"
                    );
                    return;
                }
            };
            let key = object_key(&KeyParts {
                prefix: &shared.key_prefix,
                place: &shared.place,
                comm: &reading.comm,
                pid,
                percent,
                kind: profile.kind,
                extension: profile.extension,
                time: chrono::Utc::now(),
            });
            let detector = match c.source {
                Source::Kernel { .. } => "ebpf",
                _ => "poll",
            };
            let store_start = Instant::now();
            let ms = |from: Instant, to: Instant| format!("{:.2}", (to - from).as_secs_f64() * 1e3);
            match shared.deliverer.deliver(&key, &profile.bytes).await {
                Ok(()) => info!(
                    pid,
                    comm = reading.comm,
                    rss = reading.rss,
                    limit = reading.limit,
                    unlimited = reading.unlimited,
                    percent = format!("{percent:.1}"),
                    bytes = profile.bytes.len(),
                    key,
                    detector,
                    detect_to_stored_ms = ms(c.detected, Instant::now()),
                    assess_ms = ms(c.detected, fetch_start),
                    fetch_ms = ms(fetch_start, store_start),
                    store_ms = ms(store_start, Instant::now()),
                    "profile stored"
                ),
                Err(e) => warn!(
                    pid,
                    key, "profile kept in the spool, delivery failed: {e:#}"
                ),
            }
        });
    }

    fn sweep(&mut self) {
        let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
        self.policy.retain(alive);
        self.hosts.retain(|pid, _| alive(*pid));
        self.armed.retain(|pid, _| alive(*pid));
    }
}
