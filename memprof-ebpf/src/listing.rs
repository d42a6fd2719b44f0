//! The kernel's listing of processes: a task iterator that writes one `Listed` record per
//! process of the reading memprof's PID namespace. The safety net's listed round reads it in
//! one pass instead of listing /proc and opening two files of every process: the work per
//! process is a few loads in the kernel, which keeps memprof's idle cost nearly flat in the
//! number of processes.
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_seq_write;
use memprof_common::{Listed, LISTED_MEMCG, LISTED_MM};

use crate::{maps::g, rss, task};

/// `iter/task`: called with each task of the namespace (threads too), then once with none.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn list_processes(ctx: *mut c_void) -> i32 {
    // SAFETY: a task iterator's context is `{ struct bpf_iter_meta *meta; struct task_struct
    // *task; }`; the verifier types both loads.
    let (meta, task) = unsafe { (*(ctx as *const u64), *(ctx as *const u64).add(1)) };
    if task == 0 {
        return 0;
    }
    let Some(record) = listed(task) else {
        return 0;
    };
    // SAFETY: `meta->seq`, the iterator's output, is the first member of `bpf_iter_meta`; the
    // record is a plain, fully initialised struct on the stack.
    unsafe {
        let seq = *(meta as *const *mut c_void);
        bpf_seq_write(
            seq as *mut _,
            &record as *const Listed as *const c_void,
            core::mem::size_of::<Listed>() as u32,
        );
    }
    0
}

/// The record of a process's leader; threads are passed over (their process is listed once).
#[inline(always)]
fn listed(task: u64) -> Option<Listed> {
    if task::read::<u64>(task, g::TASK_GROUP_LEADER_OFF())? != task {
        return None;
    }
    let mut record = Listed {
        ns_pid: task::pid_seen_by_current(task)?,
        start_ns: task::read::<u64>(task, g::TASK_START_OFF())?,
        ..Listed::default()
    };
    let mm = task::read::<u64>(task, g::TASK_MM_OFF())?;
    if mm != 0 {
        record.flags |= LISTED_MM;
        record.rss = rss::mm_rss(mm as *const u8, true);
    }
    if let Some(id) = task::memcg_id(task) {
        record.flags |= LISTED_MEMCG;
        record.memcg = id;
    }
    Some(record)
}
