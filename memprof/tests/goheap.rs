//! Go heap profiles read from the process's memory, checked against the Go runtime's own
//! `/debug/pprof/heap` and decoded by `go tool pprof`.
mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use memprof::capture::goheap::{
    discover::{discover, Discovery},
    profile::{build, HeapRead},
    read::{read_heap, Bounds},
    symbols::Symbolizer,
};

const BOUNDS: Bounds = Bounds {
    max_buckets: 100_000,
    deadline: Duration::from_secs(10),
};

/// Reads the heap from memory and builds the profile, as a capture does.
fn memory_profile(pid: u32) -> Vec<u8> {
    let Discovery::Go(go) = discover(pid).unwrap() else {
        panic!("pid {pid} not discovered as a readable Go process")
    };
    let snap = read_heap(pid, &go, BOUNDS).unwrap();
    let sym = Symbolizer::load(&go.exe).unwrap();
    let read = HeapRead {
        buckets: &snap.buckets,
        cycle: snap.cycle,
        rate: snap.rate,
        layout: go.layout,
        bias: go.bias,
        comments: vec![],
    };
    build(&read, &sym, "leaky").unwrap()
}

#[test]
fn memory_read_agrees_with_the_endpoint() {
    let Some(bin) = go_service() else { return };
    let port = free_port();
    let mut svc = Command::new(bin)
        .args(["-addr", &format!("127.0.0.1:{port}"), "-rate", "40"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    first_line(&mut svc);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = svc.id();
    let from_memory = memory_profile(pid);
    let from_endpoint = http_get(&format!("http://127.0.0.1:{port}/debug/pprof/heap"));
    let _ = svc.kill();
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
}
