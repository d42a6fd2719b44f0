//! Reports the OOM killer's victims among memprof's own processes, so the log (and tests) can
//! show whether a profile was stored before the kill, and marks Go victims for the at-kill heap
//! walk (`goheap.rs`). Other PID namespaces' victims (other
//! pods, for a sidecar) are none of memprof's business and are not reported.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memprof_common::EventKind;

use crate::{
    maps::{g, GO_PROCS, PROCS, VICTIMS},
    procs::notify,
};

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> i32 {
    // SAFETY: offset of `pid` from the tracepoint's format file.
    let Ok(host_pid) = (unsafe { ctx.read_at::<i32>(g::TP_OOM_PID_OFF() as usize) }) else {
        return 0;
    };
    let host_pid = host_pid as u32;
    // The tracepoint runs in the context of the task that ran out of memory, not the victim,
    // so the victim is known through its entry (a watched process has one).
    // SAFETY: plain data.
    let ns_pid = match unsafe { PROCS.get(host_pid) } {
        Some(state) => state.ns_pid,
        None if g::PIDNS_IS_INIT() != 0 => host_pid,
        None => return 0,
    };
    // Mark before notifying: the walk must not miss a SIGKILL delivered meanwhile.
    // SAFETY: plain data.
    if unsafe { GO_PROCS.get(ns_pid) }.is_some() {
        let _ = VICTIMS.insert(host_pid, 1, 0);
    }
    notify(EventKind::OomVictim, host_pid, ns_pid);
    0
}
