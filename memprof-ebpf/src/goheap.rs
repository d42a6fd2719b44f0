//! The reader at the kill: when an OOM victim with a registered Go heap receives its SIGKILL,
//! the first of its threads to take the signal walks the bucket list (`runtime.mbuckets`,
//! linked through `allnext`) from the victim's own context, its memory still intact, and sends
//! each bucket to userspace through `HEAP`. `bpf_loop` runs one bucket per iteration, because
//! the verifier refuses a plain loop of thousands.
//!
//! The ring buffer is small (it is paid in every pod), so the walk goes twice over the list:
//! first the buckets that hold live memory, the answer to "what filled the heap", then, with
//! the room left, those whose memory was all freed (they count only towards allocations).
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_loop, bpf_probe_read_user},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use memprof_common::{
    GoTarget, HeapBegin, HeapBucket, HeapEnd, HEAP_BEGIN, HEAP_BUCKET, HEAP_BUCKET_HEAD, HEAP_END,
    HEAP_MAX_BUCKETS, HEAP_MAX_COUNT, HEAP_MAX_DEPTH,
};

use crate::maps::{g, HeapScratch, GO_PROCS, HEAP, HEAP_SCRATCH, OUTBOX, VICTIMS, WALKERS};

const SIGKILL: i32 = 9;
/// `bpf_ringbuf_query` flags: bytes not yet consumed, and the ring's size.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;
/// Ring room kept for end records, with their headers: this walk's and those of up to three
/// victims walked at the same moment on other CPUs into the same ring.
const END_ROOM: u64 = 4 * (core::mem::size_of::<HeapEnd>() + 8) as u64;
/// Bytes of a bucket header `{next, allnext, typ, hash, size, nstk}`.
const HEADER: u64 = 48;

/// State of one walk, on the program's stack and handed to each iteration.
#[repr(C)]
struct Walk {
    cur: u64,
    host_pid: u32,
    record_bytes: u32,
    text_base: u64,
    /// `mProfCycle % 3`: the `future` cycle `runtime.MemProfile` flushes first.
    cycle_index: u64,
    /// 1 while the walk sends the buckets holding live memory, 0 for the others.
    live_pass: u32,
    failed: u32,
    sent: u64,
    /// Buckets the ring buffer had no room for, by `live_pass`.
    lost: [u64; 2],
    left_out: u64,
}

#[tracepoint(category = "signal", name = "signal_deliver")]
pub fn signal_deliver(ctx: TracePointContext) -> i32 {
    // SAFETY: offset of `sig` from the tracepoint's format file.
    match unsafe { ctx.read_at::<i32>(g::TP_SIG_OFF() as usize) } {
        Ok(SIGKILL) => {}
        _ => return 0,
    }
    let host_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: plain data.
    let Some(&key) = (unsafe { VICTIMS.get(host_pid) }) else {
        return 0;
    };
    // Exactly one thread of the victim walks: the one whose delete succeeds. The walk runs in
    // the victim's tenant's own program, which writes into that tenant's own `HEAP`; the key
    // goes with it through this CPU's `OUTBOX` (a tail call keeps the CPU).
    if VICTIMS.remove(host_pid).is_ok() {
        if let Some(out) = OUTBOX.get_ptr_mut(0) {
            // SAFETY: a per-CPU map value, read by the tail call's target on this CPU.
            unsafe {
                (*out).host_pid = host_pid;
                (*out).level = key;
                WALKERS.tail_call(&ctx, (key >> 32) as u32);
            }
        }
    }
    0
}

/// A tenant's at-kill walker, reached from `signal_deliver` by a tail call with the victim's
/// `GO_PROCS` key in `OUTBOX.level`. Loaded, never attached.
#[tracepoint]
pub fn heap_walk(_ctx: TracePointContext) -> i32 {
    let Some(out) = OUTBOX.get_ptr(0) else {
        return 0;
    };
    // SAFETY: see `signal_deliver`.
    let (host_pid, key) = unsafe { ((*out).host_pid, (*out).level) };
    // SAFETY: plain data.
    let Some(target) = (unsafe { GO_PROCS.get(key) }).copied() else {
        return 0;
    };
    walk_heap(host_pid, key as u32, &target);
    0
}

