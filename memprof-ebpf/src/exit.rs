//! Forgets a process when its group leader exits, so that a recycled tgid (or a recycled
//! `mm_struct` address in a per-CPU cache) starts fresh.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext};

use crate::maps::{bump_epoch, PROCS};

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn process_exit(_ctx: TracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Threads come and go all the time; only the leader's exit ends the process.
    if pid == tgid && PROCS.remove(tgid).is_ok() {
        bump_epoch(0);
    }
    0
}
