//! The Go runtime's own account of its memory (`runtime.memstats`), read from the process at a
//! capture, and by the kernel at the kill: what `runtime/metrics` calls the heap's objects and
//! free pages, stacks, and the runtime's metadata.
//!
//! Where it is and how it is laid out is taken from the code of `runtime.readmemstats_m`, the
//! same in every release: it takes the address of `memstats` (whose first field is the heap's
//! three generations of `heapStatsDelta`), then reads six consecutive words, the `sysMemStat`s
//! after the generations. Their offset gives a generation's size, which tells whether it still
//! has `inPtrScalarBits` (Go 1.24 and before) — so stripped binaries need no table per release.
use serde::Serialize;

use super::locate::Ref;

/// Words read: the first six of each generation, then the six `sysMemStat`s.
pub const WORDS: usize = 24;
/// A `heapStatsDelta`: five or six byte counts, then 141 words of allocation counts (68 size
/// classes twice, and three more).
const DELTA_FIXED: u32 = 141;

/// Where `runtime.memstats` is (link-time address) and its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsPlace {
    pub addr: u64,
    /// Bytes of one generation.
    pub delta_bytes: u32,
    /// Offset of the six `sysMemStat`s.
    pub sys_off: u32,
}

impl StatsPlace {
    /// Byte counts at the start of a generation: 6 up to Go 1.24 (`inPtrScalarBits`), then 5.
    fn counts(&self) -> usize {
        (self.delta_bytes / 8 - DELTA_FIXED) as usize
    }
}

/// `memstats` as `readmemstats_m` reaches it: an address taken, and six words read at
/// `3 × generation + 16` after it.
pub fn locate(refs: &[Ref]) -> Option<StatsPlace> {
    let reads = |t: u64| {
        refs.iter()
            .any(|r| r.size == 8 && !r.store && r.target == t)
    };
    refs.iter().filter(|r| r.size == 0).find_map(|base| {
        (5..=6).find_map(|counts: u32| {
            let delta_bytes = (DELTA_FIXED + counts) * 8;
            // After the generations: `gen` (a uint32, padded) and a mutex, a word each.
            let sys_off = 3 * delta_bytes + 16;
            let sys = base.target + u64::from(sys_off);
            (0..6).all(|i| reads(sys + 8 * i)).then_some(StatsPlace {
                addr: base.target,
                delta_bytes,
                sys_off,
            })
        })
    })
}

/// Addresses and lengths (bytes) of what is read, in `WORDS` order, at run-time address
/// `addr` of `memstats`.
pub fn spans(place: &StatsPlace, addr: u64) -> [(u64, usize); 4] {
    let g = |i: u64| (addr + i * u64::from(place.delta_bytes), 48);
    [g(0), g(1), g(2), (addr + u64::from(place.sys_off), 48)]
}

/// The words the kernel reads at the kill, read from the live process at a capture (`place`
/// at its run-time address).
pub fn read(pid: u32, place: &StatsPlace) -> Option<[u64; WORDS]> {
    let mut words = [0u64; WORDS];
    for (i, (addr, len)) in spans(place, place.addr).into_iter().enumerate() {
        let mut buf = [0u8; 48];
        super::read::read_exact(pid, addr, &mut buf[..len]).ok()?;
        for (k, w) in buf.chunks_exact(8).enumerate() {
            words[6 * i + k] = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        }
    }
    Some(words)
}

/// The runtime's memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GoMemory {
    /// Spans holding objects (live or not yet swept).
    pub heap_in_use: u64,
    /// Heap pages the runtime holds, free, not returned to the OS.
    pub heap_free: u64,
    /// Heap pages returned to the OS (not resident).
    pub heap_released: u64,
    /// Goroutine stacks, and the OS threads' stacks the runtime allocated.
    pub stacks: u64,
    /// GC metadata, spans' and caches' structures, profiling buckets, the rest of the runtime.
    pub runtime_other: u64,
}

/// The runtime's memory from the words read (`WORDS`, in `spans` order).
pub fn decode(place: &StatsPlace, w: &[u64; WORDS]) -> GoMemory {
    // Each count is the sum of its three generations (a generation may hold a negative delta);
    // saturating, as the words are the process's to write.
    let sum = |field: usize| -> i64 {
        (0..3)
            .map(|g| w[6 * g + field] as i64)
            .fold(0, i64::saturating_add)
    };
    let pos = |v: i64| v.max(0) as u64;
    let (committed, released, in_heap, in_stacks) = (sum(0), sum(1), sum(2), sum(3));
    // Work buffers, and unrolled GC programs' bits where the release has them.
    let buffers = sum(4).saturating_add(if place.counts() == 6 { sum(5) } else { 0 });
    let sys = &w[18..24];
    GoMemory {
        heap_in_use: pos(in_heap),
        heap_free: pos(committed
            .saturating_sub(in_heap)
            .saturating_sub(in_stacks)
            .saturating_sub(buffers)),
        heap_released: pos(released),
        stacks: pos(in_stacks).saturating_add(sys[0]),
        runtime_other: sys[1..]
            .iter()
            .fold(pos(buffers), |a, &b| a.saturating_add(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_add_up() {
        let place = StatsPlace {
            addr: 0,
            delta_bytes: 146 * 8,
            sys_off: 0,
        };
        let mut w = [0u64; WORDS];
        // committed, released, inHeap, inStacks, inWorkBufs in generation 0, and a negative
        // delta of inHeap in generation 1.
        w[..5].copy_from_slice(&[100 << 20, 8 << 20, 70 << 20, 4 << 20, 1 << 20]);
        w[6 + 2] = (-(2i64 << 20)) as u64;
        w[18..24].copy_from_slice(&[1 << 16, 1 << 20, 1 << 14, 1 << 20, 3 << 20, 2 << 20]);
        let m = decode(&place, &w);
        assert_eq!(m.heap_in_use, 68 << 20);
        assert_eq!(m.heap_free, (100 - 68 - 4 - 1) << 20);
        assert_eq!(m.heap_released, 8 << 20);
        assert_eq!(m.stacks, (4 << 20) + (1 << 16));
        assert_eq!(
            m.runtime_other,
            (1 << 20) + (1 << 20) + (1 << 14) + (1 << 20) + (3 << 20) + (2 << 20)
        );
        // What a process may write there costs nothing but nonsense.
        let hostile = decode(&place, &[u64::MAX; WORDS]);
        assert_eq!(hostile.heap_in_use, 0);
        let mut big = [0u64; WORDS];
        big[0] = i64::MAX as u64;
        big[6] = i64::MAX as u64;
        big[18..24].fill(u64::MAX);
        let m2 = decode(&place, &big);
        assert_eq!((m2.heap_free, m2.stacks), (i64::MAX as u64, u64::MAX));
    }
}
