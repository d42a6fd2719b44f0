//! The node as memprof finds it: the kernel release, BTF, tracefs, the capabilities, the
//! cgroup hierarchy and its memory controller, and the bpffs when sidecars share programs.
use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use super::{capabilities, Check};
use crate::{config::Config, logs::escape};

/// `statfs.f_type` of bpffs (uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub(super) fn checks(cfg: &Config) -> Vec<Check> {
    let mut checks = vec![Check::ok("kernel", release()), btf(), tracefs()];
    checks.extend(capabilities::checks());
    checks.extend(cgroups());
    if let Some(dir) = &cfg.bpffs {
        checks.push(bpffs(dir));
    }
    checks
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Whether the running kernel is `major.minor` or later (`6.1.0-18-amd64`, `5.15.0-foo`).
pub(super) fn release_at_least(major: u32, minor: u32) -> bool {
    let release = release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let found = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    found >= (major, minor)
}

fn btf() -> Check {
    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
    if Path::new(VMLINUX).is_file() {
        Check::ok(
            "BTF",
            format!("{VMLINUX}: the BTF tracepoint reads the counters straight from mm_struct"),
        )
    } else {
        Check::warn(
            "BTF",
            format!(
                "no {VMLINUX}: only the classic tracepoint kmem/rss_stat (about 10 % on each \
                 page fault instead of 4 %)"
            ),
            "run a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

/// Where the daemon looks for tracefs, and mounts it when it finds none (`kernel::offsets`).
fn tracefs() -> Check {
    let mounted = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|dir| Path::new(dir).join("events").is_dir());
    match mounted {
        Some(dir) => Check::ok("tracefs", format!("mounted at {dir}")),
        None if capabilities::sys_admin() => Check::ok(
            "tracefs",
            "not mounted; memprof mounts it at /sys/kernel/tracing (it holds SYS_ADMIN)",
        ),
        None => Check::fail(
            "tracefs",
            "not mounted, and memprof cannot mount it without SYS_ADMIN: no tracepoint formats",
            "mount it (mount -t tracefs tracefs /sys/kernel/tracing) or grant SYS_ADMIN",
        ),
    }
}

/// The cgroup version and where the memory controller is, from memprof's own mounts.
fn cgroups() -> [Check; 2] {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (mut v1, mut v1_memory, mut v2) = (false, None, None);
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let right: Vec<&str> = right.split_whitespace().collect();
        match right.as_slice() {
            ["cgroup2", ..] => v2 = v2.or(Some(point)),
            ["cgroup", _, options, ..] => {
                v1 = true;
                if options.split(',').any(|o| o == "memory") {
                    v1_memory = Some(point);
                }
            }
            _ => {}
        }
    }
    let version = match (v1, v2) {
        (true, Some(p)) => Check::ok(
            "cgroup",
            format!("v1-hybrid (v1 controllers, v2 at {})", escape(p)),
        ),
        (true, None) => Check::ok("cgroup", "v1"),
        (false, Some(p)) => Check::ok("cgroup", format!("v2 at {}", escape(p))),
        (false, None) => Check::warn(
            "cgroup",
            "no cgroup file system mounted",
            "mount the node's /sys/fs/cgroup (read-only is enough for the limits)",
        ),
    };
    let v2_memory = v2.filter(|p| {
        std::fs::read_to_string(Path::new(p).join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
    });
    let memory = match (v1_memory, v2_memory) {
        (Some(p), _) => Check::ok("memory cgroup", format!("v1 controller at {}", escape(p))),
        (None, Some(p)) => Check::ok("memory cgroup", format!("v2 controller at {}", escape(p))),
        (None, None) => Check::warn(
            "memory cgroup",
            "no memory controller: every limit is the node's MemTotal, no container trigger",
            "enable the memory controller (v2: +memory in cgroup.subtree_control; v1: \
             cgroup_enable=memory on the kernel command line)",
        ),
    };
    [version, memory]
}

/// `MEMPROF_BPFFS`: sidecars share one set of kernel programs through it.
fn bpffs(dir: &Path) -> Check {
    let shown = escape(&dir.display().to_string());
    if is_bpffs(dir) {
        Check::ok(
            "bpffs",
            format!("{shown} is a bpffs: kernel programs shared (MEMPROF_BPFFS)"),
        )
    } else {
        Check::warn(
            "bpffs",
            format!("{shown} is not a bpffs mount: this memprof loads programs of its own"),
            "mount the node's /sys/fs/bpf there, or MEMPROF_BPFFS=off",
        )
    }
}

fn is_bpffs(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}
