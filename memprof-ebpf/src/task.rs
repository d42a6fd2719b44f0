//! Who a task is: its host tgid, which tenant (memprof instance) watches it under which PID,
//! the PID the reading memprof knows it by, and its memory cgroup.
//!
//! Rust BPF has no CO-RE, so every offset comes from the running kernel's BTF via the
//! `.rodata` globals in `maps::g`. These reads happen once per newly seen process (a cache or
//! map miss) and once per process for each listing of the safety net, so they use
//! `bpf_probe_read_kernel`, which works on any pointer.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::{g, TENANTS};

#[inline(always)]
pub fn read<T>(base: u64, off: u64) -> Option<T> {
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

/// The task's process's `struct pid` and its depth (0 in the initial namespace).
#[inline(always)]
fn leader_pid(task: u64) -> Option<(u64, u64)> {
    let leader = read::<u64>(task, g::TASK_GROUP_LEADER_OFF())?;
    let pid = read::<u64>(leader, g::TASK_THREAD_PID_OFF())?;
    Some((pid, read::<u32>(pid, g::PID_LEVEL_OFF())? as u64))
}

/// `pid->numbers[depth]`: the number `pid` has in the namespace at `depth`.
#[inline(always)]
fn upid(pid: u64, depth: u64) -> u64 {
    pid + g::PID_NUMBERS_OFF() + depth * g::UPID_SIZE()
}

/// The inode of the PID namespace of `upid`.
#[inline(always)]
fn ns_inum(upid: u64) -> Option<u32> {
    let ns = read::<u64>(upid, g::UPID_NS_OFF())?;
    read::<u32>(ns, g::PIDNS_INUM_OFF())
}

/// The tenant that watches the task's process, the PID it has there, and its group (see
/// `ProcState::group`; 0 when the kernel's offsets are unknown): the innermost of the
/// process's PID namespaces that a tenant registered in `TENANTS`, or `None` when no tenant
/// can see it (it lives in another namespace branch, e.g. a pod without memprof). A memprof
/// in the initial namespace sees every process with its host PID; it never shares programs,
/// and groups processes by the namespace at depth 1 (a container's). A tenant in a pod groups
/// all it sees under its own namespace, the pod's: namespaces unshared inside either stay in
/// the group.
#[inline(always)]
pub fn tenant_of(task: u64, host_pid: u32) -> Option<(u32, u32, u32)> {
    if g::PIDNS_IS_INIT() != 0 {
        if g::TASK_THREAD_PID_OFF() == 0 {
            return Some((0, host_pid, 0));
        }
        let group = leader_pid(task)
            .and_then(|(pid, level)| ns_inum(upid(pid, level.min(1))))
            .unwrap_or(0);
        return Some((0, host_pid, group));
    }
    let (pid, level) = leader_pid(task)?;
    // `pid->numbers[i]` is the number this pid has in the namespace at depth `i`; userspace
    // cannot know its own depth when /proc is its own, so tenants are found by inode.
    for j in 0..MAX_PIDNS_DEPTH {
        if j > level {
            return None;
        }
        let upid = upid(pid, level - j);
        let inum = ns_inum(upid)?;
        // SAFETY: plain data.
        if let Some(&slot) = unsafe { TENANTS.get(inum) } {
            return read::<i32>(upid, g::UPID_NR_OFF()).map(|nr| (slot, nr as u32, inum));
        }
    }
    None
}

/// The PID the task's process has in the PID namespace of the task running this program (a
/// memprof reading the kernel's listing), `None` when it has none there.
#[inline(always)]
pub fn pid_seen_by_current(task: u64) -> Option<u32> {
    // SAFETY: helper without preconditions.
    let me = unsafe { bpf_get_current_task() };
    let (mine, depth) = leader_pid(me)?;
    let (pid, level) = leader_pid(task)?;
    if level < depth {
        return None;
    }
    let (mine, theirs) = (upid(mine, depth), upid(pid, depth));
    if read::<u64>(theirs, g::UPID_NS_OFF())? != read::<u64>(mine, g::UPID_NS_OFF())? {
        return None;
    }
    read::<i32>(theirs, g::UPID_NR_OFF()).map(|nr| nr as u32)
}

/// The kernfs id (inode number) of the directory of the task's memory cgroup, `None` where
/// the kernel has no memory controller.
#[inline(always)]
pub fn memcg_id(task: u64) -> Option<u64> {
    if g::TASK_CGROUPS_OFF() == 0 {
        return None;
    }
    let css_set = read::<u64>(task, g::TASK_CGROUPS_OFF())?;
    let css = read::<u64>(css_set, g::CSS_SET_MEMORY_OFF()).filter(|&c| c != 0)?;
    let cgroup = read::<u64>(css, g::CSS_CGROUP_OFF())?;
    let kn = read::<u64>(cgroup, g::CGROUP_KN_OFF())?;
    read::<u64>(kn, g::KERNFS_ID_OFF())
}

/// Deepest PID namespace nesting searched for a tenant's namespace.
const MAX_PIDNS_DEPTH: u64 = 8;
