//! The ABI shared by the kernel programs (`memprof-ebpf`) and the daemon (`memprof`):
//! map values, ring-buffer events and the names of the `.rodata` globals userspace fills in.
#![no_std]

/// Armed level meaning "never report": the process is not ours to watch, or it was just
/// reported and userspace has not re-armed it yet.
pub const DISARMED: u64 = u64::MAX;

/// `ProcState::level` of a process the kernel has just met: the next counter change reports
/// it once so that userspace can arm its real level.
pub const UNARMED: u64 = 0;

/// Default capacity of the per-process map (`PROCS`, processes memprof can see). It is a plain
/// hash map, so an armed process is never evicted; a process that finds it full is not followed
/// by the kernel (counted in `STATS[STAT_PROCS_FULL]`) and is seen by the safety-net poll only.
/// Userspace can resize it at load time.
pub const MAX_PROCS: u32 = 16384;
/// Capacity of the LRU of processes memprof cannot see (other PID namespaces). Eviction only
/// costs one more namespace lookup when such a process is met again.
pub const MAX_FOREIGN: u32 = 16384;

/// Version of the kernel/userspace ABI: maps shared between memprof instances through bpffs
/// live under a directory named after it (and after the object's hash), so two memprof
/// versions on one node never share maps of different layouts.
pub const ABI_VERSION: u32 = 3;

/// Tenants (memprof instances, one per PID namespace) that can share one set of kernel
/// programs. Each owns a slot: its own ring buffers, reached from the shared programs through
/// tail calls into its own programs (`EMIT_BTF`, `EMIT_TP`, `WALKERS`).
pub const MAX_TENANTS: u32 = 64;
/// `TENANCY` slots: `[0, MAX_TENANTS)` the generation of each tenant slot (bumped when a
/// tenant takes or leaves it, which makes the processes routed to it re-resolve), then the
/// join generation (bumped when a tenant joins, which makes processes that belonged to nobody
/// re-resolve).
pub const TENANCY_JOIN: u32 = MAX_TENANTS;
pub const NR_TENANCY: u32 = MAX_TENANTS + 1;

/// Set in a `FOREIGN` value when the process was refused for its group's share rather than
/// seen by no tenant: userspace clears those entries after recounting the groups, so that
/// they are judged again.
pub const FOREIGN_REFUSED: u64 = 1 << 63;

/// Capacity of the count of `PROCS` entries per group (see `ProcState::group`): an LRU, so the
/// groups of containers long gone age out.
pub const MAX_GROUPS: u32 = 4096;

/// `STATS` slots: processes refused because `PROCS` was full, and because their group held
/// its share of it already.
pub const STAT_PROCS_FULL: u32 = 0;
pub const STAT_GROUP_FULL: u32 = 1;
pub const NR_STATS: u32 = 2;

/// `mm->rss_stat[]` members that make up RSS (`MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SHMEMPAGES`;
/// index 2 is `MM_SWAPENTS`, which is not resident).
pub const RSS_MEMBERS: [u32; 3] = [0, 1, 3];
/// Number of `rss_stat` members the kernel keeps (`NR_MM_COUNTERS`); the classic hook masks
/// member indices with `NR_MM_COUNTERS - 1`, so it must stay a power of two.
pub const NR_MM_COUNTERS: usize = 4;
const _: () = assert!(NR_MM_COUNTERS.is_power_of_two());

/// Who a process is, beyond its reusable PID: its address space (`mm`, or the classic
/// tracepoint's `mm_id`; replaced by every exec) and its leader's start time (boot-time ns, as
/// `/proc/PID/stat` counts it in clock ticks; 0 when the kernel offsets are unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub mm: u64,
    pub start_ns: u64,
}

