//! `MEMPROF_GO_ENABLE_PROFILING`: for a Go program that never references the memory profiler
//! (the linker set `runtime.disableMemoryProfiling`, so the runtime set `MemProfileRate` to 0
//! at start and its heap profile stays empty), memprof writes Go's default rate into the
//! process when it first sees it, as a blank import of `net/http/pprof` would have. From then
//! on the runtime records one allocation per 512 KiB allocated on average, as every Go program
//! with the profiler does: a stack walk per sample and a bucket per distinct stack, a few
//! percent of allocation time at most. Allocations made before the write are not in the
//! profile.
//!
//! Off by default: it writes into another program's memory. What it writes is one word at
//! `runtime.MemProfileRate`, found in the executable's symbol table, and only while the word
//! still holds 0 and the process is still the one discovered (same start time).
use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use super::{discover::GoProc, read::read_word};
use crate::assess::ProcKey;

/// `runtime.MemProfileRate`'s default (Go's `runtime/mprof.go`).
const GO_DEFAULT_RATE: u64 = 512 * 1024;

/// At a Go process's discovery: when its linker turned heap profiling off, turns it on if
/// `enable`, and says which (one line).
pub fn when_off(key: ProcKey, comm: &str, go: &mut GoProc, enable: bool) {
    if !go.profiler_off {
        return;
    }
    if enable {
        match turn_on(key.pid, key.start, go) {
            Ok(()) => {
                go.profiler_off = false;
                info!(
                    pid = key.pid,
                    comm,
                    rate = GO_DEFAULT_RATE,
                    "Go heap profiling turned on (MEMPROF_GO_ENABLE_PROFILING): MemProfileRate \
                     was 0"
                );
                return;
            }
            Err(e) => warn!(
                pid = key.pid,
                comm, "Go heap profiling not turned on: {e:#}"
            ),
        }
    }
    info!(
        pid = key.pid,
        comm,
        version = go.version,
        "Go heap profiling is off unless the program sets MemProfileRate itself; no \
         endpoint-free profile is possible then: {}",
        super::PROFILING_OFF
    );
}

/// Sets `go`'s `MemProfileRate` to Go's default when it is 0. `start` is the process's start
/// time as discovered, checked again just before the write so that a PID reused meanwhile is
/// not written to.
fn turn_on(pid: u32, start: u64, go: &GoProc) -> Result<()> {
    let now = read_word(pid, go.rate).context("reading MemProfileRate")?;
    if now != 0 {
        bail!("MemProfileRate is {now} already");
    }
    if crate::assess::start_time(pid) != Some(start) {
        bail!("the process is gone");
    }
    write_word(pid, go.rate, GO_DEFAULT_RATE)?;
    match read_word(pid, go.rate)? {
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
