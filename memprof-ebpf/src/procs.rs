//! Which processes are memprof's, and their per-process state: looking an entry up for the
//! process the kernel meets (never trusting a stale one), admitting new processes (each group
//! within its share of the map), and reporting crossings to the process's tenant.
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::ProgramArray, EbpfContext};
use memprof_common::{
    Event, EventKind, Identity, ProcState, DISARMED, FOREIGN_REFUSED, NR_MM_COUNTERS,
    STAT_GROUP_FULL, STAT_PROCS_FULL, TENANCY_JOIN, UNARMED,
};

use crate::{
    emit,
    maps::{add, bump_epoch, count, g, tenancy, FOREIGN, GROUPS, PROCS},
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
    group: 0,
    _pad: 0,
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
                remember(host_pid, identity, task, Some(state))
            }
        }
        // SAFETY: plain data.
        None if unsafe { FOREIGN.get(host_pid) }.map(|&v| v & !FOREIGN_REFUSED)
            == Some(tenancy(TENANCY_JOIN)) =>
        {
            IGNORED
        }
        None => remember(host_pid, identity(), task, None),
    }
}

/// Starts following a process, `replacing` a stale entry of its PID. One a tenant sees is
/// reported on its next counter change so that the tenant can arm its level. One no tenant
/// sees, or whose group holds its share of `PROCS` already, goes to `FOREIGN` and takes no
/// slot (the safety-net poll still watches the latter; a tenant's join re-judges both, and
/// userspace the latter once it has recounted the groups).
#[inline(always)]
pub fn remember(
    host_pid: u32,
    identity: Identity,
    task: u64,
    replacing: Option<ProcState>,
) -> ProcState {
    let not_followed = |stat: Option<u32>, mark: u64| {
        if let Some(old) = replacing {
            // The PID belonged to a watched process whose exit was missed, or its tenant
            // left: free its slot.
            if PROCS.remove(host_pid).is_ok() {
                leave(old.group);
            }
        }
        if let Some(stat) = stat {
            count(stat);
        }
        let _ = FOREIGN.insert(host_pid, tenancy(TENANCY_JOIN) | mark, 0);
        IGNORED
    };
    let Some((slot, ns_pid, group)) = task::tenant_of(task, host_pid) else {
        return not_followed(None, 0);
    };
    let share = g::GROUP_SHARE();
    let group = if share == 0 { 0 } else { group };
    let counted = replacing.is_some_and(|old| old.group == group);
    if group != 0 && !counted && held(group) >= share {
        return not_followed(Some(STAT_GROUP_FULL), FOREIGN_REFUSED);
    }
    let state = ProcState {
        identity,
        level: UNARMED,
        ns_pid,
        slot,
        slot_gen: tenancy(slot),
        group,
        _pad: 0,
        counters: [0; NR_MM_COUNTERS],
    };
    let flags = if replacing.is_some() {
        BPF_ANY
    } else {
        BPF_NOEXIST
    };
    match PROCS.insert(host_pid, state, flags) {
        Ok(()) => {
            if !counted {
                if let Some(old) = replacing {
                    leave(old.group);
                }
                join(group);
            }
            state
        }
        Err(E2BIG) => {
            count(STAT_PROCS_FULL);
            IGNORED
        }
        // BPF_NOEXIST lost a race with another CPU meeting the same process: use its entry.
        // SAFETY: plain data.
        Err(_) => unsafe { PROCS.get(host_pid) }.copied().unwrap_or(IGNORED),
    }
}

/// Entries `group` holds in `PROCS`. The count is signed: an exit counted after the LRU reset
/// its group (or a rare race between a replacement and an exit) may take it below zero, which
/// only loosens the share for a while; a check before each decrement could, racing, wrap it
/// to the top and lock the group out for good.
#[inline(always)]
fn held(group: u32) -> u64 {
    // SAFETY: plain data.
    let n = unsafe { GROUPS.get(group) }.copied().unwrap_or(0) as i64;
    n.max(0) as u64
}

/// Counts a new entry of `group`. The adds are atomic (two CPUs admitting processes of one
/// container at once both count); a group the LRU evicted starts again from its next entry.
#[inline(always)]
pub fn join(group: u32) {
    if group == 0 {
        return;
    }
    if GROUPS.get_ptr_mut(group).is_none() && GROUPS.insert(group, 1, BPF_NOEXIST).is_ok() {
        return;
    }
    if let Some(p) = GROUPS.get_ptr_mut(group) {
        add(p, 1);
    }
}

/// Uncounts an entry of `group` that left `PROCS`.
#[inline(always)]
pub fn leave(group: u32) {
    if group == 0 {
        return;
    }
    if let Some(p) = GROUPS.get_ptr_mut(group) {
        add(p, u64::MAX);
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
    notify_rss(ctx, kind, host_pid, ns_pid, slot, 0, 0);
}

/// `notify`, with an RSS and its anonymous part (`Event::rss`, `Event::level`).
pub fn notify_rss<C: EbpfContext>(
    ctx: &C,
    kind: EventKind,
    host_pid: u32,
    ns_pid: u32,
    slot: u32,
    rss: u64,
    anon: u64,
) {
    let event = Event {
        kind: kind as u32,
        host_pid,
        ns_pid,
        _pad: 0,
        identity: Identity { mm: 0, start_ns: 0 },
        rss,
        level: anon,
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    emit::hand_over(ctx, &crate::maps::EMIT_TP, slot, &event);
}
