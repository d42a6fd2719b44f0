//! The reader at the threshold: walks a live Go process's bucket list with
//! `process_vm_readv`, one system call per bucket.
//!
//! The process runs on while it is read. Go only ever prepends buckets to the list and never
//! frees or relinks them, so a walk from one snapshot of the head sees exactly the buckets that
//! existed then. Counters keep moving: each bucket's record is copied in one call, and the
//! profile cycle is read before and after the walk; when a GC cycle completed in between (its
//! counts moved from `future` to `active` under the reader), the walk is repeated, a few times
//! at most.
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{
    discover::GoProc,
    layout::{RawBucket, HEADER, MAX_STACK},
};

/// `bucketType` of memory-profile buckets.
const MEM_PROFILE: u64 = 1;
/// Attempts at a walk during which no GC cycle completes.
const ATTEMPTS: usize = 3;
/// PCs read together with the header in the first call; deeper stacks take a second call.
const FIRST_READ_PCS: usize = 128;

/// What one read of the heap profile found.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `runtime.MemProfileRate` at the time.
    pub rate: u64,
    pub buckets: Vec<RawBucket>,
    /// Buckets beyond the caps, counted but not read.
    pub left_out: u64,
    /// The walk kept racing with completing GC cycles; counts may be off by one cycle.
    pub unsettled: bool,
}

/// Bounds on one read: the buckets kept, their stack frames together (the process writes its
/// own bucket list: 100,000 buckets of 1,024 frames each would be 800 MB), and time; and on
/// the profile made of it (`MEMPROF_CAPTURE_MAX_BYTES`, as for one fetched from an endpoint).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_buckets: usize,
    pub max_frames: usize,
    pub deadline: Duration,
    pub max_profile_bytes: u64,
}

/// Copies `buf.len()` bytes (or fewer, at the end of a mapping) from the process at `addr`.
fn read_into(pid: u32, addr: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers `buf`, which outlives the call; `remote` is only read by the kernel.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

pub(super) fn read_exact(pid: u32, addr: u64, buf: &mut [u8]) -> Result<()> {
    let n = read_into(pid, addr, buf).with_context(|| format!("reading {addr:#x}"))?;
    if n < buf.len() {
        bail!("short read at {addr:#x}: {n} of {} bytes", buf.len());
    }
    Ok(())
}

pub fn read_word(pid: u32, addr: u64) -> Result<u64> {
    let mut b = [0u8; 8];
    read_exact(pid, addr, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}

fn read_cycle(pid: u32, go: &GoProc) -> Result<u32> {
    let mut b = [0u8; 4];
    read_exact(pid, go.cycle, &mut b)?;
    Ok(u32::from_ne_bytes(b) >> 1)
}

fn words(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
}

pub fn read_heap(pid: u32, go: &GoProc, bounds: Bounds) -> Result<Snapshot> {
    let started = Instant::now();
    let mut snap = Snapshot::default();
    for _ in 0..ATTEMPTS {
        let before = read_cycle(pid, go)?;
        snap = walk(pid, go, before, bounds, started)?;
        if read_cycle(pid, go)? == before {
            return Ok(snap);
        }
    }
    snap.unsettled = true;
    Ok(snap)
}

/// One walk, with counts summed as published at profile cycle `cycle`.
fn walk(pid: u32, go: &GoProc, cycle: u32, bounds: Bounds, started: Instant) -> Result<Snapshot> {
    let rec = go.layout.record_bytes();
    let mut snap = Snapshot {
        rate: read_word(pid, go.rate)?,
        ..Default::default()
    };
    let mut buf = vec![0u8; HEADER + FIRST_READ_PCS * 8 + rec];
    let mut cur = read_word(pid, go.mbuckets)?;
    let mut frames = 0;
    while cur != 0 {
        if snap.buckets.len() >= bounds.max_buckets || frames >= bounds.max_frames {
            // Count the rest: one word (`allnext`) per bucket.
            snap.left_out += 1;
            cur = read_word(pid, cur + 8)?;
            if snap.left_out.is_multiple_of(1024) && started.elapsed() > bounds.deadline {
                bail!(
                    "reading the heap profile took longer than {:?}",
                    bounds.deadline
                );
            }
            continue;
        }
        if snap.buckets.len() % 1024 == 1023 && started.elapsed() > bounds.deadline {
            bail!(
                "reading the heap profile took longer than {:?}",
                bounds.deadline
            );
        }
        let n =
            read_into(pid, cur, &mut buf).with_context(|| format!("reading bucket {cur:#x}"))?;
        if n < HEADER {
            bail!("short read of bucket {cur:#x}");
        }
        let h: Vec<u64> = words(&buf[..HEADER]).collect();
        let (allnext, typ, size, nstk) = (h[1], h[2], h[4], h[5] as usize);
        if typ != MEM_PROFILE || nstk > MAX_STACK {
            bail!("bucket {cur:#x} is not a memory-profile bucket (type {typ}, {nstk} PCs)");
        }
        let need = HEADER + nstk * 8 + rec;
        if n < need {
            if buf.len() < need {
                buf.resize(need, 0);
            }
            read_exact(pid, cur, &mut buf[..need])?;
        }
        frames += nstk;
        let body: Vec<u64> = words(&buf[HEADER..need]).collect();
        snap.buckets.push(RawBucket {
            size,
            stack: body[..nstk].to_vec(),
            frames_cut: 0,
            sums: go.layout.sums(&body[nstk..], cycle),
        });
        cur = allnext;
    }
    Ok(snap)
}
