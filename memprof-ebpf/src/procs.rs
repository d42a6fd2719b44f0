//! Which processes are memprof's, and their per-process state: looking an entry up for the
//! process the kernel meets (never trusting a stale one), admitting new processes, and
//! reporting crossings to the process's tenant.
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::ProgramArray, EbpfContext};
use memprof_common::{
    Event, EventKind, Identity, ProcState, DISARMED, NR_MM_COUNTERS, STAT_PROCS_FULL, TENANCY_JOIN,
    UNARMED,
};

use crate::{
    emit,
    maps::{bump_epoch, count, tenancy, FOREIGN, PROCS},
    task,
};

pub const KERNEL_EPOCH: u32 = 0;
pub const USER_EPOCH: u32 = 1;

/// `bpf_map_update_elem` flags.
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
/// `-E2BIG`: the map is full.
const E2BIG: i32 = -7;

/// State of a process the kernel does not follow: no tenant sees it, or no room.
const IGNORED: ProcState = ProcState {
    identity: Identity { mm: 0, start_ns: 0 },
    level: DISARMED,
    ns_pid: 0,
    slot: 0,
    slot_gen: 0,
    counters: [0; NR_MM_COUNTERS],
};

/// The state of process `host_pid`, whose task is `task` and whose address space is `mm`,
/// given its `PROCS` entry as the caller just looked it up. An entry for another identity
/// (the PID was reused, or the process ran exec and the lifecycle hooks have not caught up),
/// or routed to a tenant slot that changed hands since, is replaced, never inherited.
#[inline(always)]
pub fn state_of(host_pid: u32, mm: u64, task: u64, entry: Option<ProcState>) -> ProcState {
    let identity = || Identity {
        mm,
        start_ns: task::start_ns(task),
    };
    match entry {
        Some(state) => {
            let identity = identity();
            if state.identity == identity && state.slot_gen == tenancy(state.slot) {
                state
            } else {
                remember(host_pid, identity, task, BPF_ANY)
            }
        }
        // SAFETY: plain data.
        None if unsafe { FOREIGN.get(host_pid) } == Some(&tenancy(TENANCY_JOIN)) => IGNORED,
        None => remember(host_pid, identity(), task, BPF_NOEXIST),
    }
}

/// Starts following a process. One a tenant sees is reported on its next counter change so
/// that the tenant can arm its level; one no tenant sees goes to `FOREIGN` and never takes a
/// `PROCS` slot.
#[inline(always)]
pub fn remember(host_pid: u32, identity: Identity, task: u64, flags: u64) -> ProcState {
    let Some((slot, ns_pid)) = task::tenant_of(task, host_pid) else {
        if flags == BPF_ANY {
            // The PID belonged to a watched process whose exit was missed, or its tenant
            // left: free its slot.
            let _ = PROCS.remove(host_pid);
        }
        let _ = FOREIGN.insert(host_pid, tenancy(TENANCY_JOIN), 0);
        return IGNORED;
    };
    let state = ProcState {
        identity,
        level: UNARMED,
        ns_pid,
        slot,
        slot_gen: tenancy(slot),
        counters: [0; NR_MM_COUNTERS],
    };
    match PROCS.insert(host_pid, state, flags) {
        Ok(()) => state,
        Err(E2BIG) => {
            count(STAT_PROCS_FULL);
            IGNORED
        }
        // BPF_NOEXIST lost a race with another CPU meeting the same process: use its entry.
        // SAFETY: plain data.
        Err(_) => unsafe { PROCS.get(host_pid) }.copied().unwrap_or(IGNORED),
    }
}

/// Disarms the process, then hands the crossing of `level` to its tenant's emitter (which
/// restores the level if its ring buffer is full). Disarming first means the tenant's re-arm,
/// which follows the event, can never be overwritten by the disarm. Callers disarm their
/// per-CPU copy first: a tail call does not return.
#[inline(always)]
pub fn report<C: EbpfContext>(
    ctx: &C,
    emit: &ProgramArray,
    host_pid: u32,
    (ns_pid, slot, identity): (u32, u32, Identity),
    rss: u64,
    level: u64,
) {
    let Some(entry) = PROCS.get_ptr_mut(host_pid) else {
        return;
    };
    // SAFETY: valid map value pointer.
    unsafe { (*entry).level = DISARMED };
    bump_epoch(KERNEL_EPOCH);
    let event = Event {
        kind: EventKind::Crossed as u32,
        host_pid,
        ns_pid,
        _pad: 0,
        identity,
        rss,
        level,
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    emit::hand_over(ctx, emit, slot, &event);
}

/// Sends a lifecycle or OOM event that carries no measurement to tenant `slot`.
#[inline(always)]
pub fn notify<C: EbpfContext>(ctx: &C, kind: EventKind, host_pid: u32, ns_pid: u32, slot: u32) {
    let event = Event {
        kind: kind as u32,
        host_pid,
        ns_pid,
        _pad: 0,
        identity: Identity { mm: 0, start_ns: 0 },
        rss: 0,
        level: 0,
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    emit::hand_over(ctx, &crate::maps::EMIT_TP, slot, &event);
}
