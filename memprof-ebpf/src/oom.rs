//! Reports the OOM killer's victims, so the log (and tests) can show whether a profile was
//! stored before the kill.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use memprof_common::{Event, EventKind};

use crate::maps::{g, EVENTS, PROCS};

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> i32 {
    // SAFETY: offset of `pid` from the tracepoint's format file.
    let Ok(host_pid) = (unsafe { ctx.read_at::<i32>(g::TP_OOM_PID_OFF() as usize) }) else {
        return 0;
    };
    let host_pid = host_pid as u32;
    // SAFETY: plain data; the victim is normally known from its earlier RSS events.
    let ns_pid = unsafe { PROCS.get(host_pid) }.map_or(0, |s| s.ns_pid);
    let event = Event {
        kind: EventKind::OomVictim as u32,
        host_pid,
        ns_pid,
        _pad: 0,
        rss: 0,
        level: 0,
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = EVENTS.output::<Event>(event, 0);
    0
}
