//! Discovery: is this process Go, and where does it keep its heap profile? Done once when
//! memprof first sees a process. The executable stays open for as long as the process is
//! watched, because `/proc/PID/exe` is gone once the process dies and the at-kill profile is
//! symbolized after that.
//! What the executable says is parsed once per file (`program`); where it is mapped, per
//! process.
use std::{
    fs::File,
    io::Read,
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::MetadataExt,
    },
    path::Path,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
};

use anyhow::{bail, Context, Result};

use super::read;
use super::{
    build_id::BuildIds,
    layout::{self, Layout},
    memstats::StatsPlace,
    pcln_place::PclnPlace,
    program::{self, Program, Verdict},
};
use crate::sys::{files, mounts::Mounts};

/// Whether an executable was refused for want of CAP_SYS_PTRACE (and said so).
static DENIED: AtomicBool = AtomicBool::new(false);

/// `/proc/PID/maps` read for the load address (65,530 mappings by default, ~100 bytes each).
const MAPS_MAX: u64 = 16 << 20;

/// A Go process whose heap profile can be read from its memory.
#[derive(Debug)]
pub struct GoProc {
    pub exe: File,
    /// The executable's path as the process sees it (for the profile's mapping).
    pub path: String,
    pub version: String,
    pub layout: Layout,
    /// Run-time addresses (load bias added) of `runtime.mbuckets`, `runtime.mProfCycle` and
    /// `runtime.MemProfileRate`.
    pub mbuckets: u64,
    pub cycle: u64,
    pub rate: u64,
    /// Run-time address minus link-time address (0 unless the binary is PIE).
    pub bias: u64,
    /// Run-time address of `.text`, from which the kernel's walk sends PC offsets.
    pub text_base: u64,
    /// The Go linker turned heap profiling off (`runtime.disableMemoryProfiling`): nothing
    /// references the memory profiler, so `MemProfileRate` is set to 0 at start-up and the
    /// heap profile stays empty unless the program sets the rate itself.
    pub profiler_off: bool,
    /// Go's and the GNU build ID, for the profile's mapping.
    pub build_ids: BuildIds,
    /// Go's line table, for symbolizing without DWARF.
    pub pcln: Option<PclnPlace>,
    /// The runtime's variables were found by decoding its code (no symbol table).
    pub located: bool,
    /// `runtime.memstats` (run-time address) and its layout, for the memory accounting.
    pub stats: Option<StatsPlace>,
}

impl GoProc {
    /// Where the runtime's variables were found, for a log line.
    pub fn found_in(&self) -> &'static str {
        match self.located {
            true => "the runtime's code (no symbol table)",
            false => "the symbol table",
        }
    }
}

/// What discovery concluded.
#[derive(Debug)]
pub enum Discovery {
    Go(GoProc),
    /// Not a Go program: nothing to say.
    NotGo,
    /// A Go program whose heap cannot be read from memory, and why.
    Unreadable {
        version: String,
        reason: String,
    },
    /// An executable memprof does not parse, and why (too large, sparse, too many sections,
    /// on a file system a process serves).
    Refused(String),
    /// An executable memprof may not open (without CAP_SYS_PTRACE, or a process that made
    /// itself non-dumpable); said once in the log, not once per process.
    Denied,
}

pub fn discover(pid: u32) -> Result<Discovery> {
    discover_with(pid, true)
}

/// `discover`; `reads`: whether variables found in code may be checked against the process's
/// memory (not with `MEMPROF_GO_HEAP=endpoint-only`).
pub fn discover_with(pid: u32, reads: bool) -> Result<Discovery> {
    let exe = match open_exe(pid)? {
        Ok(exe) => exe,
        Err(None) => return Ok(Discovery::Denied),
        Err(Some(why)) => return Ok(Discovery::Refused(why)),
    };
    let p = match program::of(&exe)? {
        Ok(p) => p,
        Err(Verdict::NotGo) => return Ok(Discovery::NotGo),
        Err(Verdict::Unreadable { version, reason }) => {
            return Ok(Discovery::Unreadable { version, reason })
        }
        Err(Verdict::Refused(why)) => return Ok(Discovery::Refused(why)),
    };
    let bias = load_bias(pid, &exe, &p)?;
    if p.located && reads {
        if let Err(why) = plausible(pid, &p, bias) {
            return Ok(Discovery::Unreadable {
                version: p.version,
                reason: format!(
                    "the binary has no symbol table (stripped with -s), and the profiler's \
                     variables found in its code do not hold what they should: {why}"
                ),
            });
        }
    }
    let path = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Ok(Discovery::Go(GoProc {
        exe,
        path,
        layout: p.layout,
        mbuckets: p.mbuckets.wrapping_add(bias),
        cycle: p.cycle.wrapping_add(bias),
        rate: p.rate.wrapping_add(bias),
        bias,
        text_base: p.text.wrapping_add(bias),
        profiler_off: p.profiler_off,
        version: p.version,
        build_ids: p.build_ids,
        pcln: p.pcln,
        located: p.located,
        stats: p.stats.map(|s| StatsPlace {
            addr: s.addr.wrapping_add(bias),
            ..s
        }),
    }))
}

