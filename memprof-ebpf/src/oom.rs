//! Reports the OOM killer's victims among watched processes to their tenant, so the log (and
//! tests) can show whether a profile was stored before the kill, and marks Go victims for the
//! at-kill heap walk (`goheap.rs`). Victims no tenant sees (pods without memprof) are not
//! reported.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memprof_common::{go_key, EventKind};

use crate::{
    maps::{g, GO_PROCS, PROCS, VICTIMS},
    procs::notify_rss,
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
    let (ns_pid, slot) = match unsafe { PROCS.get(host_pid) } {
        Some(state) => (state.ns_pid, state.slot),
        None if g::PIDNS_IS_INIT() != 0 => (host_pid, 0),
        None => return 0,
    };
    // Mark before notifying: the walk must not miss a SIGKILL delivered meanwhile.
    // SAFETY: plain data.
    let key = go_key(slot, ns_pid);
    if unsafe { GO_PROCS.get(key) }.is_some() {
        let _ = VICTIMS.insert(host_pid, key, 0);
    }
    // The victim's RSS at the kill, as the OOM killer counted it (kB): its memory leaves its
    // cgroup as it exits, before userspace can read the cgroup.
    let kb = |off: u64| match off {
        0 => 0,
        // SAFETY: offset of an `unsigned long` field from the tracepoint's format file.
        _ => unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0),
    };
    let anon = kb(g::TP_OOM_ANON_OFF()) << 10;
    let rss = anon + (kb(g::TP_OOM_FILE_OFF()) << 10) + (kb(g::TP_OOM_SHMEM_OFF()) << 10);
    notify_rss(
        &ctx,
        EventKind::OomVictim,
        host_pid,
        ns_pid,
        slot,
        rss,
        anon,
    );
    0
}
