//! Who a task is: its host tgid and its PID in memprof's own PID namespace.
//!
//! Rust BPF has no CO-RE, so every offset comes from the running kernel's BTF via the
//! `.rodata` globals in `maps::g`. These reads happen once per newly seen process (a cache or
//! map miss), so they use `bpf_probe_read_kernel`, which works on any pointer.
use aya_ebpf::helpers::bpf_probe_read_kernel;

use crate::maps::g;

#[inline(always)]
fn read<T>(base: u64, off: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address and returns an error.
    unsafe { bpf_probe_read_kernel((base + off) as *const T) }.ok()
}

/// The task that owns `mm` (`mm->owner`, CONFIG_MEMCG) and its tgid, or `None` while the mm
/// is being set up or torn down. During `fork`, `rss_stat` fires on the child's mm (page
/// tables are copied) while the child task still carries its parent's tgid and has no `mm`
/// yet; only an owner that actually uses the mm is trusted.
#[inline(always)]
pub fn mm_owner(mm: u64) -> Option<(u64, u32)> {
    let owner = read::<u64>(mm, g::MM_OWNER_OFF()).filter(|&t| t != 0)?;
    if read::<u64>(owner, g::TASK_MM_OFF())? != mm {
        return None;
    }
    Some((owner, tgid(owner)?))
}

/// Start time of the task's process (its leader's `start_boottime`), or 0 when the kernel's
/// offsets are unknown (classic hook without BTF).
#[inline(always)]
pub fn start_ns(task: u64) -> u64 {
    if g::TASK_START_OFF() == 0 {
        return 0;
    }
    read::<u64>(task, g::TASK_GROUP_LEADER_OFF())
        .and_then(|leader| read::<u64>(leader, g::TASK_START_OFF()))
        .unwrap_or(0)
}

#[inline(always)]
pub fn tgid(task: u64) -> Option<u32> {
    read::<u32>(task, g::TASK_TGID_OFF())
}

/// The task's process ID as memprof's PID namespace numbers it, or 0 when the process is not
/// visible from there (it lives in another namespace branch, e.g. another pod).
#[inline(always)]
pub fn ns_pid(task: u64, host_pid: u32) -> u32 {
    if g::PIDNS_IS_INIT() != 0 {
        return host_pid;
    }
    ns_pid_inner(task).unwrap_or(0)
}

/// Deepest PID namespace nesting searched for memprof's own namespace.
const MAX_PIDNS_DEPTH: u64 = 8;

#[inline(always)]
fn ns_pid_inner(task: u64) -> Option<u32> {
    let leader = read::<u64>(task, g::TASK_GROUP_LEADER_OFF())?;
    let pid = read::<u64>(leader, g::TASK_THREAD_PID_OFF())?;
    let level = read::<u32>(pid, g::PID_LEVEL_OFF())? as u64;
    // `pid->numbers[i]` is the number this pid has in the namespace at depth `i`; find the one
    // whose namespace is memprof's (userspace cannot know its own depth when /proc is its own).
    for i in 0..MAX_PIDNS_DEPTH {
        if i > level {
            return None;
        }
        let upid = pid + g::PID_NUMBERS_OFF() + i * g::UPID_SIZE();
        let ns = read::<u64>(upid, g::UPID_NS_OFF())?;
        if read::<u32>(ns, g::PIDNS_INUM_OFF())? as u64 == g::MY_PIDNS_INUM() {
            return read::<i32>(upid, g::UPID_NR_OFF()).map(|nr| nr as u32);
        }
    }
    None
}
