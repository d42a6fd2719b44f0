//! How Go lays out a memory-profile bucket, per release, and how `runtime.MemProfile` turns
//! the raw counters into the published profile. Both readers (process memory at the threshold,
//! the kernel at the kill) hand over the same raw buckets, decoded here.
//!
//! A bucket is a 48-byte header `{next, allnext, typ, hash, size, nstk}`, then `nstk` return
//! PCs, then a `memRecord {active, future[3]}` of `memRecordCycle`s. `size` is the object
//! size every allocation of the bucket has, so bytes are `count × size` in every release.
use anyhow::{bail, Result};

/// Bytes of a bucket's header.
pub const HEADER: usize = 48;
/// `maxProfStackDepth`: the deepest stack any Go release records (`GODEBUG=profstackdepth`).
pub const MAX_STACK: usize = 1024;

/// What differs between releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Words in a `memRecordCycle`: `{allocs, frees, alloc_bytes, free_bytes}` up to Go 1.26,
    /// `{allocs, frees}` from Go 1.27 on (bytes are derived from the bucket's size).
    pub cycle_words: usize,
}

impl Layout {
    /// The layout of a release named like `go1.19.8` or `go1.27.3`.
    pub fn for_version(version: &str) -> Result<Self> {
        let minor = version
            .strip_prefix("go1.")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|m| m.parse::<u32>().ok());
        match minor {
            // `memRecord {active, future[3]}` arrived in Go 1.9; the heap's bucket header
            // is unchanged since.
            Some(m) if (9..=26).contains(&m) => Ok(Self { cycle_words: 4 }),
            Some(m) if m >= 27 => Ok(Self { cycle_words: 2 }),
            _ => bail!("unsupported Go release {version:?}"),
        }
    }

    /// Bytes of a `memRecord`.
    pub fn record_bytes(&self) -> usize {
        4 * self.cycle_words * 8
    }
}

/// A bucket as read from the process: object size, return PCs (leaf first) and the sums of
/// its counters that the published profile is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawBucket {
    pub size: u64,
    pub stack: Vec<u64>,
    /// Frames the runtime recorded beyond those kept (only when a reader caps the depth).
    pub frames_cut: u64,
    pub sums: Sums,
}

/// One bucket's published counts, as `runtime.MemProfileRecord` has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub allocs: u64,
    pub frees: u64,
}

impl Counts {
    fn add(self, o: Counts) -> Counts {
        Counts {
            allocs: self.allocs.wrapping_add(o.allocs),
            frees: self.frees.wrapping_add(o.frees),
        }
    }
}

/// The two sums of a bucket's `memRecord` that `runtime.MemProfile` publishes: `active` plus
/// `future[cycle % 3]` (the cycle that may not be flushed yet), and `active` plus every
/// `future` cycle (what it publishes before the first GC). The kernel's walk sends these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub published: Counts,
    pub all: Counts,
}

impl Layout {
    /// The sums of a raw `memRecord` at profile cycle `cycle` (`mProfCycle.value >> 1`).
    pub fn sums(&self, record: &[u64], cycle: u32) -> Sums {
        let w = self.cycle_words;
        let at = |slot: usize| Counts {
            allocs: record.get(slot * w).copied().unwrap_or(0),
            frees: record.get(slot * w + 1).copied().unwrap_or(0),
        };
        let flush = 1 + (cycle % 3) as usize;
        Sums {
            published: at(0).add(at(flush)),
            all: (1..4).fold(at(0), |c, slot| c.add(at(slot))),
        }
    }
}

/// The counts `runtime.MemProfile` publishes for these buckets: each one's `published` sum;
/// when no bucket has published anything (no GC yet), every cycle summed.
pub fn published(buckets: &[RawBucket]) -> Vec<Counts> {
    let nothing = buckets
        .iter()
        .all(|b| b.sums.published == Counts::default());
    buckets
        .iter()
        .map(|b| {
            if nothing {
                b.sums.all
            } else {
                b.sums.published
            }
        })
        .collect()
}

/// Go's `scaleHeapSample`: a sample of objects of `size` bytes stands for more allocations the
/// sampler skipped, with probability `1 - exp(-size/rate)` of being sampled.
pub fn scale(count: u64, size: u64, rate: u64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    let bytes = count.saturating_mul(size);
    if rate <= 1 {
        return (count as i64, bytes as i64);
    }
    let scale = 1.0 / (1.0 - (-(size as f64) / rate as f64).exp());
    ((count as f64 * scale) as i64, (bytes as f64 * scale) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(l: Layout, words: &[u64], cycle: u32) -> RawBucket {
        RawBucket {
            size: 16,
            sums: l.sums(words, cycle),
            ..Default::default()
        }
    }

    #[test]
    fn versions_pick_their_layout() {
        assert_eq!(Layout::for_version("go1.19.8").unwrap().cycle_words, 4);
        assert_eq!(Layout::for_version("go1.26.6").unwrap().cycle_words, 4);
        assert_eq!(Layout::for_version("go1.27.3").unwrap().cycle_words, 2);
        assert_eq!(Layout::for_version("go1.30rc1").unwrap().cycle_words, 2);
        assert!(Layout::for_version("go1.8").is_err());
        assert!(Layout::for_version("devel +abc").is_err());
    }

    #[test]
    fn publishes_active_and_the_unflushed_cycle_only() {
        let l = Layout { cycle_words: 2 };
        // active {10,4}; future[0] {1,1}, future[1] {100,0}, future[2] {7,7}
        let b = [10, 4, 1, 1, 100, 0, 7, 7];
        // cycle 3 → future[0] may still be unflushed; future[1] and [2] are the next cycles.
        assert_eq!(
            published(&[bucket(l, &b, 3)]),
            vec![Counts {
                allocs: 11,
                frees: 5
            }]
        );
        assert_eq!(
            published(&[bucket(l, &b, 4)]),
            vec![Counts {
                allocs: 110,
                frees: 4
            }]
        );
    }

    #[test]
    fn before_the_first_gc_every_cycle_counts() {
        let l = Layout { cycle_words: 4 };
        // Cycle 0: future[0] is empty too, so nothing is published yet.
        let b = bucket(l, &[0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 32, 0, 3, 1, 48, 16], 0);
        assert_eq!(
            published(&[b]),
            vec![Counts {
                allocs: 5,
                frees: 1
            }]
        );
    }

    #[test]
    fn scaling_matches_go() {
        // Go: scaleHeapSample(1, 512, 524288) → (1024, 524544) (rounded down).
        assert_eq!(scale(1, 512, 512 * 1024), (1024, 524544));
        assert_eq!(scale(3, 1 << 20, 1), (3, 3 << 20));
        assert_eq!(scale(0, 8, 512), (0, 0));
    }
}
