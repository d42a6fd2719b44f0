//! Process lifecycle: forget a process when it execs or exits.
//!
//! After `exec` it is a new program, usually just moved into its container's cgroup (runtimes
//! place the process before exec), so it must be reported afresh for userspace to arm a level
//! against its new limit. After exit its tgid (or its `mm_struct` address, cached per CPU)
//! may be recycled and must start fresh.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};

use crate::maps::{bump_epoch, PROCS};

#[inline(always)]
fn forget(tgid: u32) {
    if PROCS.remove(tgid).is_ok() {
        bump_epoch(0);
    }
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn process_exec(_ctx: TracePointContext) -> i32 {
    forget((bpf_get_current_pid_tgid() >> 32) as u32);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn process_exit(_ctx: TracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Threads come and go all the time; only the leader's exit ends the process.
    if pid == tgid {
        forget(tgid);
    }
    0
}
