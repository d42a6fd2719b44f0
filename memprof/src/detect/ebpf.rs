//! The kernel detector: loads memprof-ebpf (or joins the node's shared set, `tenancy.rs`),
//! reads crossings from this instance's ring buffer and lets the daemon arm per-process levels.
use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, RingBuf},
    Btf as AyaBtf, Ebpf, EbpfLoader,
};
use memprof_common::{Event, EventKind};
use tokio::io::unix::AsyncFd;
use tracing::debug;

pub use super::arm::{Arm, GoTargets};
use super::{
    attach::{self, globals},
    group::{self, Plan},
    layout,
    links::Held,
    tenancy::{self, Tenant},
    Candidate, KernelProc, Source,
};

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

/// Loaded and attached programs. Dropping it leaves the shared set, or detaches its own.
pub struct Kernel {
    pub hook: Hook,
    pub rss_layout: Option<layout::RssLayout>,
    /// How the programs are shared, for the log.
    pub sharing: String,
    /// Not shared although other instances could have shared them (no bpffs, sharing off).
    pub pays_alone: bool,
    /// Before `bpf`: leaving routes nothing more to this instance's programs.
    tenant: Tenant,
    bpf: Ebpf,
    arm: Arm,
    go: GoTargets,
    /// The shared set's attachments, alive while some instance holds them (`links.rs`).
    _links: Held,
}

impl Hook {
    /// The program attached to `rss_stat` for this hook.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Btf => "rss_stat_btf",
            Hook::Classic => "rss_stat_classic",
        }
    }
}

impl Kernel {
    /// Loads and attaches with `hook` (or joins the node's shared set, whichever hook it
    /// uses), with room for `max_procs` processes; any failure is returned so the caller can
    /// fall back. `bpffs`: where shared programs are pinned (`None`: never share).
    pub fn load(hook: Hook, max_procs: u32, bpffs: Option<&Path>) -> Result<Self> {
        if BPF_OBJECT.is_empty() {
            bail!("this build has no kernel programs (built with MEMPROF_CHECK_ONLY=1)");
        }
        let own_pidns = layout::own_pidns_inum()?;
        let plan = group::plan(bpffs, own_pidns, BPF_OBJECT)?;
        let hook = match &plan {
            Plan::Join(_, group_hook, _) => *group_hook,
            _ => hook,
        };
        let globals = globals(hook, own_pidns)?;
        debug!(globals = ?globals.values, "kernel offsets");

        let mut loader = EbpfLoader::new();
        loader.map_max_entries("PROCS", max_procs);
        loader.map_max_entries("MM_OWNERS", max_procs);
        for (name, value) in &globals.values {
            loader.override_global(name, value, true);
        }
        let pins = match &plan {
            Plan::Create(g) | Plan::Join(g, ..) => Some(g.dir.clone()),
            Plan::Solo(_) => None,
        };
        let map_pins: Vec<_> = pins
            .iter()
            .flat_map(|dir| tenancy::SHARED_MAPS.map(|m| (m, dir.join(m))))
            .collect();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader.load(BPF_OBJECT).context("loading BPF object")?;
        let aya_btf = match hook {
            Hook::Btf => Some(AyaBtf::from_sys_fs()?),
            Hook::Classic => None,
        };
        let made = match plan {
            Plan::Join(..) => Vec::new(),
            _ => attach::all(&mut bpf, hook, aya_btf.as_ref(), pins.is_some())?,
        };
        attach::load_own(&mut bpf, aya_btf.as_ref())?;

        let take =
            |bpf: &mut Ebpf, name: &str| bpf.take_map(name).with_context(|| format!("map {name}"));
        let mut arm = Arm {
            procs: Arc::new(Mutex::new(HashMap::try_from(take(&mut bpf, "PROCS")?)?)),
            epoch: Arc::new(Mutex::new(Array::try_from(take(&mut bpf, "EPOCH")?)?)),
            stats: Arc::new(Mutex::new(Array::try_from(take(&mut bpf, "STATS")?)?)),
            slot: 0,
            max_procs,
        };
        let go = HashMap::try_from(take(&mut bpf, "GO_PROCS")?)?;
        let pays_alone = matches!(plan, Plan::Solo(_)) && own_pidns != layout::INIT_PIDNS_INUM;
        let (group, sharing, links) = match plan {
            Plan::Solo(why) => (None, format!("own programs: {why}"), Held::default()),
            Plan::Create(g) => (
                Some(g),
                "created the node's shared set".to_string(),
                Held::made(made),
            ),
            Plan::Join(g, _, held) => (Some(g), "joined the node's shared set".to_string(), held),
        };
        let tenant = Tenant::claim(group, own_pidns, &mut bpf, arm.clone())?;
        arm.slot = tenant.slot;
        let sharing = match tenant.shared_dir() {
            Some(dir) => format!(
                "{sharing} at {} (slot {}, holding {} of its links)",
                dir.display(),
                tenant.slot,
                links.count()
            ),
            None => sharing,
        };
        Ok(Self {
            hook,
            rss_layout: globals.rss_layout,
            sharing,
            pays_alone,
            go: GoTargets {
                map: Arc::new(Mutex::new(go)),
                slot: tenant.slot,
            },
            tenant,
            bpf,
            arm,
            _links: links,
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
        // Tenants that died without leaving are found through their released locks; their
        // programs and ring buffers are freed once nothing routes to them.
        let mut reap = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            let mut guard = tokio::select! {
                guard = fd.readable_mut() => guard?,
                _ = reap.tick() => {
                    self.tenant.reap_dead();
                    continue;
                }
            };
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
