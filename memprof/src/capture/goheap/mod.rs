//! Go heap profiles without an endpoint. Every Go program keeps its heap profile in its own
//! memory (the bucket list at `runtime.mbuckets`); memprof finds it when it first sees the
//! process (`discover`; what the executable says is parsed once per file, `program`), reads it at the threshold with `process_vm_readv` (`read`) or takes
//! what the kernel read at the kill, decodes the release's layout (`layout`), symbolizes from
//! the executable kept open since discovery (`symbols`) and writes Go's own pprof heap format
//! (`profile`, `proto`). Stripped binaries keep Go's line table (`pclntab`, found by
//! `pcln_place`): the runtime's variables are found by decoding the code that uses them
//! (`locate`), and frames come from the table (`pcln_frames`) where there is no DWARF.
pub mod build_id;
mod buildinfo;
pub mod discover;
mod dwarf;
mod enable;
pub mod kernel_walk;
pub mod layout;
mod locate;
mod locate_arm64;
pub mod memstats;
mod pcln_frames;
mod pcln_place;
#[cfg(test)]
mod pcln_tests;
mod pclntab;
pub mod profile;
mod program;
pub(crate) mod proto;
pub mod read;
pub mod registry;
mod share;
pub mod stored;
pub mod symbols;
mod symtab;

use anyhow::Result;

use discover::GoProc;
use layout::RawBucket;

/// Why a Go process has no heap profile to read.
pub const PROFILING_OFF: &str = "runtime.MemProfileRate is 0, so the heap profile is empty: \
    the program never references the memory profiler (a blank import of net/http/pprof turns it \
    on), and the Go linker turned heap profiling off";

/// Fits the DWARF memprof holds at once to its own memory limit (see `dwarf`).
pub fn fit_dwarf_to(own_limit: u64) {
    dwarf::limit_to(own_limit);
}

/// Builds the symbolized profile of buckets read from `go`'s memory, within `max_bytes`. One
/// that would be larger keeps the buckets holding the most in-use bytes (as many as its size
/// suggests will fit, then half as many until it does) and says so in a comment.
pub fn build_profile(
    go: &GoProc,
    buckets: &[RawBucket],
    rate: u64,
    mut comments: Vec<String>,
    max_bytes: u64,
) -> Result<Vec<u8>> {
    let sym = symbols::Symbolizer::load(&go.exe, go.pcln.as_ref())?;
    comments.insert(
        0,
        format!("memprof: Go heap of {} ({})", go.path, go.version),
    );
    if let Some(ids) = go.build_ids.describe() {
        comments.insert(1, ids);
    }
    let mut kept = std::borrow::Cow::Borrowed(buckets);
    let mut fitted = comments.clone();
    loop {
        let read = profile::HeapRead {
            buckets: &kept,
            rate,
            bias: go.bias,
            comments: fitted.clone(),
        };
        let bytes = profile::build(&read, &sym, &go.path, go.build_ids.for_mapping())?;
        let size = bytes.len() as u64;
        if size <= max_bytes {
            return Ok(bytes);
        }
        if kept.len() <= 1 {
            anyhow::bail!(
                "the profile takes {size} bytes with {} bucket(s), more than \
                 MEMPROF_CAPTURE_MAX_BYTES ({max_bytes})",
                kept.len()
            );
        }
        let likely =
            (kept.len() as u128 * u128::from(max_bytes) * 9 / 10 / u128::from(size)) as usize;
        let keep = likely.clamp(1, kept.len() / 2);
        kept = std::borrow::Cow::Owned(largest(buckets, keep, rate));
        fitted = comments.clone();
        fitted.push(format!(
            "memprof: truncated: {keep} of {} buckets kept, those holding the most in-use \
             bytes, to fit MEMPROF_CAPTURE_MAX_BYTES ({max_bytes} bytes)",
            buckets.len()
        ));
    }
}

/// The `n` buckets holding the most in-use bytes as the profile reports them (scaled by the
/// sampling `rate`: a sample of small objects stands for many more), in their order.
fn largest(buckets: &[RawBucket], n: usize, rate: u64) -> Vec<RawBucket> {
    let counts = layout::published(buckets);
    let inuse = |i: usize| {
        let c = counts[i];
        layout::scale(c.allocs.saturating_sub(c.frees), buckets[i].size, rate).1
    };
    let mut order: Vec<usize> = (0..buckets.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(inuse(i)));
    order.truncate(n);
    order.sort_unstable();
    order.into_iter().map(|i| buckets[i].clone()).collect()
}

/// What a read at the threshold produced.
pub struct MemoryRead {
    pub bytes: Vec<u8>,
    pub buckets: usize,
    /// Time spent walking the process's memory (symbolizing excluded).
    pub read: std::time::Duration,
}

/// The reader at the threshold: reads the live process's heap and builds its profile.
/// `read_done` is called once the heap is read, before the profile is symbolized: from then
/// on the process may die without the profile being lost.
pub fn read_profile(
    pid: u32,
    go: &GoProc,
    bounds: read::Bounds,
    read_done: impl FnOnce(),
) -> Result<MemoryRead> {
    let started = std::time::Instant::now();
    let snap = read::read_heap(pid, go, bounds)?;
    let read = started.elapsed();
    read_done();
    if snap.rate == 0 && snap.buckets.is_empty() {
        anyhow::bail!("{PROFILING_OFF}");
    }
    let mut comments = vec!["memprof: read from process memory at the threshold".to_string()];
    if snap.left_out > 0 {
        comments.push(format!(
            "memprof: truncated: {} buckets beyond the first {} ({} buckets or {} stack \
             frames at most) left out",
            snap.left_out,
            snap.buckets.len(),
            bounds.max_buckets,
            bounds.max_frames
        ));
    }
    if snap.unsettled {
        comments.push(
            "memprof: GC cycles completed during every read; counts may be one cycle off".into(),
        );
    }
    Ok(MemoryRead {
        bytes: build_profile(
            go,
            &snap.buckets,
            snap.rate,
            comments,
            bounds.max_profile_bytes,
        )?,
        buckets: snap.buckets.len(),
        read,
    })
}
