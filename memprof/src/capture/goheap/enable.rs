//! `MEMPROF_GO_ENABLE_PROFILING`: for a Go program that never references the memory profiler
//! (the linker set `runtime.disableMemoryProfiling`, so the runtime sets `MemProfileRate` to 0
//! as it starts and its heap profile stays empty), memprof writes Go's default rate into the
//! process once it has started, as a blank import of `net/http/pprof` would have. From then on
//! the runtime samples one allocation per 512 KiB allocated on average, with a stack walk and
//! a bucket per distinct stack, as every Go program with the profiler does. Allocations made
//! before the write are not in the profile.
//!
//! Off by default: it writes into another program's memory. What it writes is one word at
//! `runtime.MemProfileRate`, found in the executable's symbol table or code, and only while the word
//! holds 0, the process has the start time it was discovered with and still runs the
//! executable that was parsed (an exec keeps the PID and the start time). `process_vm_writev`
//! cannot change pages the process itself could not write.
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use super::{
    discover::GoProc,
    read::read_word,
    registry::{exe_id, ExeId},
};
use crate::assess::ProcKey;

/// `runtime.MemProfileRate`'s default (Go's `runtime/mprof.go`).
const GO_DEFAULT_RATE: u64 = 512 * 1024;
/// How old a process must be before the write: its runtime sets the rate while it starts
/// (Go ≤ 1.19 in package init, later releases as the scheduler starts), which would undo a
/// write made before.
const STARTED: Duration = Duration::from_secs(2);

/// Where to write, and what the process must still be.
#[derive(Clone, Copy)]
struct Target {
    key: ProcKey,
    rate: u64,
    exe: Option<ExeId>,
}

/// At a Go process's discovery: when its linker turned heap profiling off, turns it on if
/// `enable` (once the process has started, on a thread of its own if it has to wait), and
/// says what happened in one line. `exe`: the identity of the executable that was parsed.
pub fn when_off(key: ProcKey, exe: Option<ExeId>, comm: &str, go: &GoProc, enable: bool) {
    if !go.profiler_off {
        return;
    }
    if !enable {
        info!(
            pid = key.pid,
            comm,
            version = go.version,
            "Go heap profiling is off unless the program sets MemProfileRate itself; no \
             endpoint-free profile is possible then: {}",
            super::PROFILING_OFF
        );
        return;
    }
    let target = Target {
        key,
        rate: go.rate,
        exe,
    };
    let comm = comm.to_string();
    let wait = age(key.pid).map_or(STARTED, |age| STARTED.saturating_sub(age));
    let attempt = move || {
        std::thread::sleep(wait);
        match turn_on(target) {
            Ok(()) => info!(
                pid = key.pid,
                comm,
                rate = GO_DEFAULT_RATE,
                "Go heap profiling turned on (MEMPROF_GO_ENABLE_PROFILING): MemProfileRate was 0"
            ),
            Err(e) => warn!(
                pid = key.pid,
                comm, "Go heap profiling not turned on: {e:#}"
            ),
        }
    };
    if wait.is_zero() {
        attempt();
    } else if let Err(e) = std::thread::Builder::new()
        .name("memprof-go-rate".into())
        .spawn(attempt)
    {
        warn!(pid = key.pid, "Go heap profiling not turned on: {e}");
    }
}

/// How long the process has run (`/proc/uptime` against its start time).
fn age(pid: u32) -> Option<Duration> {
    let start_ticks = crate::assess::start_time(pid)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(
        (uptime - start_ticks as f64 / hz).max(0.0),
    ))
}

/// Sets `MemProfileRate` to Go's default when it is 0 and the process is still the one
/// discovered, and checks that it holds.
fn turn_on(t: Target) -> Result<()> {
    let pid = t.key.pid;
    let now = read_word(pid, t.rate).context("reading MemProfileRate")?;
    if now != 0 {
        bail!("MemProfileRate is {now} already");
    }
    if crate::assess::start_time(pid) != Some(t.key.start) {
        bail!("the process is gone");
    }
    if t.exe.is_none() || exe_id(pid) != t.exe {
        bail!("the process runs another executable now");
    }
    write_word(pid, t.rate, GO_DEFAULT_RATE)?;
    match read_word(pid, t.rate)? {
        GO_DEFAULT_RATE => Ok(()),
        other => bail!("MemProfileRate reads {other} after the write"),
    }
}

/// Writes one word into the process at `addr` (`process_vm_writev`, the same permission as
/// reading it: CAP_SYS_PTRACE over the process).
fn write_word(pid: u32, addr: u64, value: u64) -> Result<()> {
    let bytes = value.to_ne_bytes();
    let local = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: `local` covers `bytes`, which outlives the call and is only read by the kernel.
    let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n != bytes.len() as isize {
        bail!(
            "writing MemProfileRate at {addr:#x}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
