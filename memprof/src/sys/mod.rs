//! Small system calls several stages need that std does not offer: `flock`, opening and
//! reading files a watched process controls (`files`), which file system a descriptor is
//! on, asked without reaching it (`mounts`), the PID namespace a process counts in and the
//! processes memprof's own holds (`pidns`), a thread that cannot open files (`no_open`),
//! giving freed heap back, and a timer that may never fire.
use std::{io, os::fd::AsRawFd, time::Instant};

pub mod files;
pub mod mounts;
pub mod no_open;
pub mod pidns;

/// Sleeps until `at`, or forever when there is none: one arm of a `select!` whose deadline
/// comes and goes.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Hands the heap's free pages back to the kernel. glibc keeps what a burst of small
/// allocations freed (start-up's BTF parse leaves ~17 MiB resident otherwise); musl's
/// allocator gives them back by itself.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `flock(2)` on an open file or directory; `wait: false` fails with `WouldBlock` when held.
pub fn flock(file: &std::fs::File, wait: bool) -> io::Result<()> {
    let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    // SAFETY: a valid open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
