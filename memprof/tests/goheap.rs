//! Go heap profiles read from the process's memory, checked against the Go runtime's own
//! `/debug/pprof/heap` and decoded by `go tool pprof`.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::*;
use memprof::capture::goheap::{
    discover::{discover, Discovery},
    profile::{build, HeapRead},
    read::{read_heap, Bounds},
    symbols::Symbolizer,
};

const BOUNDS: Bounds = Bounds {
    max_buckets: 100_000,
    max_frames: 1 << 20,
    deadline: Duration::from_secs(10),
    max_profile_bytes: 64 << 20,
};

/// Reads the heap from memory and builds the profile, as a capture does.
pub fn memory_profile(pid: u32) -> Vec<u8> {
    let Discovery::Go(go) = discover(pid).unwrap() else {
        panic!("pid {pid} not discovered as a readable Go process")
    };
    let snap = read_heap(pid, &go, BOUNDS).unwrap();
    let sym = Symbolizer::load(&go.exe, go.pcln.as_ref()).unwrap();
    let read = HeapRead {
        buckets: &snap.buckets,
        rate: snap.rate,
        bias: go.bias,
        comments: vec![],
    };
    build(&read, &sym, "leaky", go.build_ids.for_mapping()).unwrap()
}

#[test]
fn memory_read_agrees_with_the_endpoint_go_system() {
    agrees_with_the_endpoint(go::build("leaky", go::Toolchain::System));
}

#[test]
fn memory_read_agrees_with_the_endpoint_go_current() {
    agrees_with_the_endpoint(go::build("leaky", go::Toolchain::Current));
}

/// Without symbol table and DWARF (`-s -w`, as release builds ship) on the oldest, a middle
/// and the newest release: the runtime's variables are found in its code, frames come from
/// Go's line table with files and lines, and the read is the endpoint's profile.
#[test]
fn memory_read_agrees_with_the_endpoint_stripped_go_system() {
    agrees_with_the_endpoint(go::build_stripped("leaky", go::Toolchain::System));
}

#[test]
fn memory_read_agrees_with_the_endpoint_stripped_go_middle() {
    agrees_with_the_endpoint(go::build_stripped("leaky", go::Toolchain::Middle));
}

#[test]
fn memory_read_agrees_with_the_endpoint_stripped_go_current() {
    agrees_with_the_endpoint(go::build_stripped("leaky", go::Toolchain::Current));
}

/// Position-independent and stripped: Go 1.19 keeps its line table in a section of relocated
/// data, and the variables found are moved by the load bias.
#[test]
fn memory_read_agrees_with_the_endpoint_stripped_pie_go_system() {
    agrees_with_the_endpoint(go::build_stripped_pie("leaky", go::Toolchain::System));
}