/// Per-process state, keyed by the host (init-namespace) tgid and valid only for `identity`:
/// an entry whose identity differs from the process the kernel meets is stale and replaced.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcState {
    pub identity: Identity,
    /// RSS in bytes at or above which the kernel reports the process (see `DISARMED`/`UNARMED`).
    pub level: u64,
    /// The process's PID as its tenant's PID namespace sees it.
    pub ns_pid: u32,
    /// The tenant slot the process's events go to, and that slot's generation when the
    /// process was routed there (an older generation means: resolve again).
    pub slot: u32,
    pub slot_gen: u64,
    /// The group whose share of `PROCS` the entry counts against (0: counted nowhere), a PID
    /// namespace's inode: for a memprof in the initial namespace the process's namespace at
    /// depth 1 (its container's), for a sidecar its own (the pod's). Namespaces a tenant
    /// unshares inside stay in its group.
    pub group: u32,
    pub _pad: u32,
    /// Last counter values seen by the classic tracepoint (bytes); unused by the BTF program,
    /// which reads the live counters from `mm` instead.
    pub counters: [i64; NR_MM_COUNTERS],
}

/// What an event reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The process's RSS reached its armed level (or it was first seen, when unarmed).
    Crossed = 1,
    /// The OOM killer chose this process (`oom/mark_victim`).
    OomVictim = 2,
    /// The process ran `exec`: a new program, whose state starts afresh.
    Exec = 3,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `EventKind` as u32 (a plain integer keeps the struct `Pod`).
    pub kind: u32,
    /// Host (init-namespace) tgid.
    pub host_pid: u32,
    /// PID in memprof's namespace, 0 when not visible there.
    pub ns_pid: u32,
    pub _pad: u32,
    /// The process the event is about (zero for `OomVictim` and `Exec`).
    pub identity: Identity,
    /// RSS in bytes as the kernel counted it (`OomVictim`: at the kill, 0 when the kernel's
    /// record does not say).
    pub rss: u64,
    /// The level that was crossed (`OomVictim`: the anonymous part of `rss`).
    pub level: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at detection.
    pub ktime_ns: u64,
}

/// One process of the kernel's listing (`list_processes`, a task iterator): every process of
/// the reading memprof's PID namespace, as the kernel holds it, without a file of the process
/// opened. What the safety net's listed round needs to pass over a quiet process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    /// PID in the reader's namespace.
    pub ns_pid: u32,
    /// `LISTED_*` bits.
    pub flags: u32,
    /// `start_boottime` of the process, in nanoseconds (`/proc/PID/stat`'s start time is this
    /// in clock ticks).
    pub start_ns: u64,
    /// Resident bytes in the kernel's shared count (what `/proc/PID/stat`'s rss shows).
    pub rss: u64,
    /// The kernfs id of its memory cgroup's directory (that directory's inode number).
    pub memcg: u64,
}

/// `Listed::flags`: the process has an address space (`rss` is its own; a kernel thread or
/// an exiting process has none).
pub const LISTED_MM: u32 = 1;
/// `Listed::flags`: `memcg` was read.
pub const LISTED_MEMCG: u32 = 2;

/// Go processes whose heap the kernel may walk at the kill (`GO_PROCS`, keyed by `go_key`), and OOM victims among them waiting for their SIGKILL (`VICTIMS`).
pub const MAX_GO_PROCS: u32 = 4096;
pub const MAX_VICTIMS: u32 = 256;

/// `GO_PROCS` key: the tenant's slot and the PID in the tenant's namespace (PIDs of two
/// tenants' namespaces collide).
pub const fn go_key(slot: u32, ns_pid: u32) -> u64 {
    ((slot as u64) << 32) | ns_pid as u64
}
/// Buckets the at-kill walk reads; beyond them it only counts (up to `HEAP_MAX_COUNT`).
pub const HEAP_MAX_BUCKETS: u32 = 65_536;
pub const HEAP_MAX_COUNT: u32 = 1 << 20;
/// PCs kept per bucket by the at-kill walk: Go records up to 128 by default since 1.23 (32
/// before); deeper stacks (`GODEBUG=profstackdepth`) are cut, and the cut is reported.
pub const HEAP_MAX_DEPTH: usize = 128;
/// Words of the largest `memRecord` (4 cycles × 4 words, Go ≤ 1.26).
pub const HEAP_RECORD_WORDS: usize = 16;
/// Bytes of the ring buffer the at-kill walk writes into, as built (`MEMPROF_AT_KILL_RING`
/// sets it at load time).
pub const HEAP_RING_BYTES: u32 = 1 << 20;

