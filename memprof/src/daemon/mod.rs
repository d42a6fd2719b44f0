//! The pipeline: detectors feed candidates to one loop that assesses them, asks the policy, and
//! hands captures to background tasks that capture and deliver; their outcomes come back to
//! the policy, which may schedule a retry. `wire` builds the stages from the configuration,
//! `candidate` reads the process a candidate names and decides, `processes` keeps one record
//! per process and forgets processes everywhere, `outcome` carries out decisions (arming the
//! kernel, starting captures) and takes finished captures back, `container_trigger` runs the
//! container trigger, `rss_gate` watches cgroups for the `rss_stat` gate (`exec_settle` holds
//! back the reading of programs started where it watches already), `oom_victim` records
//! the OOM killer's choice, `safety_net` passes over the processes the kernel answers for,
//! `sweep` drops exited processes, `shutdown` finishes on SIGTERM.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Result;
use tokio::{sync::mpsc, task::JoinSet};
use tracing::{error, info};

use crate::{
    assess::{
        self,
        policy::{Outcome, Policy},
        rate::RateLimit,
        scope::Scope,
        Assessor, LimitSource, ProcKey,
    },
    capture::{at_kill, Capturer},
    config::Config,
    daemon::processes::ProcessTable,
    deliver::Deliverer,
    detect::{
        self,
        cgroup_watch::{ContainerEvent, WatchConfig},
        floor::Floor,
        poll, Candidate,
    },
    kernel::Arm,
    serve,
};

/// How often state of exited processes is dropped and the kernel's counters are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Candidates handled in one turn of the loop.
const DRAIN: usize = 1024;

