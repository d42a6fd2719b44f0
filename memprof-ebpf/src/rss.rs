//! RSS tracking on `rss_stat`, which fires on nearly every RSS counter change (once per
//! faulted page), so the common path must stay a handful of loads and one compare.
//!
//! * `rss_stat_btf` (`tp_btf`, preferred): reads the live counters straight from `mm` with
//!   plain loads at BTF offsets; a per-CPU one-entry cache avoids the hash lookup.
//! * `rss_stat_classic` (`kmem/rss_stat`, fallback for kernels without BTF tracepoints): the
//!   record carries one member's absolute size, so the other members are kept in `PROCS`.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use memprof_common::{Identity, DISARMED, NR_MM_COUNTERS, RSS_MEMBERS};

use crate::{
    maps::{epoch, g, tenancy, MmCache, EMIT_BTF, EMIT_TP, MM_CACHE, MM_OWNERS, PROCS},
    procs::{self, KERNEL_EPOCH, USER_EPOCH},
    task,
};

#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat_btf(ctx: BtfTracePointContext) -> i32 {
    let mm: *const u8 = ctx.arg(0);
    on_btf_event(&ctx, mm);
    0
}

#[inline(always)]
fn on_btf_event(ctx: &BtfTracePointContext, mm: *const u8) -> Option<()> {
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
    let rss = mm_rss(mm, g::RSS_PROBE_READ() != 0);
    if rss >= cache.level {
        let identity = Identity {
            mm: cache.mm,
            start_ns: cache.start_ns,
        };
        let level = cache.level;
        cache.level = DISARMED;
        let whom = (cache.ns_pid, cache.slot, identity);
        procs::report(ctx, &EMIT_BTF, cache.host_pid, whom, rss, level);
    }
    Some(())
}
/// Sum of the resident counters, in bytes. Plain loads where the verifier allows them (`mm`
/// is a typed BTF pointer and the offsets are frozen constants); 6.1's verifier cannot walk
/// its atomic counter array, and an `mm` read from memory is no typed pointer, so there
/// (`probe`) the slower probe read is used.
#[inline(always)]
pub fn mm_rss(mm: *const u8, probe: bool) -> u64 {
    let (base, stride) = (g::RSS_COUNT_OFF(), g::RSS_STRIDE());
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

/// The cache miss path: who owns `mm`, and that process's state. Events on an mm whose owner
/// is not settled (fork, exit) are skipped and not cached.
#[inline(always)]
fn fill_cache(cache: &mut MmCache, mm: u64, kernel_epoch: u64, user_epoch: u64) -> Option<()> {
    let (owner, host_pid) = task::mm_owner(mm)?;
    // SAFETY: PROCS values are plain data; a concurrent update yields a stale level at worst.
    let entry = unsafe { PROCS.get(host_pid) }.copied();
    let state = procs::state_of(host_pid, mm, owner, entry);
    cache.mm = mm;
    cache.level = state.level;
    cache.kernel_epoch = kernel_epoch;
    cache.user_epoch = user_epoch;
    cache.start_ns = state.identity.start_ns;
    cache.host_pid = host_pid;
    cache.ns_pid = state.ns_pid;
    cache.slot = state.slot;
    Some(())
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
            ctx.read_at::<u32>(g::TP_MEMBER_OFF() as usize).ok()?,
            ctx.read_at::<i64>(g::TP_SIZE_OFF() as usize).ok()?,
        )
    };
    let mm_id = mm_id as u64;
    let (host_pid, state) = if curr != 0 {
        let host_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let entry = PROCS.get_ptr_mut(host_pid);
        let state = match entry {
            // The hot path checks the address space only: exit and exec remove entries, and a
            // full identity check would cost two more reads on every event.
            // SAFETY: valid map value pointer.
            Some(state) if unsafe { (*state).identity.mm } == mm_id => state,
            _ => {
                // SAFETY: helper without preconditions; the task uses this mm (curr == 1).
                let current = unsafe { bpf_get_current_task() } as u64;
                // SAFETY: valid map value pointer.
                let entry = entry.map(|state| unsafe { *state });
                if procs::state_of(host_pid, mm_id, current, entry).level == DISARMED {
                    return None;
                }
                PROCS.get_ptr_mut(host_pid)?
            }
        };
        // SAFETY: plain data.
        if unsafe { MM_OWNERS.get(mm_id as u32) } != Some(&host_pid) {
            let _ = MM_OWNERS.insert(mm_id as u32, host_pid, 0);
        }
        (host_pid, state)
    } else {
        // Another task changed this mm (e.g. reclaim): attribute it through the owner map,
        // which only holds processes memprof follows.
        // SAFETY: plain data.
        let host_pid = *unsafe { MM_OWNERS.get(mm_id as u32) }?;
        let state = PROCS.get_ptr_mut(host_pid)?;
        // SAFETY: valid map value pointer.
        if unsafe { (*state).identity.mm } != mm_id {
            return None;
        }
        (host_pid, state)
    };
    // SAFETY: valid map value pointer; concurrent updates at worst mix two fresh values.
    let state = unsafe { &mut *state };
    // Bounded by a mask at the write, not by an earlier check: 6.1's verifier loses the bound
    // of an index checked earlier once the compiler reloads it from a stack slot (and a check
    // would let the compiler drop the mask). The kernel's members are 0..NR_MM_COUNTERS, so
    // the mask changes no valid value.
    state.counters[member as usize & (NR_MM_COUNTERS - 1)] = size;
    let level = state.level;
    let rss = RSS_MEMBERS
        .iter()
        .map(|&m| state.counters[m as usize].max(0) as u64)
        .sum::<u64>();
    if level != DISARMED && rss < level {
        return Some(());
    }
    // Rare from here (a disarmed process, or a crossing), so only here is the routing checked:
    // a process whose tenant slot changed hands since is resolved again instead.
    if state.slot_gen != tenancy(state.slot) {
        if curr != 0 {
            // SAFETY: helper without preconditions; the task uses this mm (curr == 1).
            let current = unsafe { bpf_get_current_task() } as u64;
            procs::state_of(host_pid, mm_id, current, Some(*state));
        }
        return None;
    }
    if level != DISARMED {
        let whom = (state.ns_pid, state.slot, state.identity);
        procs::report(ctx, &EMIT_TP, host_pid, whom, rss, level);
    }
    Some(())
}
