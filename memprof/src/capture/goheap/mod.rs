//! Go heap profiles without an endpoint. Every Go program keeps its heap profile in its own
//! memory (the bucket list at `runtime.mbuckets`); memprof finds it when it first sees the
//! process (`discover`), reads it at the threshold with `process_vm_readv` (`read`) or takes
//! what the kernel read at the kill, decodes the release's layout (`layout`), symbolizes from
//! the executable kept open since discovery (`symbols`) and writes Go's own pprof heap format
//! (`profile`, `proto`).
pub mod discover;
pub mod kill;
pub mod layout;
pub mod profile;
mod proto;
pub mod read;
pub mod registry;
pub mod symbols;

use anyhow::Result;

use discover::GoProc;
use layout::RawBucket;

/// Builds the symbolized profile of buckets read from `go`'s memory.
pub fn build_profile(
    go: &GoProc,
    buckets: &[RawBucket],
    cycle: u32,
    rate: u64,
    mut comments: Vec<String>,
) -> Result<Vec<u8>> {
    let sym = symbols::Symbolizer::load(&go.exe)?;
    comments.insert(
        0,
        format!("memprof: Go heap of {} ({})", go.path, go.version),
    );
    let read = profile::HeapRead {
        buckets,
        cycle,
        rate,
        layout: go.layout,
        bias: go.bias,
        comments,
    };
    profile::build(&read, &sym, &go.path)
}

/// The reader at the threshold: reads the live process's heap and builds its profile.
pub fn read_profile(pid: u32, go: &GoProc, bounds: read::Bounds) -> Result<Vec<u8>> {
    let snap = read::read_heap(pid, go, bounds)?;
    let mut comments = vec!["memprof: read from process memory at the threshold".to_string()];
    if snap.left_out > 0 {
        comments.push(format!(
            "memprof: truncated: {} buckets beyond the first {} left out",
            snap.left_out, bounds.max_buckets
        ));
    }
    if snap.unsettled {
        comments.push(
            "memprof: GC cycles completed during every read; counts may be one cycle off".into(),
        );
    }
    build_profile(go, &snap.buckets, snap.cycle, snap.rate, comments)
}
