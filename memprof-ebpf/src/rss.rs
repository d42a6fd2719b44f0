//! RSS tracking on `rss_stat`, which fires on nearly every RSS counter change (once per
//! faulted page), so the common path must stay a handful of loads and one compare.
//!
//! * `rss_stat_btf` (`tp_btf`, preferred): reads the live counters straight from `mm` with
//!   plain loads at BTF offsets; a per-CPU one-entry cache avoids the hash lookup.
//! * `rss_stat_classic` (`kmem/rss_stat`, fallback for kernels without BTF tracepoints): the
//!   record carries one member's absolute size, so the other members are kept in `PROCS`.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use memprof_common::{Event, EventKind, ProcState, DISARMED, NR_MM_COUNTERS, RSS_MEMBERS, UNARMED};

use crate::{
    maps::{bump_epoch, epoch, g, MmCache, EVENTS, MM_CACHE, MM_OWNERS, PROCS},
    task,
};

const KERNEL_EPOCH: u32 = 0;
const USER_EPOCH: u32 = 1;

#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat_btf(ctx: BtfTracePointContext) -> i32 {
    let mm: *const u8 = ctx.arg(0);
    on_btf_event(mm);
    0
}

#[inline(always)]
fn on_btf_event(mm: *const u8) -> Option<()> {
    let cache = MM_CACHE.get_ptr_mut(0)?;
    // SAFETY: a per-CPU map value, only touched by this CPU with preemption disabled.
    let cache = unsafe { &mut *cache };
    let (kernel_epoch, user_epoch) = (epoch(KERNEL_EPOCH), epoch(USER_EPOCH));
    if cache.mm != mm as u64 || cache.kernel_epoch != kernel_epoch || cache.user_epoch != user_epoch
    {
        fill_cache(cache, mm as u64, kernel_epoch, user_epoch)?;
    }
    if cache.level == DISARMED {
        return None;
    }
    let rss = mm_rss(mm);
    if rss >= cache.level && report(cache.host_pid, cache.ns_pid, rss, cache.level) {
        cache.level = DISARMED;
    }
    Some(())
}

/// Sum of the resident counters. Plain loads where the verifier allows them (`mm` is a typed
/// BTF pointer and the offsets are frozen constants); 6.1's verifier cannot walk its atomic
/// counter array, so there the (slower) probe read is used.
#[inline(always)]
fn mm_rss(mm: *const u8) -> u64 {
    let (base, stride, probe) = (
        g::RSS_COUNT_OFF(),
        g::RSS_STRIDE(),
        g::RSS_PROBE_READ() != 0,
    );
    let mut pages: i64 = 0;
    for member in RSS_MEMBERS {
        // SAFETY: offset of `rss_stat[member]`'s count in the running kernel's `mm_struct`.
        let count = unsafe {
            let p = mm.add((base + member as u64 * stride) as usize) as *const i64;
            if probe {
                bpf_probe_read_kernel(p).unwrap_or(0)
            } else {
                *p
            }
        };
        // Per-CPU counters are approximations and can read negative for a young process.
        pages += count.max(0);
    }
    (pages as u64) << g::PAGE_SHIFT()
}

#[inline(always)]
fn fill_cache(cache: &mut MmCache, mm: u64, kernel_epoch: u64, user_epoch: u64) -> Option<()> {
    let owner = task::mm_owner(mm)?;
    let host_pid = task::tgid(owner)?;
    // SAFETY: PROCS values are plain data; a concurrent update yields a stale level at worst.
    let state = match unsafe { PROCS.get(host_pid) } {
        Some(state) => *state,
        None => remember(host_pid, task::ns_pid(owner, host_pid)),
    };
    cache.mm = mm;
    cache.level = state.level;
    cache.kernel_epoch = kernel_epoch;
    cache.user_epoch = user_epoch;
    cache.host_pid = host_pid;
    cache.ns_pid = state.ns_pid;
    Some(())
}

/// Starts following a process. One visible to memprof is reported on its next counter change
/// so userspace can arm its level; one in another PID namespace branch is ignored for good.
#[inline(always)]
fn remember(host_pid: u32, ns_pid: u32) -> ProcState {
    let state = ProcState {
        level: if ns_pid == 0 { DISARMED } else { UNARMED },
        ns_pid,
        _pad: 0,
        counters: [0; NR_MM_COUNTERS],
    };
    // BPF_NOEXIST: never overwrite a level userspace armed meanwhile.
    let _ = PROCS.insert(host_pid, state, 1);
    state
}

/// Sends a crossing to userspace and disarms the process until userspace re-arms it. Returns
/// false when the ring buffer is full: the level stays armed and the next change retries.
#[inline(always)]
fn report(host_pid: u32, ns_pid: u32, rss: u64, level: u64) -> bool {
    let event = Event {
        kind: EventKind::Crossed as u32,
        host_pid,
        ns_pid,
        _pad: 0,
        rss,
        level,
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output::<Event>(event, 0).is_err() {
        return false;
    }
    if let Some(state) = PROCS.get_ptr_mut(host_pid) {
        // SAFETY: valid map value pointer.
        unsafe { (*state).level = DISARMED };
    }
    bump_epoch(KERNEL_EPOCH);
    true
}

#[tracepoint(category = "kmem", name = "rss_stat")]
pub fn rss_stat_classic(ctx: TracePointContext) -> i32 {
    let _ = on_classic_event(&ctx);
    0
}

#[inline(always)]
fn on_classic_event(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: offsets come from the tracepoint's own format file.
    let (mm_id, curr, member, size) = unsafe {
        (
            ctx.read_at::<u32>(g::TP_MM_ID_OFF() as usize).ok()?,
            ctx.read_at::<u8>(g::TP_CURR_OFF() as usize).ok()?,
            ctx.read_at::<i32>(g::TP_MEMBER_OFF() as usize).ok()?,
            ctx.read_at::<i64>(g::TP_SIZE_OFF() as usize).ok()?,
        )
    };
    let member = member as usize;
    if member >= NR_MM_COUNTERS {
        return None;
    }
    let host_pid = if curr != 0 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if unsafe { MM_OWNERS.get(mm_id) } != Some(&tgid) {
            let _ = MM_OWNERS.insert(mm_id, tgid, 0);
        }
        tgid
    } else {
        // Another task changed this mm (e.g. reclaim): attribute it through the owner map.
        *unsafe { MM_OWNERS.get(mm_id) }?
    };
    let state = match PROCS.get_ptr_mut(host_pid) {
        Some(state) => state,
        None if curr != 0 => {
            // SAFETY: helper without preconditions; the task is the mm's owner (curr == 1).
            let current = unsafe { bpf_get_current_task() };
            remember(host_pid, task::ns_pid(current, host_pid));
            PROCS.get_ptr_mut(host_pid)?
        }
        None => return None,
    };
    // SAFETY: valid map value pointer; concurrent updates at worst mix two fresh values.
    let state = unsafe { &mut *state };
    state.counters[member] = size;
    if state.level == DISARMED {
        return None;
    }
    let rss = RSS_MEMBERS
        .iter()
        .map(|&m| state.counters[m as usize].max(0) as u64)
        .sum::<u64>();
    if rss >= state.level {
        report(host_pid, state.ns_pid, rss, state.level);
    }
    Some(())
}
