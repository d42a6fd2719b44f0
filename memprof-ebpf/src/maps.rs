//! Maps shared by the programs, and the `.rodata` globals userspace fills in at load time.
//!
//! When memprof instances share one set of programs (see `emit.rs`), every map here is
//! pinned and shared except the tenant's own: `EVENTS`, `HEAP` and `HEAP_SCRATCH`, which only
//! its own programs (the tail-call targets) write.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use memprof_common::{
    Event, GoTarget, HeapBucket, ProcState, HEAP_MAX_DEPTH, HEAP_RECORD_WORDS, HEAP_RING_BYTES,
    MAX_FOREIGN, MAX_GO_PROCS, MAX_GROUPS, MAX_PROCS, MAX_TENANTS, MAX_VICTIMS, NR_STATS,
    NR_TENANCY,
};

/// Per-process state keyed by host tgid, for the processes memprof can see only. A plain hash
/// map: an armed process is never evicted to make room (an LRU would evict hot processes
/// first, since the per-CPU cache spares them the lookups that refresh their position).
#[map]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(MAX_PROCS, 0);

/// Host tgids of processes no tenant can see (other PID namespaces), so they never take a
/// `PROCS` slot and the namespace walk runs once per process, not on every cache miss. The
/// value is the join generation (`TENANCY[TENANCY_JOIN]`) of that judgement.
#[map]
pub static FOREIGN: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_FOREIGN, 0);

/// Group (`ProcState::group`, a PID-namespace inode) → its entries in `PROCS`, so that one
/// container's fork storm takes only its share (`GROUP_SHARE`) and not every slot.
#[map]
pub static GROUPS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_GROUPS, 0);

/// PID-namespace inode → tenant slot.
#[map]
pub static TENANTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TENANTS, 0);

/// Generations of the tenant slots and of joins (`memprof_common::TENANCY_*`).
#[map]
pub static TENANCY: Array<u64> = Array::with_max_entries(NR_TENANCY, 0);

/// Each tenant's programs, indexed by slot: the event emitters for the two kinds of caller
/// (`tp_btf` and classic tracepoints must tail-call programs of their own type) and the
/// at-kill heap walker.
#[map]
pub static EMIT_BTF: ProgramArray = ProgramArray::with_max_entries(MAX_TENANTS, 0);
#[map]
pub static EMIT_TP: ProgramArray = ProgramArray::with_max_entries(MAX_TENANTS, 0);
#[map]
pub static WALKERS: ProgramArray = ProgramArray::with_max_entries(MAX_TENANTS, 0);

/// The event a shared program hands to a tenant's emitter (one per CPU: a tail call keeps
/// the CPU).
#[map]
pub static OUTBOX: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// Counters userspace reports (`memprof_common::STAT_*`).
#[map]
pub static STATS: Array<u64> = Array::with_max_entries(NR_STATS, 0);

/// Classic tracepoint only: `mm_id` → tgid of processes memprof can see, learned from events
/// raised by the owner itself, so that events raised on another task's mm (`curr == 0`) can
/// be attributed.
#[map]
pub static MM_OWNERS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(MAX_PROCS, 0);

/// Crossing and OOM events for userspace (the tenant's own).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Go processes whose heap can be walked, keyed by `memprof_common::go_key` (userspace
/// registers them when it discovers them).
#[map]
pub static GO_PROCS: HashMap<u64, GoTarget> = HashMap::with_max_entries(MAX_GO_PROCS, 0);

/// OOM victims with a `GO_PROCS` entry, by host tgid → their `GO_PROCS` key (tenant slot and
/// PID there), until their SIGKILL is delivered: the key travels with the victim because its
/// `PROCS` entry may be gone by then (the leader thread can exit before another thread takes
/// the signal). An LRU, so a victim that died without taking the signal ages out.
#[map]
pub static VICTIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_VICTIMS, 0);

/// The at-kill walk's records (`memprof_common::HEAP_*`).
#[map]
pub static HEAP: RingBuf = RingBuf::with_byte_size(HEAP_RING_BYTES, 0);

