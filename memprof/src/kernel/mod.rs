//! The kernel side: loads memprof-ebpf with the offsets this kernel needs (`btf`, `offsets`,
//! `attach`), or joins the node's shared set (`shared_set`, `tenant`, `links`, `bpffs`), and
//! hands out the maps userspace works through (`maps`: the armed levels, the Go processes to
//! walk at the kill, the ring buffers) and the kernel's listing of processes (`listing`). The
//! stages use these handles; the events themselves are read by `detect::ring`. `gate` takes
//! this instance's `rss_stat` program off its hook while no watched process is near its
//! level, and puts it back.
mod attach;
mod bpffs;
pub mod btf;
mod gate;
mod links;
mod listing;
mod maps;
pub mod offsets;
mod shared_set;
mod tenant;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, RingBuf},
    Ebpf, EbpfLoader,
};
use memprof_common::Identity;
use tracing::{debug, warn};

use attach::globals;
use gate::Rss;
use links::Held;
pub use listing::{ListedProc, Listing};
pub use maps::{Arm, GoTargets};
use shared_set::Plan;
use tenant::Tenant;

/// A process as the kernel knows it: its host PID and identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelProc {
    pub host_pid: u32,
    pub identity: Identity,
}

impl KernelProc {
    /// The start time in clock ticks, as `/proc/PID/stat` gives it, when the kernel knew it.
    pub fn start_ticks(&self) -> Option<u64> {
        (self.identity.start_ns != 0).then(|| ticks(self.identity.start_ns))
    }
}

/// A task's `start_boottime` (ns) in clock ticks, as `/proc/PID/stat` gives its start time.
fn ticks(start_ns: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    start_ns / (1_000_000_000 / hz)
}

