//! The at-kill walk's ring buffer is small (it is paid in every pod): when it cannot hold the
//! whole heap, the buckets holding live memory go first, and the profile says what was left.
use std::time::Duration;

use crate::common::*;
use crate::goheap_oom::{prerequisites, reading_memory, wait_key};

/// The leak's bucket is the oldest in the runtime's list, behind 12,000 whose memory was all
/// freed, and the ring buffer holds a few hundred: the at-kill profile still names the leak,
/// and says that freed-only buckets were dropped, none holding live memory.
#[test]
fn live_memory_goes_first_into_a_small_ring() {
    let Some(go) = prerequisites("stacks", go::Toolchain::Current) else {
        return;
    };
    let (_s3, client, memprof) = reading_memory("ring", "64Ki");
    let cg = MemCgroup::new("memprof-ring", 256 << 20);
    let args = ["-freed", "-stacks", "12000", "-rate", "60"];
    let mut svc = cg.start(&go, &args);
    let pid = svc.id();
    let key = wait_key(&client, &format!("_pid-{pid}_oom.heap.pb.gz"), &memprof);
    let _ = svc.wait();
    let profile = client.get(&key);
    let top = pprof_top(&profile);
    // The leak's own bucket, not only the slice growth that records it (a newer bucket).
    let leak_share = top
        .lines()
        .find(|l| l.trim_end().ends_with(" main.leakyRetain"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)?
                .trim_end_matches('%')
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    assert!(leak_share > 90.0, "{key}:\n{top}");
    // The small live buckets made after the freed ones are there as well (two stacks, each
    // with its allocation and the growth of the slice keeping it).
    let deep = pprof_traces(&profile)
        .iter()
        .filter(|t| t.iter().any(|f| f == "main.deep"))
        .count();
    assert!(deep >= 2, "{deep} stacks with main.deep in {key}:\n{top}");
    let line = memprof.wait_for_log(
        &format!("at-kill profile stored pid={pid} "),
        Duration::from_secs(10),
    );
    assert!(
        line.contains("buckets whose memory was all freed did not fit the ring buffer"),
        "{line}"
    );
    assert!(!line.contains("holding live memory"), "{line}");
    assert!(cg.oom_kills() >= 1, "no OOM kill");
    println!("{line}");
}