/// Where a Go process keeps its heap profile (run-time addresses), registered by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoTarget {
    pub mbuckets: u64,
    pub cycle: u64,
    pub rate: u64,
    /// Lowest address of the executable's code: PCs travel as 32-bit offsets from it.
    pub text_base: u64,
    /// `memRecord` bytes: 128 (Go ≤ 1.26) or 64.
    pub record_bytes: u32,
    /// `runtime.memstats`' generation size and the offset of its `sysMemStat`s (0: unknown).
    pub stats_delta: u32,
    pub memstats: u64,
    pub stats_sys: u32,
    pub _pad: u32,
}

/// Record kinds of the heap ring buffer (first `u32` of every record).
pub const HEAP_BEGIN: u32 = 1;
pub const HEAP_BUCKET: u32 = 2;
pub const HEAP_END: u32 = 3;
pub const HEAP_STATS: u32 = 4;
/// Words of `runtime.memstats` read at the kill: the first six of each of the heap's three
/// generations, then the six `sysMemStat`s.
pub const GO_STATS_WORDS: usize = 24;

/// Opens a walk: which process, and the profile cycle and rate when it began.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapBegin {
    pub kind: u32,
    pub host_pid: u32,
    pub ns_pid: u32,
    pub _pad: u32,
    /// `mProfCycle.value`, `runtime.MemProfileRate`.
    pub cycle: u64,
    pub rate: u64,
    pub ktime_ns: u64,
}

/// One bucket; only `HEAP_BUCKET_HEAD + depth * 4` bytes of it are sent. Records are kept
/// small so that tens of thousands fit the ring buffer: PCs as offsets from
/// `GoTarget::text_base` (Go code never spans 4 GiB), and only the two sums of `{allocs,
/// frees}` a profile can need (bytes follow from `size`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeapBucket {
    pub kind: u32,
    pub host_pid: u32,
    /// PCs the runtime recorded, and PCs sent (`min(nstk, HEAP_MAX_DEPTH)`).
    pub nstk: u16,
    pub depth: u16,
    pub _pad: u32,
    pub size: u64,
    /// `active + future[cycle % 3]` (what `runtime.MemProfile` publishes), then `active` plus
    /// every `future` cycle (what it publishes before the first GC): allocs, frees each.
    pub published: [u64; 2],
    pub all: [u64; 2],
    pub pcs: [u32; HEAP_MAX_DEPTH],
}
pub const HEAP_BUCKET_HEAD: usize = core::mem::offset_of!(HeapBucket, pcs);

/// The Go runtime's own memory statistics at the kill, sent after the begin record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeapStats {
    pub kind: u32,
    pub host_pid: u32,
    /// 1 when every word was read.
    pub ok: u32,
    pub _pad: u32,
    pub words: [u64; GO_STATS_WORDS],
}

/// Closes a walk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapEnd {
    pub kind: u32,
    pub host_pid: u32,
    /// Buckets sent; lost to a full ring buffer, those holding live memory and the others;
    /// and left unread beyond `HEAP_MAX_BUCKETS`.
    pub sent: u64,
    pub lost_live: u64,
    pub lost_freed: u64,
    pub left_out: u64,
    /// 1 when a read of the victim's memory failed and the walk stopped there.
    pub failed: u32,
    pub _pad: u32,
    pub ktime_ns: u64,
}