/// The process's executable, opened once it is known not to be on a file system a process
/// serves (FUSE: an open or a page fault there waits for the tenant); why not otherwise
/// (`None`: memprof may not open it).
fn open_exe(pid: u32) -> Result<Result<File, Option<String>>> {
    let link = format!("/proc/{pid}/exe");
    let handle = files::open_path(Path::new(&link));
    if let Err(e) = &handle {
        // Said once, not once per process: without it every other process is refused alike.
        if e.kind() == std::io::ErrorKind::PermissionDenied && !DENIED.swap(true, Relaxed) {
            tracing::warn!(
                pid,
                "cannot open other processes' executables ({e}): without CAP_SYS_PTRACE no Go \
                 heap is read from memory and no endpoint is found in another container"
            );
        }
    }
    // Refused for want of a capability: so it stays, and the process is settled (not looked
    // at again by every sweep, which read its descriptors each time).
    let handle = match handle {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(Err(None)),
        other => other.context("the executable")?,
    };
    let mounts = Mounts::of(pid).context("the process's mounts")?;
    if let Err(e) = mounts.check(handle.as_fd()) {
        return Ok(Err(Some(format!("the executable is {e}"))));
    }
    let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
    Ok(Ok(File::open(reopen).context("opening the executable")?))
}

/// Where the kernel mapped the executable: the start of its mapping at file offset 0 minus
/// the link-time address of the segment there. Matched by inode, not by path, because a
/// container's path means nothing in memprof's mount namespace.
fn load_bias(pid: u32, exe: &File, p: &Program) -> Result<u64> {
    if !p.dynamic {
        return Ok(0);
    }
    let meta = exe.metadata()?;
    let mut maps = String::new();
    File::open(format!("/proc/{pid}/maps"))?
        .take(MAPS_MAX)
        .read_to_string(&mut maps)?;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[2] != "00000000" || f[4].parse::<u64>().ok() != Some(meta.ino()) {
            continue;
        }
        let start = u64::from_str_radix(f[0].split('-').next().unwrap_or(""), 16)?;
        return Ok(start.wrapping_sub(p.first_vaddr & !0xfff));
    }
    bail!("the executable is not mapped in /proc/{pid}/maps")
}

/// Whether variables found by decoding code (not named by a symbol table) hold what the heap
/// profiler keeps there: a sampling rate, a cycle count (below Go's wrap of 3 × 2^25, doubled
/// with a flag bit), and a list of memory-profile buckets.
fn plausible(pid: u32, p: &Program, bias: u64) -> Result<(), String> {
    let word = |addr: u64| read::read_word(pid, addr).map_err(|e| e.to_string());
    let rate = word(p.rate.wrapping_add(bias))?;
    if rate > 1 << 40 {
        return Err(format!("a sampling rate of {rate}"));
    }
    let cycle = word(p.cycle.wrapping_add(bias))? as u32;
    if cycle >= 1 << 28 {
        return Err(format!("a profile cycle of {cycle}"));
    }
    let head = word(p.mbuckets.wrapping_add(bias))?;
    if head == 0 {
        return Ok(());
    }
    // A bucket's header: {next, allnext, typ, hash, size, nstk}; memory-profile buckets have
    // typ 1 and at most `MAX_STACK` frames.
    let at = |off: u64| {
        head.checked_add(off)
            .ok_or("a bucket list at the end of memory")
    };
    let (typ, nstk) = (word(at(16)?)?, word(at(40)?)?);
    if typ != 1 || nstk == 0 || nstk > layout::MAX_STACK as u64 {
        return Err(format!(
            "a bucket list whose first bucket has type {typ} and {nstk} frames"
        ));
    }
    Ok(())
}