/// A program that never references the memory profiler runs with `MemProfileRate = 0`:
/// discovery notes it (the linker's flag), and a read says why there is nothing to read.
#[test]
fn a_program_without_the_profiler_has_nothing_to_read() {
    let Some(bin) = go::build("stacks", go::Toolchain::System) else {
        return;
    };
    let mut svc = Command::new(bin)
        .args([
            "-sampled=false",
            "-stacks",
            "10",
            "-rate",
            "0",
            "-delay",
            "1h",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    first_line(&mut svc);
    let found = discover(svc.id()).unwrap();
    let Discovery::Go(go) = found else {
        panic!("expected a Go process, got {found:?}")
    };
    assert!(go.profiler_off, "the linker's flag was not seen");
    let Err(e) = memprof::capture::goheap::read_profile(svc.id(), &go, BOUNDS, || ()) else {
        panic!("a heap with profiling off was read")
    };
    let _ = svc.kill();
    let _ = svc.wait();
    assert!(format!("{e}").contains("MemProfileRate is 0"), "{e}");
}

/// The buckets a process lists cost memprof a bounded amount: a read keeps to its budget of
/// stack frames, counts the buckets it left out, and the profile says it was cut.
#[test]
fn a_read_keeps_to_its_frame_budget() {
    let Some(bin) = go::build("stacks", go::Toolchain::System) else {
        return;
    };
    let mut svc = Command::new(bin)
        .args(["-stacks", "2000", "-rate", "0", "-delay", "1h"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    first_line(&mut svc);
    let Discovery::Go(go) = discover(svc.id()).unwrap() else {
        panic!("stacks not discovered as Go")
    };
    let all = read_heap(svc.id(), &go, BOUNDS).unwrap();
    let frames: usize = all.buckets.iter().map(|b| b.stack.len()).sum();
    let budget = Bounds {
        max_frames: frames / 4,
        ..BOUNDS
    };
    let cut = read_heap(svc.id(), &go, budget).unwrap();
    let kept: usize = cut.buckets.iter().map(|b| b.stack.len()).sum();
    let profile = memprof::capture::goheap::read_profile(svc.id(), &go, budget, || ()).unwrap();
    // The whole profile, then one held to a third of its size: the largest buckets are kept.
    let whole = memprof::capture::goheap::read_profile(svc.id(), &go, BOUNDS, || ()).unwrap();
    let third = Bounds {
        max_profile_bytes: whole.bytes.len() as u64 / 3,
        ..BOUNDS
    };
    let fitted = memprof::capture::goheap::read_profile(svc.id(), &go, third, || ()).unwrap();
    let _ = svc.kill();
    let _ = svc.wait();
    println!(
        "{} buckets, {frames} frames; within {} frames: {} buckets, {kept} frames",
        all.buckets.len(),
        budget.max_frames,
        cut.buckets.len()
    );
    assert!(all.buckets.len() >= 2000 && all.left_out == 0);
    assert!(kept >= budget.max_frames && kept < budget.max_frames + 1024);
    // Every bucket is kept or counted as left out. Buckets only ever join the list, and the
    // runtime may add one of its own between two reads.
    let seen = cut.buckets.len() as u64 + cut.left_out;
    let before = all.buckets.len() as u64;
    assert!(
        (before..before + 64).contains(&seen),
        "{seen} after {before}"
    );
    assert!(
        unzipped(&profile.bytes).contains("memprof: truncated: "),
        "no truncation comment"
    );
    println!(
        "whole profile {} bytes; within {}: {} bytes",
        whole.bytes.len(),
        third.max_profile_bytes,
        fitted.bytes.len()
    );
    assert!(fitted.bytes.len() as u64 <= third.max_profile_bytes);
    assert!(
        unzipped(&fitted.bytes).contains("to fit MEMPROF_CAPTURE_MAX_BYTES"),
        "no fitting comment"
    );
}

/// A gzip'd profile's bytes, as text: its string table holds its comments verbatim.
fn unzipped(gz: &[u8]) -> String {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut raw).unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn other_programs_are_not_go() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let found = discover(sleeper.id()).unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(matches!(found, Discovery::NotGo), "{found:?}");
}

fn agrees_with_the_endpoint(bin: Option<std::path::PathBuf>) {
    let Some(bin) = bin else {
        return;
    };
    let port = free_port();
    let mut svc = Command::new(&bin)
        .args(["-addr", &format!("127.0.0.1:{port}"), "-rate", "40"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    first_line(&mut svc);
    let pid = svc.id();
    // The service leaks on; a GC between the two reads publishes another cycle. Memory is read
    // before and after the endpoint: when both reads agree, no GC came between.
    let url = format!("http://127.0.0.1:{port}/debug/pprof/heap");
    wait_for_heap_samples(&url, "main.leakyRetain");
    // The leak, not the endpoint's own responses (their compressors, ~1.6 MB each), holds most
    // of the heap: a profile lags its GC cycles, and an early cycle's is mostly compressor.
    let leak_holds_most = |profile: &[u8]| {
        let (total, flat) = pprof_inuse(profile);
        flat.get("main.leakyRetain")
            .is_some_and(|b| *b > 16 << 20 && *b > total / 2)
    };
    let mut pair = None;
    wait_for(
        "two memory reads of one GC cycle around the endpoint's, the leak holding most",
        Duration::from_secs(30),
        || {
            let before = memory_profile(pid);
            let endpoint = http_get(&url);
            let after = memory_profile(pid);
            let one_cycle = pprof_inuse(&before).0 == pprof_inuse(&after).0;
            if one_cycle && leak_holds_most(&before) && leak_holds_most(&endpoint) {
                pair = Some((before, endpoint));
            }
            pair.is_some()
        },
    );
    let (from_memory, from_endpoint) = pair.unwrap();
    let _ = svc.kill();
    // The binary can be found and checked by its build ID.
    assert_eq!(pprof_build_id(&from_memory), go::mapping_build_id(&bin));
    let (mem_total, mem) = pprof_inuse(&from_memory);
    let (http_total, http) = pprof_inuse(&from_endpoint);
    eprintln!("memory {mem_total} B {mem:?}\nendpoint {http_total} B {http:?}");
    let diff = mem_total.abs_diff(http_total) as f64 / http_total as f64;
    assert!(
        diff < 0.01,
        "inuse_space totals differ by {:.2} %",
        diff * 100.0
    );
    assert_eq!(
        mem.keys().collect::<Vec<_>>(),
        http.keys().collect::<Vec<_>>(),
        "the two profiles name different functions"
    );
    assert!(mem["main.leakyRetain"] > mem_total / 2);
    let (function, line) = pprof_top_line(&from_memory);
    assert_eq!(function, "main.leakyRetain");
    assert!(
        line.ends_with(&format!("/leaky/main.go:{}", go::leak_line())),
        "{line}"
    );
    assert_eq!(
        (function, line),
        pprof_top_line(&from_endpoint),
        "the endpoint names another line"
    );
}
