//! Which group a process counts in for memprof's shares of the kernel's maps, as the kernel
//! programs count it (`ProcState::group`): to a memprof in the initial PID namespace, the
//! process's namespace at depth 1 (its container's); to a sidecar, its own (the pod's).
//! Namespaces a tenant unshares inside stay in its group, so unsharing gains it nothing.
//! Also: the processes memprof's own PID namespace holds (`listed`).
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
};

/// `NS_GET_PARENT` (`_IO(0xb7, 0x2)`): the parent of a PID namespace.
const NS_GET_PARENT: libc::c_ulong = 0xb702;
/// The initial PID namespace's inode (`PROC_PID_INIT_INO`), fixed by the kernel.
pub const INITIAL: u64 = 0xEFFF_FFFC;
/// PID namespaces nest at most 32 deep.
const DEPTH_MAX: usize = 32;

/// The PIDs memprof's /proc lists: every process of its PID namespace (threads are not
/// listed), memprof included. One directory read, however many processes run.
pub fn listed() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The inode of memprof's own PID namespace.
pub fn own() -> std::io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/pid")?.ino())
}

/// The inode of `pid`'s group namespace; `None` when the process is gone or its namespaces
/// cannot be followed up to the initial one.
pub fn group_of(pid: u32) -> Option<u64> {
    let own = own().ok()?;
    if own != INITIAL {
        return Some(own);
    }
    // A procfs namespace link, which the kernel resolves: the process cannot point it elsewhere.
    let mut ns = File::open(format!("/proc/{pid}/ns/pid")).ok()?;
    let mut ino = ns.metadata().ok()?.ino();
    if ino == own {
        return Some(own);
    }
    for _ in 0..DEPTH_MAX {
        // SAFETY: a valid descriptor; the ioctl returns a new descriptor or -1. (The request's
        // type is glibc's c_ulong or musl's c_int: the static image's build is musl.)
        let parent = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT as _) };
        if parent < 0 {
            return None;
        }
        // SAFETY: the ioctl returned a descriptor we own.
        let parent = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(parent) };
        let parent_ino = parent.metadata().ok()?.ino();
        if parent_ino == own {
            return Some(ino);
        }
        (ns, ino) = (parent, parent_ino);
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_process_is_listed() {
        assert!(super::listed().contains(&std::process::id()));
    }

    #[test]
    fn own_process_is_in_own_group() {
        assert_eq!(super::group_of(std::process::id()), super::own().ok());
    }
}