/// Per-CPU room for one bucket record, its raw PCs (too big for the BPF stack) and its
/// `memRecord`.
#[repr(C)]
pub struct HeapScratch {
    pub out: HeapBucket,
    pub raw: [u64; HEAP_MAX_DEPTH],
    pub rec: [u64; HEAP_RECORD_WORDS],
}

#[map]
pub static HEAP_SCRATCH: PerCpuArray<HeapScratch> = PerCpuArray::with_max_entries(1, 0);

/// Invalidation counters for the per-CPU caches: [0] bumped by the kernel (exit, crossing),
/// [1] bumped by userspace after it re-arms a level. Two slots so neither writer loses the
/// other's bump.
#[map]
pub static EPOCH: Array<u64> = Array::with_max_entries(2, 0);

/// The fast path's one-entry cache per CPU: consecutive `rss_stat` events nearly always
/// concern the same mm (a process faulting in pages), so the hash lookup is skipped.
#[repr(C)]
pub struct MmCache {
    pub mm: u64,
    pub level: u64,
    pub kernel_epoch: u64,
    pub user_epoch: u64,
    pub start_ns: u64,
    pub host_pid: u32,
    pub ns_pid: u32,
    pub slot: u32,
    pub _pad: u32,
}

#[map]
pub static MM_CACHE: PerCpuArray<MmCache> = PerCpuArray::with_max_entries(1, 0);

/// Declares `.rodata` globals and a reader for each. The reads are volatile so the compiler
/// cannot fold the placeholder zero; the verifier sees the loaded, frozen value as a constant.
macro_rules! globals {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            static $name: $ty = 0;
        )*
        pub mod g {
            $(
                #[allow(non_snake_case)]
                #[inline(always)]
                pub fn $name() -> $ty {
                    unsafe { core::ptr::read_volatile(&super::$name) }
                }
            )*
        }
    };
}

globals! {
    RSS_COUNT_OFF: u64,
    RSS_STRIDE: u64,
    RSS_PROBE_READ: u64,
    MM_OWNER_OFF: u64,
    TASK_TGID_OFF: u64,
    TASK_MM_OFF: u64,
    TASK_START_OFF: u64,
    TASK_GROUP_LEADER_OFF: u64,
    TASK_THREAD_PID_OFF: u64,
    PID_LEVEL_OFF: u64,
    PID_NUMBERS_OFF: u64,
    UPID_SIZE: u64,
    UPID_NR_OFF: u64,
    UPID_NS_OFF: u64,
    PIDNS_INUM_OFF: u64,
    PIDNS_IS_INIT: u64,
    PAGE_SHIFT: u64,
    TP_MM_ID_OFF: u64,
    TP_CURR_OFF: u64,
    TP_MEMBER_OFF: u64,
    TP_SIZE_OFF: u64,
    TP_OOM_PID_OFF: u64,
    TP_OOM_ANON_OFF: u64,
    TP_OOM_FILE_OFF: u64,
    TP_OOM_SHMEM_OFF: u64,
    TP_SIG_OFF: u64,
    GROUP_SHARE: u64,
    TASK_CGROUPS_OFF: u64,
    CSS_SET_MEMORY_OFF: u64,
    CSS_CGROUP_OFF: u64,
    CGROUP_KN_OFF: u64,
    KERNFS_ID_OFF: u64,
}

/// Adds one to `STATS[idx]`.
#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
        add(p, 1);
    }
}

/// Adds `v` (wrapping: `u64::MAX` subtracts one) to the map value at `p` atomically: BPF's
/// `lock xadd`, which Rust's BPF target offers no atomic type for.
#[inline(always)]
pub fn add(p: *mut u64, v: u64) {
    // SAFETY: `p` is a valid, aligned map value for the program's lifetime; the instruction
    // writes only there.
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v) };
}

/// Bumps slot `idx` of `EPOCH`, making every CPU's cache re-read `PROCS`.
#[inline(always)]
pub fn bump_epoch(idx: u32) {
    if let Some(p) = EPOCH.get_ptr_mut(idx) {
        add(p, 1);
    }
}

#[inline(always)]
pub fn epoch(idx: u32) -> u64 {
    EPOCH.get(idx).copied().unwrap_or(0)
}

#[inline(always)]
pub fn tenancy(idx: u32) -> u64 {
    TENANCY.get(idx).copied().unwrap_or(0)
}