/// Names of the `.rodata` globals the kernel programs read; userspace overrides them at load
/// time with offsets read from the running kernel's BTF, so the verifier sees constants.
pub mod globals {
    /// Offset of `mm_struct.rss_stat` plus the offset of the counter inside an element.
    pub const RSS_COUNT_OFF: &str = "RSS_COUNT_OFF";
    /// Distance between two `rss_stat` elements (40 for `percpu_counter`, 8 for `atomic_long_t`).
    pub const RSS_STRIDE: &str = "RSS_STRIDE";
    /// 1 when the counters must be read with `bpf_probe_read_kernel`: 6.1's verifier refuses
    /// plain loads into its `atomic_long_t count[]` array ("Type 'atomic_long_t' is not a struct").
    pub const RSS_PROBE_READ: &str = "RSS_PROBE_READ";
    pub const MM_OWNER_OFF: &str = "MM_OWNER_OFF";
    pub const TASK_TGID_OFF: &str = "TASK_TGID_OFF";
    pub const TASK_MM_OFF: &str = "TASK_MM_OFF";
    /// `task_struct.start_boottime`; 0 (no BTF) leaves `Identity::start_ns` at 0.
    pub const TASK_START_OFF: &str = "TASK_START_OFF";
    pub const TASK_GROUP_LEADER_OFF: &str = "TASK_GROUP_LEADER_OFF";
    pub const TASK_THREAD_PID_OFF: &str = "TASK_THREAD_PID_OFF";
    pub const PID_LEVEL_OFF: &str = "PID_LEVEL_OFF";
    pub const PID_NUMBERS_OFF: &str = "PID_NUMBERS_OFF";
    pub const UPID_SIZE: &str = "UPID_SIZE";
    pub const UPID_NR_OFF: &str = "UPID_NR_OFF";
    pub const UPID_NS_OFF: &str = "UPID_NS_OFF";
    pub const PIDNS_INUM_OFF: &str = "PIDNS_INUM_OFF";
    /// 1 when memprof runs in the initial PID namespace, where host PIDs need no translation
    /// (which lets the classic hook run on kernels without BTF).
    pub const PIDNS_IS_INIT: &str = "PIDNS_IS_INIT";
    pub const PAGE_SHIFT: &str = "PAGE_SHIFT";
    /// Classic `kmem/rss_stat` record field offsets (from the tracepoint's format file).
    pub const TP_MM_ID_OFF: &str = "TP_MM_ID_OFF";
    pub const TP_CURR_OFF: &str = "TP_CURR_OFF";
    pub const TP_MEMBER_OFF: &str = "TP_MEMBER_OFF";
    pub const TP_SIZE_OFF: &str = "TP_SIZE_OFF";
    /// `oom/mark_victim` record: offset of `pid`, and of the victim's `anon_rss`, `file_rss`
    /// and `shmem_rss` (kB; 0 where the kernel's record has no such field).
    pub const TP_OOM_PID_OFF: &str = "TP_OOM_PID_OFF";
    pub const TP_OOM_ANON_OFF: &str = "TP_OOM_ANON_OFF";
    pub const TP_OOM_FILE_OFF: &str = "TP_OOM_FILE_OFF";
    pub const TP_OOM_SHMEM_OFF: &str = "TP_OOM_SHMEM_OFF";
    /// `signal/signal_deliver` record: offset of `sig`.
    pub const TP_SIG_OFF: &str = "TP_SIG_OFF";
    /// The memory cgroup of a task (the kernel's listing): `task_struct.cgroups`, the
    /// memory controller's slot in `css_set.subsys[]`, `cgroup_subsys_state.cgroup`,
    /// `cgroup.kn` and `kernfs_node.id` (0 where the kernel has no memory controller).
    pub const TASK_CGROUPS_OFF: &str = "TASK_CGROUPS_OFF";
    pub const CSS_SET_MEMORY_OFF: &str = "CSS_SET_MEMORY_OFF";
    pub const CSS_CGROUP_OFF: &str = "CSS_CGROUP_OFF";
    pub const CGROUP_KN_OFF: &str = "CGROUP_KN_OFF";
    pub const KERNFS_ID_OFF: &str = "KERNFS_ID_OFF";
    /// The most `PROCS` entries one group may hold (0: no share, as without BTF).
    pub const GROUP_SHARE: &str = "GROUP_SHARE";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with explicit padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::ProcState {}
    unsafe impl aya::Pod for super::Identity {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::GoTarget {}
}
