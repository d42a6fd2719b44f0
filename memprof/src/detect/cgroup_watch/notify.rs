//! The kernel's own notifications about a memory cgroup, as pollable file descriptors:
//! - cgroup v1: a usage threshold (`cgroup.event_control` with an eventfd and an open
//!   `memory.usage_in_bytes`); the kernel signals the eventfd when usage crosses it, up or
//!   down, checked as pages are charged.
//! - cgroup v2: `memory.events` signals POLLPRI whenever a counter changes (`high`, `max`:
//!   reclaim at the limit; `oom`), and a PSI trigger on `memory.pressure` signals POLLPRI when
//!   the cgroup's tasks stall on memory for `PSI_STALL_US` within `PSI_WINDOW_US`.
//!
//! Registering a threshold or a trigger writes to the cgroup: through a read-only mount it
//! fails, and the watcher is told what is left.
use std::{
    fs::File,
    io::{Read, Seek, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::{unix::AsyncFd, Interest};

use crate::cgroup::{Files, View};

/// Stall time (µs) within the window that fires the PSI trigger: a tenth of it.
const PSI_STALL_US: u64 = 100_000;
const PSI_WINDOW_US: u64 = 1_000_000;

pub struct Notifier {
    threshold: Option<(AsyncFd<OwnedFd>, File)>,
    events: Option<AsyncFd<File>>,
    psi: Option<AsyncFd<File>>,
    /// Why a notification is missing, for the log.
    missing: Vec<String>,
}

impl Notifier {
    pub fn none() -> Self {
        Self {
            threshold: None,
            events: None,
            psi: None,
            missing: Vec::new(),
        }
    }

    /// Registers what the first view that allows it offers; a usage threshold at `threshold`
    /// bytes (v1).
    pub fn arm(views: &[View], threshold: u64) -> Self {
        let mut n = Self::none();
        for v in views {
            if v.v2() {
                n.events = n.events.or_else(|| note(&mut n.missing, events(v)));
                n.psi = n.psi.or_else(|| note(&mut n.missing, psi(v)));
            } else {
                n.threshold = n
                    .threshold
                    .or_else(|| note(&mut n.missing, usage_threshold(v, threshold)));
            }
        }
        if n.threshold.is_some() || n.events.is_some() || n.psi.is_some() {
            n.missing.clear();
        }
        n
    }

    /// A usage threshold at `threshold` bytes alone, on the first v1 view that allows it (v2
    /// has none).
    pub fn threshold(views: &[View], threshold: u64) -> Self {
        let mut n = Self::none();
        for v in views.iter().filter(|v| !v.v2()) {
            n.threshold = note(&mut n.missing, usage_threshold(v, threshold));
            if n.threshold.is_some() {
                n.missing.clear();
                break;
            }
        }
        n
    }

    /// Whether a usage threshold notifies (the timer can then be a slow safety net).
    pub fn thresholds(&self) -> bool {
        self.threshold.is_some()
    }

    /// What notifies, or why nothing does.
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if self.threshold.is_some() {
            what.push("usage threshold (eventfd)".to_string());
        }
        if self.events.is_some() {
            what.push("memory.events".to_string());
        }
        if self.psi.is_some() {
            what.push("PSI trigger".to_string());
        }
        if what.is_empty() {
            return format!("nothing, polling only ({})", self.missing.join("; "));
        }
        what.join(" + ")
    }

    /// Waits for the next notification; never returns when nothing notifies.
    pub async fn wait(&mut self) -> &'static str {
        let threshold = async {
            match &self.threshold {
                Some((efd, _)) => loop {
                    let mut guard = efd.readable().await.ok()?;
                    let mut count = [0u8; 8];
                    let raw = efd.get_ref().as_raw_fd();
                    // SAFETY: reading 8 bytes into an 8-byte buffer from our eventfd.
                    let n = unsafe { libc::read(raw, count.as_mut_ptr().cast(), 8) };
                    if n == 8 {
                        return Some("eventfd");
                    }
                    guard.clear_ready();
                },
                None => std::future::pending().await,
            }
        };
        let woke = tokio::select! {
            v = threshold => v,
            v = priority(self.events.as_ref(), "memory.events") => v,
            v = priority(self.psi.as_ref(), "psi") => v,
        };
        woke.unwrap_or_else(|| {
            // The descriptor failed: stop using notifications, the timer goes on.
            *self = Self::none();
            "poll"
        })
    }
}

/// Waits for POLLPRI on a cgroup file, then reads it again: kernfs signals a change once per
/// read.
async fn priority(fd: Option<&AsyncFd<File>>, name: &'static str) -> Option<&'static str> {
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    let mut guard = fd.ready(Interest::PRIORITY).await.ok()?;
    let mut f = fd.get_ref();
    let _ = f.rewind();
    let _ = f.read(&mut [0u8; 512]);
    guard.clear_ready();
    Some(name)
}

/// Registers `inner` with tokio's reactor for `interest`.
fn register<T: AsRawFd>(inner: T, interest: Interest) -> Result<AsyncFd<T>, String> {
    // SAFETY: `inner` owns its descriptor (an `OwnedFd` or a `File`) and is moved into the
    // `AsyncFd`, which never replaces or closes it while registered.
    unsafe { AsyncFd::register_with_interest(inner, interest) }
        .map_err(|e| format!("epoll: {}", std::io::Error::from(e)))
}

fn note<T>(missing: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| missing.push(e)).ok()
}

/// The cgroup's files are opened through its verified directory only (`View::open_file`): a
/// write meant for `cgroup.event_control` or `memory.pressure` cannot be redirected to a file
/// the process linked or mounted there.
fn usage_threshold(view: &View, level: u64) -> Result<(AsyncFd<OwnedFd>, File), String> {
    let usage = view.open_file("memory.usage_in_bytes", libc::O_RDONLY)?;
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a new descriptor we own.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    let line = format!("{} {} {level}", efd.as_raw_fd(), usage.as_raw_fd());
    view.open_file("cgroup.event_control", libc::O_WRONLY)?
        .write_all(line.as_bytes())
        .map_err(|e| format!("cgroup.event_control: {e}"))?;
    let efd = register(efd, Interest::READABLE)?;
    Ok((efd, usage))
}

fn events(view: &View) -> Result<AsyncFd<File>, String> {
    register(
        view.open_file("memory.events", libc::O_RDONLY)?,
        Interest::PRIORITY,
    )
}

fn psi(view: &View) -> Result<AsyncFd<File>, String> {
    let mut f = view.open_file("memory.pressure", libc::O_RDWR)?;
    let trigger = format!("some {PSI_STALL_US} {PSI_WINDOW_US}\0");
    f.write_all(trigger.as_bytes())
        .map_err(|e| format!("memory.pressure: {e}"))?;
    register(f, Interest::PRIORITY)
}
