//! Process lifecycle: forget a process when it execs or exits.
//!
//! After `exec` it is a new program, usually just moved into its container's cgroup (runtimes
//! place the process before exec), so it must be reported afresh for userspace to arm a level
//! against its new limit; userspace hears of the exec so that its own state starts afresh too.
//! After exit its tgid (or its `mm_struct` address, cached per CPU) may be recycled.
//! A program the kernel does not follow yet is announced to its tenant too: `rss_stat` may be
//! detached (userspace's gate, `detect::floor`), and then an exec is the only prompt sign of a
//! new container's process, whose cgroup must be watched before it can grow.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::tracepoint,
    programs::TracePointContext,
};
use memprof_common::EventKind;

use crate::{
    maps::{bump_epoch, FOREIGN, PROCS},
    procs::{leave, notify, KERNEL_EPOCH},
    task,
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn process_exec(ctx: TracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: plain data.
    let Some((ns_pid, slot, group)) =
        unsafe { PROCS.get(tgid) }.map(|s| (s.ns_pid, s.slot, s.group))
    else {
        // SAFETY: helper without preconditions.
        let current = unsafe { bpf_get_current_task() } as u64;
        if let Some((slot, ns_pid, _)) = task::tenant_of(current, tgid) {
            notify(&ctx, EventKind::Exec, tgid, ns_pid, slot);
        }
        return 0;
    };
    if PROCS.remove(tgid).is_ok() {
        leave(group);
        bump_epoch(KERNEL_EPOCH);
        notify(&ctx, EventKind::Exec, tgid, ns_pid, slot);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn process_exit(_ctx: TracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Threads come and go all the time; only the leader's exit ends the process.
    if pid != tgid {
        return 0;
    }
    // SAFETY: plain data.
    let group = unsafe { PROCS.get(tgid) }.map_or(0, |s| s.group);
    if PROCS.remove(tgid).is_ok() {
        leave(group);
        bump_epoch(KERNEL_EPOCH);
    }
    // Both: a reused PID may have left an entry in the other map (see `procs::remember`).
    let _ = FOREIGN.remove(tgid);
    0
}