fn read_user<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper checks the user address; a fault yields an error, not a crash.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const T) }.ok()
}

#[inline(never)]
fn walk_heap(host_pid: u32, ns_pid: u32, target: &GoTarget) {
    let begin = HeapBegin {
        kind: HEAP_BEGIN,
        host_pid,
        ns_pid,
        _pad: 0,
        cycle: read_user::<u32>(target.cycle).unwrap_or(0) as u64,
        rate: read_user::<u64>(target.rate).unwrap_or(0),
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    if HEAP.output::<HeapBegin>(begin, 0).is_err() {
        return;
    }
    if target.memstats != 0 {
        crate::gostats::send(host_pid, target);
    }
    let head = read_user::<u64>(target.mbuckets).unwrap_or(0);
    let mut w = Walk {
        cur: head,
        host_pid,
        record_bytes: target.record_bytes,
        text_base: target.text_base,
        cycle_index: (begin.cycle >> 1) % 3,
        live_pass: 1,
        failed: 0,
        sent: 0,
        lost: [0; 2],
        left_out: 0,
    };
    let ctx = (&mut w as *mut Walk).cast::<c_void>();
    // SAFETY: the callbacks only touch `w` through `ctx`, which outlives the loops.
    unsafe {
        bpf_loop(HEAP_MAX_BUCKETS, read_bucket as *mut c_void, ctx, 0);
        if w.failed == 0 {
            w.live_pass = 0;
            w.cur = head;
            bpf_loop(HEAP_MAX_BUCKETS, read_bucket as *mut c_void, ctx, 0);
        }
        if w.cur != 0 && w.failed == 0 {
            bpf_loop(HEAP_MAX_COUNT, count_bucket as *mut c_void, ctx, 0);
        }
    }
    // Written in place: a copy on the stack would be kept in every state the verifier keeps
    // for the loops above. The end record must arrive even when buckets were lost (room is
    // kept for it); userspace also closes walks that never end (capture/goheap/kernel_walk.rs).
    if let Some(mut end) = HEAP.reserve::<HeapEnd>(0) {
        end.write(HeapEnd {
            kind: HEAP_END,
            host_pid,
            sent: w.sent,
            lost_live: w.lost[1],
            lost_freed: w.lost[0],
            left_out: w.left_out,
            failed: w.failed,
            _pad: 0,
            // SAFETY: helper without preconditions.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
        });
        end.submit(0);
    }
}

/// One iteration: sends the bucket at `cur` if it belongs to this pass, and moves on.
/// Returns 1 to stop.
extern "C" fn read_bucket(_i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` handed to bpf_loop.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    if w.cur == 0 {
        return 1;
    }
    let Some(s) = HEAP_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let Some(header) = read_user::<[u64; 6]>(w.cur) else {
        w.failed = 1;
        return 1;
    };
    let nstk = header[5];
    let depth = if nstk > HEAP_MAX_DEPTH as u64 {
        HEAP_MAX_DEPTH as u64
    } else {
        nstk
    };
    // Masked where used: the verifier must see the size bounded by the buffer.
    let raw_len = (depth * 8) & 0x7ff;
    if raw_len > (HEAP_MAX_DEPTH * 8) as u64 {
        return 1;
    }
    // SAFETY: `s` is this CPU's scratch value; the reads stay inside its arrays.
    unsafe {
        // In the map value, not on the stack: every stack slot is copied into each state the
        // verifier keeps.
        let rec = &(*s).rec;
        let r = (*s).rec.as_mut_ptr().cast::<c_void>();
        let rec_addr = (w.cur + HEADER + nstk * 8) as *const c_void;
        // 64 or 128 bytes, computed rather than branched on: each branch would be paths for
        // the verifier to walk.
        let size = ((w.record_bytes >> 1) & 64) + 64;
        if bpf_probe_read_user(r, size, rec_addr) != 0 {
            w.failed = 1;
            return 1;
        }
        let b = &mut (*s).out;
        // `memRecord` = `active`, `future[3]`, each `{allocs, frees, …}` of `stride` words.
        let stride = (size >> 5) as u64;
        let at = |cycle: u64, word: u64| rec[((cycle * stride + word) & 15) as usize];
        let flush = 1 + w.cycle_index;
        for word in 0..2u64 {
            let all = at(0, word) + at(1, word) + at(2, word) + at(3, word);
            b.published[word as usize] = at(0, word) + at(flush, word);
            b.all[word as usize] = all;
        }
        let live = b.published[0] != b.published[1] || b.all[0] != b.all[1];
        if live != (w.live_pass == 1) {
            w.cur = header[1];
            return 0;
        }
        let raw = (*s).raw.as_mut_ptr().cast::<c_void>();
        if bpf_probe_read_user(raw, raw_len as u32, (w.cur + HEADER) as *const c_void) != 0 {
            w.failed = 1;
            return 1;
        }
        // A loop of its own, whose body the verifier checks once: an inline loop is checked
        // iteration by iteration, each a state it keeps (over 100 MiB of kernel memory,
        // charged to memprof's cgroup, to load this program; 128 iterations), or a path per
        // possible depth when it stops at `depth`.
        let mut pcs = Pcs {
            scratch: s,
            text_base: w.text_base,
        };
        bpf_loop(
            depth.div_ceil(PCS_PER_CALL as u64) as u32,
            offset_pcs as *mut c_void,
            (&mut pcs as *mut Pcs).cast::<c_void>(),
            0,
        );
        b.kind = HEAP_BUCKET;
        b.host_pid = w.host_pid;
        b.nstk = nstk as u16;
        b.depth = depth as u16;
        b.size = header[4];
        let len = (HEAP_BUCKET_HEAD as u64 + depth * 4) & 0x3ff;
        let bytes =
            core::slice::from_raw_parts((b as *const HeapBucket).cast::<u8>(), len as usize);
        // Room is kept for the end record, which tells userspace the walk is over and what it
        // left; records take 8 bytes of header and are 8-byte aligned, and the kernel keeps
        // the producer less than a whole ring ahead of the consumer (hence `<`).
        let used = HEAP.query(BPF_RB_AVAIL_DATA) + ((len + 8 + 7) & !7) + END_ROOM;
        // Counted by pass, not by `live`: a branch on `live` here would double the paths the
        // verifier walks through the loop above.
        if used < HEAP.query(BPF_RB_RING_SIZE) && HEAP.output::<[u8]>(bytes, 0).is_ok() {
            w.sent += 1;
        } else {
            w.lost[(w.live_pass & 1) as usize] += 1;
        }
    }
    w.cur = header[1];
    0
}

/// The PCs of one bucket, turned into offsets from the executable's code.
#[repr(C)]
struct Pcs {
    scratch: *mut HeapScratch,
    text_base: u64,
}

/// PCs converted per iteration: a call per PC would cost more than the conversion.
const PCS_PER_CALL: usize = 8;

/// One iteration: the `i`th group of PCs of the scratch's raw stack into the record (those
/// past the stack's depth as well: they are not sent).
extern "C" fn offset_pcs(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Pcs` handed to bpf_loop, its scratch this CPU's map value; the
    // index is masked into the arrays (`HEAP_MAX_DEPTH` is a power of two).
    unsafe {
        let p = &*ctx.cast::<Pcs>();
        for j in 0..PCS_PER_CALL {
            let k = (i as usize * PCS_PER_CALL + j) & (HEAP_MAX_DEPTH - 1);
            (*p.scratch).out.pcs[k] = (*p.scratch).raw[k].wrapping_sub(p.text_base) as u32;
        }
    }
    0
}

/// Beyond the cap: only follows `allnext`, counting what was left out.
extern "C" fn count_bucket(_i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` handed to bpf_loop.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    if w.cur == 0 {
        return 1;
    }
    match read_user::<u64>(w.cur + 8) {
        Some(next) => {
            w.left_out += 1;
            w.cur = next;
            0
        }
        None => 1,
    }
}