/// The most entries of the kernel's process map one group may hold (a container in node mode,
/// a pod's sidecar's processes in sidecar mode; see `ProcState::group`): an eighth of the map,
/// so that one tenant's fork storm leaves the rest to the others.
pub fn group_share(max_procs: u32) -> u64 {
    u64::from(max_procs / 8).max(64)
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

/// The compiled kernel programs, built by build.rs.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memprof-ebpf"));

/// A loader that has not read the kernel's BTF. The programs have no CO-RE relocations, so
/// the loader needs none, and the tp_btf programs only their target's id (`target_btf`, built
/// once the loader is done). aya 0.14 reads and parses all of it as a loader is made, ~18 MiB
/// of heap that would be memprof's peak, and has no setting to skip it (aya-rs/aya#1172): the
/// loader is made on a thread that cannot open files, so the read fails and aya goes on
/// without. Where seccomp is missing, the loader parses it and drops it (`btf(None)`).
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    crate::sys::no_open::run(EbpfLoader::new).unwrap_or_else(|e| {
        debug!("the kernel's BTF is parsed for aya's loader: {e}");
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        loader
    })
}

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
    pub rss_layout: Option<offsets::RssLayout>,
    /// How the programs are shared, for the log.
    pub sharing: String,
    /// Not shared although other instances could have shared them (no bpffs, sharing off).
    pub pays_alone: bool,
    /// Before `bpf`: leaving routes nothing more to this instance's programs.
    tenant: Tenant,
    bpf: Ebpf,
    arm: Arm,
    go: GoTargets,
    /// Whether `rss_stat` is on its hook, and whether this instance may take it off.
    rss: Rss,
    /// The kernel's listing of processes, where it loaded.
    listing: Option<Listing>,
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
    /// uses), with room for `max_procs` processes and `heap_ring` bytes of at-kill walks; any
    /// failure is returned so the caller can fall back. `bpffs`: where shared programs are
    /// pinned (`None`: never share).
    pub fn load(hook: Hook, max_procs: u32, heap_ring: u32, bpffs: Option<&Path>) -> Result<Self> {
        if BPF_OBJECT.is_empty() {
            bail!("this build has no kernel programs (built with MEMPROF_CHECK_ONLY=1)");
        }
        let own_pidns = offsets::own_pidns_inum()?;
        let plan = shared_set::plan(bpffs, own_pidns, BPF_OBJECT)?;
        let hook = match &plan {
            Plan::Join(_, group_hook, _) => *group_hook,
            _ => hook,
        };
        let mut globals = globals(hook, own_pidns)?;
        globals
            .values
            .push((memprof_common::globals::GROUP_SHARE, group_share(max_procs)));
        debug!(globals = ?globals.values, "kernel offsets");

        let mut loader = loader_without_kernel_btf();
        loader.map_max_entries("PROCS", max_procs);
        loader.map_max_entries("MM_OWNERS", max_procs);
        loader.map_max_entries("HEAP", heap_ring);
        for (name, value) in &globals.values {
            loader.override_global(name, value, true);
        }
        let pins = match &plan {
            Plan::Create(g) | Plan::Join(g, ..) => Some(g.dir.clone()),
            Plan::Solo(_) => None,
        };
        let map_pins: Vec<_> = pins
            .iter()
            .flat_map(|dir| tenant::SHARED_MAPS.map(|m| (m, dir.join(m))))
            .collect();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader.load(BPF_OBJECT).context("loading BPF object")?;
        let aya_btf = globals
            .rss_stat_trace
            .map(attach::rss_stat_btf)
            .transpose()?;
        let (made, rss) = match plan {
            Plan::Join(..) => (Vec::new(), Rss::Shared),
            _ => attach::all(&mut bpf, hook, aya_btf.as_ref(), pins.is_some())?,
        };
        crate::metrics::rss_stat_attached(true, false);
        attach::load_own(&mut bpf, aya_btf.as_ref())?;
        // Not needed to watch: without it the safety net lists /proc, at a higher idle cost.
        let listing = globals.iter_task.and_then(|id| {
            Listing::load(&mut bpf, id)
                .map_err(|e| warn!("the safety net lists /proc: no kernel listing: {e:#}"))
                .ok()
        });
        // The programs this instance loaded (a joined set's attached ones are another's).
        for (name, prog) in bpf.programs() {
            if let Ok(info) = prog.info() {
                crate::metrics::bpf::watch(info.id(), name);
            }
        }

        let take =
            |bpf: &mut Ebpf, name: &str| bpf.take_map(name).with_context(|| format!("map {name}"));
        let mut arm = Arm {
            procs: Arc::new(Mutex::new(HashMap::try_from(take(&mut bpf, "PROCS")?)?)),
            epoch: Arc::new(Mutex::new(Array::try_from(take(&mut bpf, "EPOCH")?)?)),
            stats: Arc::new(Mutex::new(Array::try_from(take(&mut bpf, "STATS")?)?)),
            groups: Arc::new(Mutex::new(HashMap::try_from(take(&mut bpf, "GROUPS")?)?)),
            foreign: Arc::new(Mutex::new(HashMap::try_from(take(&mut bpf, "FOREIGN")?)?)),
            slot: 0,
            max_procs,
        };
        let go = HashMap::try_from(take(&mut bpf, "GO_PROCS")?)?;
        let pays_alone = matches!(plan, Plan::Solo(_)) && own_pidns != offsets::INIT_PIDNS_INUM;
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
            rss,
            listing,
            _links: links,
        })
    }

    pub fn arm(&self) -> Arm {
        self.arm.clone()
    }

    pub fn listing(&self) -> Option<Listing> {
        self.listing.clone()
    }

    pub fn go_targets(&self) -> GoTargets {
        self.go.clone()
    }

    /// The ring buffer of at-kill heap walks, for `capture::goheap::kernel_walk`.
    pub fn take_heap_ring(&mut self) -> Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(
            self.bpf.take_map("HEAP").context("map HEAP")?,
        )?)
    }

    /// The ring buffer of crossings, OOM victims and execs, for `detect::ring`.
    pub fn take_events_ring(&mut self) -> Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(
            self.bpf.take_map("EVENTS").context("map EVENTS")?,
        )?)
    }

    /// Frees the slots of tenants that died without leaving (found through their released
    /// locks); their programs and ring buffers go once nothing routes to them.
    pub fn reap_dead(&mut self) {
        self.tenant.reap_dead();
    }
}
