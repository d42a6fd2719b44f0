//! The kernel detector: loads memprof-ebpf, attaches it, reads crossings from the ring buffer
//! and lets the daemon arm per-process levels.
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, MapError, RingBuf},
    programs::{BtfTracePoint, TracePoint},
    Btf as AyaBtf, Ebpf, EbpfLoader,
};
use memprof_common::{
    globals as g, Event, EventKind, GoTarget, ProcState, NR_MM_COUNTERS, STAT_PROCS_FULL,
};
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use super::{btf::Btf, layout, Candidate, KernelProc, Source};

/// The compiled kernel programs, built by build.rs.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memprof-ebpf"));

/// Which `rss_stat` hook to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `tp_btf/rss_stat`: counters read straight from `mm` (≈4 % page-fault overhead).
    Btf,
    /// `tracepoint/kmem/rss_stat`: for kernels without BTF tracepoints (≈10 %).
    Classic,
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hook::Btf => "tp_btf/rss_stat",
            Hook::Classic => "tracepoint/kmem/rss_stat",
        })
    }
}

/// Loaded and attached programs. Dropping it detaches them.
pub struct Kernel {
    pub hook: Hook,
    pub rss_layout: Option<layout::RssLayout>,
    bpf: Ebpf,
    arm: Arm,
    go: GoTargets,
}

/// Userspace's handle on the Go processes whose heap the kernel walks at the kill.
#[derive(Clone)]
pub struct GoTargets(Arc<Mutex<HashMap<MapData, u32, GoTarget>>>);

impl GoTargets {
    pub fn register(&self, ns_pid: u32, target: GoTarget) -> Result<()> {
        let mut map = self.0.lock().expect("go targets lock");
        map.insert(ns_pid, target, 0)?;
        Ok(())
    }

    pub fn unregister(&self, ns_pid: u32) {
        let _ = self.0.lock().expect("go targets lock").remove(&ns_pid);
    }
}

/// Userspace's handle on the per-process levels.
#[derive(Clone)]
pub struct Arm {
    procs: Arc<Mutex<HashMap<MapData, u32, ProcState>>>,
    epoch: Arc<Mutex<Array<MapData, u64>>>,
    stats: Arc<Mutex<Array<MapData, u64>>>,
    /// Capacity of the kernel's process map.
    pub max_procs: u32,
}

/// `bpf_map_update_elem` flag: only replace an existing entry, never create one.
const BPF_EXIST: u64 = 2;

impl Arm {
    /// Arms the process `p` to report once its RSS reaches `level` bytes. `counters` seeds the
    /// classic hook's per-member sizes (bytes: file, anon, swap, shmem), which it otherwise
    /// learns only as each counter changes. Fails, arming nothing, when the kernel's entry is
    /// gone or belongs to another process (it exited, or ran exec, or its PID was reused):
    /// an exited process is never brought back by arming.
    pub fn set(&self, p: &KernelProc, level: u64, counters: [i64; NR_MM_COUNTERS]) -> Result<()> {
        let mut procs = self.procs.lock().expect("procs lock");
        let current = match procs.get(&p.host_pid, 0) {
            Ok(state) => state,
            Err(MapError::KeyNotFound) => bail!("the process is no longer in the kernel's map"),
            Err(e) => return Err(e.into()),
        };
        if current.identity != p.identity {
            bail!("the kernel's entry now belongs to another process (exec or PID reuse)");
        }
        let state = ProcState {
            level,
            counters,
            ..current
        };
        procs.insert(p.host_pid, state, BPF_EXIST)?;
        drop(procs);
        // Make every CPU's cached copy of this level stale.
        let mut epoch = self.epoch.lock().expect("epoch lock");
        let next = epoch.get(&1, 0).unwrap_or(0).wrapping_add(1);
        if let Err(e) = epoch.set(1, next, 0) {
            warn!("bumping the cache epoch failed: {e}");
        }
        Ok(())
    }

    /// How many times a process found the kernel's process map full.
    pub fn procs_full(&self) -> u64 {
        self.stats
            .lock()
            .expect("stats lock")
            .get(&STAT_PROCS_FULL, 0)
            .unwrap_or(0)
    }
}