pub async fn run(cfg: Config) -> Result<()> {
    // Handled from the first moment: a pod deleted while memprof starts still gets a graceful
    // exit (leaving the node's shared kernel programs, keeping its spool).
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // First, so the probes answer (not ready yet) while the kernel programs load.
    if let Some(addr) = cfg.listen {
        let bound = serve::start(addr).await?;
        info!(listen = %bound, "metrics and health server listening");
    }
    let mut assessor = Assessor::new(Some(cfg.pods_dir.clone()))?;
    if let Some(own) = assessor.read(std::process::id()) {
        if own.limit_source == LimitSource::Cgroup {
            crate::capture::goheap::fit_dwarf_to(own.limit);
        }
    }
    let (tx, mut rx) = mpsc::channel::<Candidate>(8192);
    let (container_tx, mut container_rx) = mpsc::channel::<ContainerEvent>(1024);
    let (kernel, detector) = detect::start(&cfg, tx.clone())?;
    let (arm, go_targets, heap_ring, rss_gate, listing) = match kernel {
        Some(k) => (Some(k.arm), Some(k.go), Some(k.heap), k.rss_gate, k.listing),
        None => (None, None, None, None, None),
    };
    let deliverer = wire::deliverer(&cfg).await?;
    crate::metrics::health::spool_open(&cfg.spool_dir);
    crate::metrics::health::detector_running(&detector);
    let capturer = Capturer::new(&cfg, go_targets, Arc::clone(&deliverer));
    let capturer = Arc::new(capturer.with_alerts(wire::alerts(&cfg)?));
    if let Some(ring) = heap_ring {
        at_kill::spawn(ring, Arc::clone(&capturer));
    }
    let poll_every = if arm.is_some() {
        cfg.safety_net_interval
    } else {
        cfg.watch_interval
    };
    wire::announce(&cfg, &detector, poll_every, &deliverer.describe());
    let list_every = match arm {
        Some(_) => safety_net::list_every(poll_every),
        None => 1,
    };
    tokio::spawn(poll::run(poll_every, list_every, listing, tx.clone()));
    let retry = Arc::clone(&deliverer);
    tokio::spawn(async move { retry.retry_loop().await });

    let mut state = LoopState {
        assessor,
        policy: Policy::new(cfg.levels_pct.clone(), cfg.cooldown)
            .with_bytes(cfg.levels_bytes.clone()),
        scope: cfg.scope.clone(),
        rate: RateLimit::new(cfg.max_captures_per_minute),
        arm,
        table: ProcessTable::default(),
        captures: JoinSet::new(),
        capturer,
        deliverer,
        retries: tx,
        containers: cfg
            .container_pct
            .map(|pct| assess::container::Containers::new(pct, cfg.cooldown)),
        watchers: HashMap::new(),
        container_tx,
        watch_cfg: WatchConfig {
            pct: cfg.container_pct.unwrap_or(100),
            hysteresis_pct: assess::policy::HYSTERESIS_PCT,
            mode: cfg.container_detector,
            poll: cfg.watch_interval,
        },
        refused: (0, 0),
        poll_every,
        floor: rss_gate.map(|rss| Floor::start(cfg.rss_gate_hold, rss)),
        round: Default::default(),
        quiet_since: HashSet::new(),
        settling: Default::default(),
        sweeps: 0,
    };
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut beat = tokio::time::interval(crate::metrics::health::BEAT_EVERY);
    loop {
        let settled = crate::sys::sleep_until(state.settling.next_due());
        tokio::select! {
            _ = beat.tick() => crate::metrics::health::beat(),
            _ = settled => state.settled(),
            Some(c) = rx.recv() => {
                state.handle(c);
                // What else waits (a listed safety-net round queues every process at once)
                // is taken without a turn of the loop each, to a bound.
                for _ in 0..DRAIN {
                    let Ok(c) = rx.try_recv() else { break };
                    state.handle(c);
                }
            }
            Some(e) = container_rx.recv() => state.container_event(e),
            _ = sweep.tick() => state.sweep(),
            Some(done) = state.captures.join_next(), if !state.captures.is_empty() => {
                match done {
                    Ok((Trigger::Process(key), outcome)) => {
                        crate::metrics::capture("threshold", outcome.as_str());
                        state.finished(key, outcome)
                    }
                    Ok((Trigger::Container(path), outcome)) => {
                        crate::metrics::capture("container", outcome.as_str());
                        state.container_done(&path, outcome)
                    }
                    Err(e) => error!("capture task failed: {e}"),
                }
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    shutdown::finish(&mut state, cfg.shutdown_deadline).await;
    Ok(())
}

mod candidate;
mod container_trigger;
mod exec_settle;
mod oom_victim;
mod outcome;
mod processes;
mod rss_gate;
mod safety_net;
mod shutdown;
mod sweep;
pub mod wire;

/// What a capture task was started for.
enum Trigger {
    Process(ProcKey),
    /// A container (its cgroup path) reached the container level.
    Container(String),
}

struct LoopState {
    assessor: Assessor,
    policy: Policy<ProcKey>,
    scope: Scope,
    rate: RateLimit,
    arm: Option<Arm>,
    /// One record per process followed (see `processes` for every per-process store).
    table: ProcessTable,
    captures: JoinSet<(Trigger, Outcome)>,
    capturer: Arc<Capturer>,
    /// The spool and destination, drained at shutdown.
    deliverer: Arc<Deliverer>,
    /// Where due retries are sent (the candidates' channel).
    retries: mpsc::Sender<Candidate>,
    /// The container trigger's state (`None`: off), its watchers by cgroup path, and where
    /// they send their readings.
    containers: Option<assess::container::Containers>,
    watchers: HashMap<String, tokio::task::AbortHandle>,
    container_tx: mpsc::Sender<ContainerEvent>,
    watch_cfg: WatchConfig,
    /// Last seen counts of processes the kernel refused: its map full, their group's share.
    refused: (u64, u64),
    poll_every: Duration,
    /// The cgroups watched for the `rss_stat` gate (`None`: rss_stat stays attached).
    floor: Option<Floor<ProcKey>>,
    /// The safety net's round under way.
    round: safety_net::Round,
    /// Processes a round found quiet, and nothing has happened to since (`known_round`).
    quiet_since: HashSet<ProcKey>,
    /// Programs started in a watched cgroup, read once they have lived a moment.
    settling: exec_settle::Settling,
    /// Sweeps so far.
    sweeps: u64,
}
