//! Handing events to their tenant. The programs attached to the kernel's hooks may be shared
//! by several memprof instances (one per PID namespace, e.g. a sidecar per pod); each instance
//! is a tenant with a slot, and its own programs sit at that slot of the program arrays. A
//! shared program puts the event in the per-CPU `OUTBOX` and tail-calls the tenant's emitter,
//! which writes it into the tenant's own ring buffer: no tenant can read another's events,
//! and each tenant's ring buffers are charged to, and freed with, the tenant itself.
//! aya-ebpf 0.2 has no map-of-maps; a program array gives the same routing.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    maps::ProgramArray,
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use memprof_common::{Event, EventKind};

use crate::{
    maps::{bump_epoch, EVENTS, OUTBOX, PROCS},
    procs::KERNEL_EPOCH,
};

/// Tail-calls tenant `slot`'s program in `emit` with `event`. Returns only when the slot has
/// no program (its tenant left): the event is dropped, and the process's entry is resolved
/// again once the slot's generation moves.
#[inline(always)]
pub fn hand_over<C: EbpfContext>(ctx: &C, emit: &ProgramArray, slot: u32, event: &Event) {
    let Some(out) = OUTBOX.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU map value, used by this CPU only until the tail call's target has
    // read it (neither can be preempted).
    unsafe {
        *out = *event;
        emit.tail_call(ctx, slot);
    }
}

/// The tenant's emitter for callers on `tp_btf/rss_stat` (a tail call stays within one
/// program type and, for `tp_btf`, one hook). Loaded, never attached.
#[btf_tracepoint(function = "rss_stat")]
pub fn emit_btf(_ctx: BtfTracePointContext) -> i32 {
    deliver();
    0
}

/// The tenant's emitter for callers on classic tracepoints. Loaded, never attached.
#[tracepoint]
pub fn emit_tp(_ctx: TracePointContext) -> i32 {
    deliver();
    0
}

#[inline(always)]
fn deliver() {
    let Some(event) = OUTBOX.get_ptr(0) else {
        return;
    };
    // SAFETY: see `hand_over`.
    let event = unsafe { *event };
    if EVENTS.output::<Event>(event, 0).is_ok() || event.kind != EventKind::Crossed as u32 {
        return;
    }
    // The tenant never heard of this crossing, so it cannot have re-armed meanwhile: restore
    // the level, and the next counter change retries.
    if let Some(state) = PROCS.get_ptr_mut(event.host_pid) {
        // SAFETY: valid map value pointer.
        unsafe {
            if (*state).identity == event.identity {
                (*state).level = event.level;
                bump_epoch(KERNEL_EPOCH);
            }
        }
    }
}
