//! The reader at the kill: when an OOM victim with a registered Go heap receives its SIGKILL,
//! the first of its threads to take the signal walks the bucket list (`runtime.mbuckets`,
//! linked through `allnext`) from the victim's own context, its memory still intact, and sends
//! each bucket to userspace through `HEAP`. `bpf_loop` runs one bucket per iteration, because
//! the verifier refuses a plain loop of thousands.
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
    HEAP_MAX_BUCKETS, HEAP_MAX_COUNT, HEAP_MAX_DEPTH, HEAP_RECORD_WORDS,
};

use crate::maps::{g, GO_PROCS, HEAP, HEAP_SCRATCH, OUTBOX, VICTIMS, WALKERS};

const SIGKILL: i32 = 9;
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
    sent: u64,
    lost: u64,
    left_out: u64,
    failed: u32,
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
    let mut w = Walk {
        cur: read_user::<u64>(target.mbuckets).unwrap_or(0),
        host_pid,
        record_bytes: target.record_bytes,
        text_base: target.text_base,
        cycle_index: (begin.cycle >> 1) % 3,
        sent: 0,
        lost: 0,
        left_out: 0,
        failed: 0,
    };
    let ctx = (&mut w as *mut Walk).cast::<c_void>();
    // SAFETY: the callbacks only touch `w` through `ctx`, which outlives the loops.
    unsafe {
        bpf_loop(HEAP_MAX_BUCKETS, read_bucket as *mut c_void, ctx, 0);
        if w.cur != 0 && w.failed == 0 {
            bpf_loop(HEAP_MAX_COUNT, count_bucket as *mut c_void, ctx, 0);
        }
    }
    let end = HeapEnd {
        kind: HEAP_END,
        host_pid,
        sent: w.sent,
        lost: w.lost,
        left_out: w.left_out,
        failed: w.failed,
        _pad: 0,
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    // The end record must arrive even when buckets were lost: retry once is pointless on a
    // full buffer, so userspace also closes walks that never end (see capture/goheap/kernel_walk.rs).
    let _ = HEAP.output::<HeapEnd>(end, 0);
}

/// One iteration: sends the bucket at `cur` and moves on. Returns 1 to stop.
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
    let mut rec = [0u64; HEAP_RECORD_WORDS];
    // SAFETY: `s` is this CPU's scratch value; the reads stay inside its arrays and `rec`.
    unsafe {
        let raw = (*s).raw.as_mut_ptr().cast::<c_void>();
        let r = rec.as_mut_ptr().cast::<c_void>();
        let rec_addr = (w.cur + HEADER + nstk * 8) as *const c_void;
        let ok = bpf_probe_read_user(raw, raw_len as u32, (w.cur + HEADER) as *const c_void) == 0
            && if w.record_bytes == 64 {
                bpf_probe_read_user(r, 64, rec_addr) == 0
            } else {
                bpf_probe_read_user(r, 128, rec_addr) == 0
            };
        if !ok {
            w.failed = 1;
            return 1;
        }
        let b = &mut (*s).out;
        // Every slot, not only the first `depth`: a loop with a fixed count is one path for
        // the verifier, where a loop that stops at `depth` is a path per possible depth, each
        // verified to the end of the program (hundreds of MiB of kernel memory, charged to
        // memprof's memory cgroup, to load this program). Slots past `depth` are not sent.
        for i in 0..HEAP_MAX_DEPTH {
            b.pcs[i] = (*s).raw[i].wrapping_sub(w.text_base) as u32;
        }
        b.kind = HEAP_BUCKET;
        b.host_pid = w.host_pid;
        b.nstk = nstk as u16;
        b.depth = depth as u16;
        b.size = header[4];
        // `memRecord` = `active`, `future[3]`, each `{allocs, frees, …}` of `stride` words.
        let stride = if w.record_bytes == 64 { 2 } else { 4 };
        let at = |cycle: u64, word: u64| rec[((cycle * stride + word) & 15) as usize];
        let flush = 1 + w.cycle_index;
        for word in 0..2u64 {
            let all = at(0, word) + at(1, word) + at(2, word) + at(3, word);
            b.published[word as usize] = at(0, word) + at(flush, word);
            b.all[word as usize] = all;
        }
        let len = (HEAP_BUCKET_HEAD as u64 + depth * 4) & 0x3ff;
        let bytes =
            core::slice::from_raw_parts((b as *const HeapBucket).cast::<u8>(), len as usize);
        if HEAP.output::<[u8]>(bytes, 0).is_ok() {
            w.sent += 1;
        } else {
            w.lost += 1;
        }
    }
    w.cur = header[1];
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
