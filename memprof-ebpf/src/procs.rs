//! Which processes are memprof's, and their per-process state: looking an entry up for the
//! process the kernel meets (never trusting a stale one), admitting new processes, and
//! reporting crossings.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use memprof_common::{
    Event, EventKind, Identity, ProcState, DISARMED, NR_MM_COUNTERS, STAT_PROCS_FULL, UNARMED,
};

use crate::{
    maps::{bump_epoch, count, EVENTS, FOREIGN, PROCS},
    task,
};

pub const KERNEL_EPOCH: u32 = 0;
pub const USER_EPOCH: u32 = 1;

/// `bpf_map_update_elem` flags.
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
/// `-E2BIG`: the map is full.
const E2BIG: i32 = -7;

/// State of a process the kernel does not follow: another PID namespace's, or no room.
const IGNORED: ProcState = ProcState {
    identity: Identity { mm: 0, start_ns: 0 },
    level: DISARMED,
    ns_pid: 0,
    _pad: 0,
    counters: [0; NR_MM_COUNTERS],
};

/// The state of process `host_pid`, whose task is `task` and whose address space is `mm`,
/// given its `PROCS` entry as the caller just looked it up. An entry for another identity
/// (the PID was reused, or the process ran exec and the lifecycle hooks have not caught up)
/// is replaced, never inherited.
#[inline(always)]
pub fn state_of(host_pid: u32, mm: u64, task: u64, entry: Option<ProcState>) -> ProcState {
    let identity = || Identity {
        mm,
        start_ns: task::start_ns(task),
    };
    match entry {
        Some(state) => {
            let identity = identity();
            if state.identity == identity {
                state
            } else {
                remember(host_pid, identity, task, BPF_ANY)
            }
        }
        // SAFETY: plain data.
        None if unsafe { FOREIGN.get(host_pid) }.is_some() => IGNORED,
        None => remember(host_pid, identity(), task, BPF_NOEXIST),
    }
}

/// Starts following a process. One visible to memprof is reported on its next counter change
/// so that userspace can arm its level; one in another PID namespace branch goes to `FOREIGN`
/// and never takes a `PROCS` slot.
#[inline(always)]
pub fn remember(host_pid: u32, identity: Identity, task: u64, flags: u64) -> ProcState {
    let ns_pid = task::ns_pid(task, host_pid);
    if ns_pid == 0 {
        if flags == BPF_ANY {
            // The PID belonged to one of ours whose exit was missed: free its slot.
            let _ = PROCS.remove(host_pid);
        }
        let _ = FOREIGN.insert(host_pid, 0, 0);
        return IGNORED;
    }
    let state = ProcState {
        identity,
        level: UNARMED,
        ns_pid,
        _pad: 0,
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

/// Disarms the process, then tells userspace that it reached `level`: disarming first means
/// userspace's re-arm, which follows the event, can never be overwritten by the disarm.
/// Returns false (level restored) when the ring buffer is full; the next change retries.
#[inline(always)]
pub fn report(host_pid: u32, ns_pid: u32, identity: Identity, rss: u64, level: u64) -> bool {
    let Some(state) = PROCS.get_ptr_mut(host_pid) else {
        return false;
    };
    // SAFETY: valid map value pointer.
    unsafe { (*state).level = DISARMED };
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
    if EVENTS.output::<Event>(event, 0).is_err() {
        // Userspace never heard of this crossing, so it cannot have re-armed meanwhile.
        // SAFETY: valid map value pointer.
        unsafe { (*state).level = level };
        bump_epoch(KERNEL_EPOCH);
        return false;
    }
    true
}

/// Sends a lifecycle or OOM event that carries no measurement.
#[inline(always)]
pub fn notify(kind: EventKind, host_pid: u32, ns_pid: u32) {
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
    let _ = EVENTS.output::<Event>(event, 0);
}