impl Kernel {
    /// Loads and attaches with `hook`, with room for `max_procs` processes; any failure is
    /// returned so the caller can fall back.
    pub fn load(hook: Hook, max_procs: u32) -> Result<Self> {
        let tracefs = layout::tracefs()?;
        let own_pidns = layout::own_pidns_inum()?;
        let init_pidns = own_pidns == layout::INIT_PIDNS_INUM;
        let mut globals: Vec<(&'static str, u64)> = vec![
            (g::MY_PIDNS_INUM, own_pidns),
            (g::PIDNS_IS_INIT, init_pidns as u64),
            (g::PAGE_SHIFT, layout::page_shift()),
        ];
        let mut rss_layout = None;
        let btf = match Btf::from_sys_fs() {
            Ok(btf) => {
                globals.extend(layout::task_offsets(&btf)?);
                Some(btf)
            }
            // The classic hook attributes events to `current`; in the initial PID namespace
            // no translation is needed, so it runs without BTF.
            Err(_) if hook == Hook::Classic && init_pidns => None,
            Err(e) => {
                return Err(
                    e.context("kernel BTF is needed to read RSS counters and translate PIDs")
                )
            }
        };
        match hook {
            Hook::Btf => {
                let rss = layout::rss_offsets(btf.as_ref().context("tp_btf needs kernel BTF")?)?;
                globals.push((g::RSS_COUNT_OFF, rss.count_off));
                globals.push((g::RSS_STRIDE, rss.stride));
                globals.push((
                    g::RSS_PROBE_READ,
                    (rss.layout == layout::RssLayout::AtomicArray) as u64,
                ));
                rss_layout = Some(rss.layout);
            }
            Hook::Classic => {
                let format = layout::read_format(tracefs, "kmem", "rss_stat")?;
                for (name, field) in [
                    (g::TP_MM_ID_OFF, "mm_id"),
                    (g::TP_CURR_OFF, "curr"),
                    (g::TP_MEMBER_OFF, "member"),
                    (g::TP_SIZE_OFF, "size"),
                ] {
                    globals.push((name, layout::tracepoint_field(&format, field)?));
                }
            }
        }
        let oom_format = layout::read_format(tracefs, "oom", "mark_victim")?;
        globals.push((
            g::TP_OOM_PID_OFF,
            layout::tracepoint_field(&oom_format, "pid")?,
        ));
        let signal_format = layout::read_format(tracefs, "signal", "signal_deliver")?;
        globals.push((
            g::TP_SIG_OFF,
            layout::tracepoint_field(&signal_format, "sig")?,
        ));
        debug!(?globals, "kernel offsets");

        let mut loader = EbpfLoader::new();
        loader.map_max_entries("PROCS", max_procs);
        loader.map_max_entries("MM_OWNERS", max_procs);
        for (name, value) in &globals {
            loader.override_global(name, value, true);
        }
        let mut bpf = loader.load(BPF_OBJECT).context("loading BPF object")?;
        match hook {
            Hook::Btf => {
                let aya_btf = AyaBtf::from_sys_fs()?;
                let prog: &mut BtfTracePoint = program(&mut bpf, "rss_stat_btf")?.try_into()?;
                prog.load("rss_stat", &aya_btf)
                    .context("verifying rss_stat_btf")?;
                prog.attach().context("attaching tp_btf/rss_stat")?;
            }
            Hook::Classic => attach_tracepoint(&mut bpf, "rss_stat_classic", "kmem", "rss_stat")?,
        }
        attach_tracepoint(&mut bpf, "process_exec", "sched", "sched_process_exec")?;
        attach_tracepoint(&mut bpf, "process_exit", "sched", "sched_process_exit")?;
        attach_tracepoint(&mut bpf, "oom_mark_victim", "oom", "mark_victim")?;
        attach_tracepoint(&mut bpf, "signal_deliver", "signal", "signal_deliver")?;

        let procs = HashMap::try_from(bpf.take_map("PROCS").context("map PROCS")?)?;
        let epoch = Array::try_from(bpf.take_map("EPOCH").context("map EPOCH")?)?;
        let stats = Array::try_from(bpf.take_map("STATS").context("map STATS")?)?;
        let go = HashMap::try_from(bpf.take_map("GO_PROCS").context("map GO_PROCS")?)?;
        let arm = Arm {
            procs: Arc::new(Mutex::new(procs)),
            epoch: Arc::new(Mutex::new(epoch)),
            stats: Arc::new(Mutex::new(stats)),
            max_procs,
        };
        Ok(Self {
            hook,
            rss_layout,
            bpf,
            arm,
            go: GoTargets(Arc::new(Mutex::new(go))),
        })
    }

    pub fn arm(&self) -> Arm {
        self.arm.clone()
    }

    pub fn go_targets(&self) -> GoTargets {
        self.go.clone()
    }

    /// The ring buffer of at-kill heap walks, for `capture::goheap::kill`.
    pub fn take_heap_ring(&mut self) -> Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(
            self.bpf.take_map("HEAP").context("map HEAP")?,
        )?)
    }

    /// Forwards ring-buffer events until the receiver goes away. Keeps `self` (and thereby the
    /// attached programs) alive for as long as it runs.
    pub async fn run(mut self, tx: tokio::sync::mpsc::Sender<Candidate>) -> Result<()> {
        let ring = RingBuf::try_from(self.bpf.take_map("EVENTS").context("map EVENTS")?)?;
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged until the
        // AsyncFd (and the ring buffer inside it) is dropped.
        let mut fd =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow!("registering the ring buffer with tokio: {e}"))?;
        loop {
            let mut guard = fd.readable_mut().await?;
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                let Some(event) = parse_event(&item) else {
                    continue;
                };
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
            guard.clear_ready();
        }
    }
}

fn program<'a>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    bpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the BPF object"))
}

fn attach_tracepoint(bpf: &mut Ebpf, name: &str, category: &str, event: &str) -> Result<()> {
    let prog: &mut TracePoint = program(bpf, name)?.try_into()?;
    prog.load().with_context(|| format!("verifying {name}"))?;
    prog.attach(category, event)
        .with_context(|| format!("attaching {category}/{event}"))?;
    Ok(())
}

fn parse_event(bytes: &[u8]) -> Option<Candidate> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: the kernel wrote an `Event`; read_unaligned copes with any alignment.
    let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let source = match e.kind {
        k if k == EventKind::Crossed as u32 => Source::Kernel {
            rss: e.rss,
            level: e.level,
        },
        k if k == EventKind::OomVictim as u32 => Source::OomVictim,
        k if k == EventKind::Exec as u32 => Source::Exec,
        _ => return None,
    };
    Some(Candidate {
        ns_pid: e.ns_pid,
        kernel: Some(KernelProc {
            host_pid: e.host_pid,
            identity: e.identity,
        }),
        detected: super::monotonic_from_ktime(e.ktime_ns),
        source,
    })
}
