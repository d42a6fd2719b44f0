//! Assembles the kernel's at-kill heap walks (`memprof-ebpf/src/goheap.rs`) from the `HEAP`
//! ring buffer: a begin record, the runtime's memory statistics, one record per bucket, an end
//! record, per victim (several
//! victims' walks may interleave). A walk whose end record never comes (the ring buffer was
//! full) is closed after `STALE` with what arrived.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use aya::maps::{MapData, RingBuf};
use memprof_common::{
    HeapBegin, HeapBucket, HeapEnd, HeapStats, GO_STATS_WORDS, HEAP_BEGIN, HEAP_BUCKET,
    HEAP_BUCKET_HEAD, HEAP_END, HEAP_STATS,
};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::layout::{Counts, RawBucket, Sums};

const STALE: Duration = Duration::from_secs(5);

/// One victim's heap as the kernel read it. Its buckets' stacks are offsets from the
/// executable's code (`GoProc::text_base`); the kernel summed their counters already.
#[derive(Debug, Default)]
pub struct KillRead {
    pub host_pid: u32,
    pub ns_pid: u32,
    pub rate: u64,
    pub buckets: Vec<RawBucket>,
    /// Buckets the ring buffer had no room for (holding live memory, and the others), and
    /// buckets beyond the walk's cap.
    pub lost_live: u64,
    pub lost_freed: u64,
    pub left_out: u64,
    /// A read of the victim's memory failed and the walk stopped there; or no end arrived.
    pub failed: bool,
    pub ended: bool,
    /// Kernel time the walk took.
    pub walk_ns: u64,
    /// `runtime.memstats` as the kernel read it (see `memstats`), when it could.
    pub go_stats: Option<[u64; GO_STATS_WORDS]>,
    begin_ktime: u64,
    last: Option<Instant>,
}

/// Reads walks until the receiver goes away.
pub async fn run(ring: RingBuf<MapData>, tx: mpsc::Sender<KillRead>) -> Result<()> {
    // SAFETY: the ring buffer owns its map fd, which stays open until the AsyncFd is dropped.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("registering the heap ring buffer with tokio: {e}"))?;
    let mut open: HashMap<u32, KillRead> = HashMap::new();
    let mut tick = tokio::time::interval(STALE);
    loop {
        let mut done = Vec::new();
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    if let Some(r) = take(&mut open, &item) {
                        done.push(r);
                    }
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                let stale: Vec<u32> = open
                    .iter()
                    .filter(|(_, r)| r.last.is_some_and(|t| t.elapsed() > STALE))
                    .map(|(p, _)| *p)
                    .collect();
                done.extend(stale.iter().filter_map(|p| open.remove(p)));
            }
        }
        for r in done {
            if tx.send(r).await.is_err() {
                return Ok(());
            }
        }
    }
}

fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: the kernel wrote a `T`; read_unaligned copes with any alignment.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// Applies one record; returns a walk it completed.
fn take(open: &mut HashMap<u32, KillRead>, bytes: &[u8]) -> Option<KillRead> {
    let kind: u32 = read(bytes)?;
    match kind {
        HEAP_BEGIN => {
            let b: HeapBegin = read(bytes)?;
            let r = KillRead {
                host_pid: b.host_pid,
                ns_pid: b.ns_pid,
                rate: b.rate,
                begin_ktime: b.ktime_ns,
                last: Some(Instant::now()),
                ..Default::default()
            };
            // A victim is walked once; a begin replaces a walk that never ended.
            open.insert(b.host_pid, r).map(|mut old| {
                old.failed = true;
                old
            })
        }
        HEAP_BUCKET => {
            // Only the head and `depth` PCs were sent: copy into a whole record.
            let mut whole = vec![0u8; size_of::<HeapBucket>()];
            let n = bytes.len().min(whole.len());
            whole[..n].copy_from_slice(&bytes[..n]);
            let b: HeapBucket = read(&whole)?;
            let depth = usize::from(b.depth).min(n.saturating_sub(HEAP_BUCKET_HEAD) / 4);
            let r = open.get_mut(&b.host_pid)?;
            r.last = Some(Instant::now());
            r.buckets.push(RawBucket {
                size: b.size,
                stack: b.pcs[..depth].iter().map(|&pc| u64::from(pc)).collect(),
                frames_cut: u64::from(b.nstk).saturating_sub(depth as u64),
                sums: Sums {
                    published: Counts {
                        allocs: b.published[0],
                        frees: b.published[1],
                    },
                    all: Counts {
                        allocs: b.all[0],
                        frees: b.all[1],
                    },
                },
            });
            None
        }
        HEAP_STATS => {
            let s: HeapStats = read(bytes)?;
            let r = open.get_mut(&s.host_pid)?;
            r.go_stats = (s.ok == 1).then_some(s.words);
            None
        }
        HEAP_END => {
            let e: HeapEnd = read(bytes)?;
            let mut r = open.remove(&e.host_pid)?;
            r.lost_live = e.lost_live;
            r.lost_freed = e.lost_freed;
            r.left_out = e.left_out;
            r.failed = e.failed != 0;
            r.ended = true;
            r.walk_ns = e.ktime_ns.saturating_sub(r.begin_ktime);
            Some(r)
        }
        _ => None,
    }
}
