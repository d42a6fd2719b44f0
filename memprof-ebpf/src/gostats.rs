//! The Go runtime's own memory statistics (`runtime.memstats`) read at the kill, in the
//! victim's context before its heap is walked (`goheap.rs`): 24 words userspace splits into
//! the memory accounting.
use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use memprof_common::{GoTarget, HeapStats, HEAP_STATS};

use crate::maps::HEAP;

/// Sends the runtime's memory statistics: four reads of six words, straight into the ring.
#[inline(never)]
pub fn send(host_pid: u32, target: &GoTarget) {
    let Some(mut rec) = HEAP.reserve::<HeapStats>(0) else {
        return;
    };
    let p = rec.as_mut_ptr();
    let delta = u64::from(target.stats_delta);
    let mut ok = 1;
    // SAFETY: `p` is the reserved record, `words` has room for 4 × 6 words; the helper checks
    // the user addresses.
    unsafe {
        (*p).kind = HEAP_STATS;
        (*p).host_pid = host_pid;
        (*p)._pad = 0;
        // No reference to the record's (uninitialised) words: a raw pointer only.
        let words = core::ptr::addr_of_mut!((*p).words).cast::<u64>();
        // Constant offsets into the record, at which the helper writes.
        let reads = [
            (0, target.memstats),
            (6, target.memstats + delta),
            (12, target.memstats + 2 * delta),
            (18, target.memstats + u64::from(target.stats_sys)),
        ];
        for (at, src) in reads {
            if bpf_probe_read_user(words.add(at).cast(), 48, src as *const c_void) != 0 {
                ok = 0;
            }
        }
        (*p).ok = ok;
    }
    rec.submit(0);
}
