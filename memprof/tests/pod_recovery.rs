//! When a capture meets trouble, through a real pod (see `common::pod`): a full kernel map
//! leaves processes to the safety net, a failed capture is retried while the process stays
//! above, a failed endpoint falls back to the heap in memory, and a resized limit is noticed.
use std::time::Duration;

use crate::common::{go, pprof_top, sidecar::*};

#[test]
fn a_full_kernel_map_leaves_processes_to_the_safety_net() {
    let Some(s) = setup(
        "full",
        6,
        &[("MEMPROF_MAX_PROCS", "1"), ("MEMPROF_SAFETY_NET_MS", "200")],
    ) else {
        return;
    };
    // The one slot goes to whichever process changes its RSS first once it is free, a
    // short-lived helper of the pod's too: the app starts only once memprof itself or this
    // idle (but ever faulting) service holds it, which both do for as long as the test runs.
    let filler = s.service("filler", 512 * MIB, &["-addr", "127.0.0.1:0", "-rate", "1"]);
    let lasting = [filler.host_pid, s.memprof.container.host_pid];
    let mut holders = Vec::new();
    crate::common::wait_for(
        "memprof or the filler to hold the kernel map's one slot",
        Duration::from_secs(30),
        || {
            holders = one_slot_holders();
            holders.iter().any(|p| lasting.contains(p))
        },
    );
    println!("full: the kernel's one slot is held by host PID {holders:?}");
    let app = s.service("app", 512 * MIB, &["-rate", "100"]);
    let key = s.next_key(&app, &[]);
    let line = s.memprof.stored_line(&key);
    assert!(line.contains("detector=\"poll\""), "{line}");
    s.memprof
        .wait_for_log("process map is full", Duration::from_secs(20));
}

/// The host PIDs in the kernel's process map of the sidecar started with `MEMPROF_MAX_PROCS=1`
/// (the node's only one-entry `PROCS` map).
fn one_slot_holders() -> Vec<u32> {
    use aya::maps::{HashMap, Map, MapData};
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some("PROCS") && m.max_entries() == 1)
        .filter_map(|m| MapData::from_id(m.id()).ok())
        .filter_map(|d| {
            HashMap::<_, u32, memprof_common::ProcState>::try_from(Map::HashMap(d)).ok()
        })
        .flat_map(|map| map.keys().filter_map(Result::ok).collect::<Vec<_>>())
        .collect()
}

#[test]
fn a_failed_capture_is_retried_while_above() {
    // With `endpoint-only`, the heap is not read from memory instead: only the endpoint can
    // deliver.
    let env = [
        ("MEMORY_CRITICAL_PERCENTAGE", "50"),
        ("MEMPROF_GO_HEAP", "endpoint-only"),
    ];
    let Some(s) = setup("retry", 7, &env) else {
        return;
    };
    // The endpoint fails twice, as a service thrashing near its limit does; the leak leaves
    // ~5 s between the crossing and the kill.
    let Some(bin) = go::build_stripped("leaky", go::Toolchain::System) else {
        return;
    };
    let app = s.program(&bin, "app", 512 * MIB, &["-rate", "50", "-fail-heap", "2"]);
    let key = s.next_key(&app, &[]);
    let log = s.memprof.output();
    let retries = log
        .lines()
        .filter(|l| l.contains("retrying the capture"))
        .count();
    assert_eq!(retries, 2, "two failures, two retries:\n{log}");
    let line = s.memprof.stored_line(&key);
    assert!(line.contains("detector=\"retry\""), "{line}");
}

/// When the endpoint fails, the heap is read from the process's memory at once instead of
/// waiting for retries (`--go-heap=endpoint`, the default).
#[test]
fn a_failed_endpoint_falls_back_to_memory() {
    let Some(s) = setup("fallback", 10, &[("MEMORY_CRITICAL_PERCENTAGE", "50")]) else {
        return;
    };
    let app = s.service("app", 512 * MIB, &["-rate", "50", "-fail-heap", "2"]);
    let key = s.next_key(&app, &[]);
    let line = s.memprof.stored_line(&key);
    assert!(line.contains("source=\"memory\""), "{line}");
    assert!(s.memprof.output().contains("endpoint capture failed"));
    let top = pprof_top(&s.client.get(&key));
    assert!(top.contains("main.leakyRetain"), "{top}");
}

#[test]
fn a_resized_limit_is_noticed() {
    // The `rss_stat` gate off: its cgroup watch would notice the resize too.
    let env = [
        ("MEMPROF_SAFETY_NET_MS", "200"),
        ("MEMPROF_RSS_GATE", "off"),
    ];
    let Some(s) = setup("resize", 8, &env) else {
        return;
    };
    let app = s.service("app", 1024 * MIB, &["-rate", "40"]);
    // Armed at 80 % of 1 GiB; then the container is resized to 256 MiB (as an in-place pod
    // resize does) while it uses ~80 MiB. Without a re-read it would be killed unprofiled.
    // What docs/configuration.md tells operators to check: the limit memprof announces for the service.
    let watching = s.memprof.wait_for_log(
        &format!("watching process pid={} comm=\"leaky\"", app.pid),
        Duration::from_secs(10),
    );
    assert!(
        watching.contains(&format!("limit={}", 1024 * MIB))
            && watching.contains("limit_source=Cgroup"),
        "{watching}"
    );
    // Armed at the 1 GiB limit's level before the resize, or the re-read goes untested.
    s.memprof.wait_for_line_matching(
        "the service armed at 80 % of 1 GiB",
        Duration::from_secs(10),
        |l| {
            l.contains(&format!(" armed pid={} ", app.pid))
                && field(l, "level").is_some_and(|level| level > 512 * MIB)
        },
    );
    // A few safety-net rounds later, the service is passed over as quiet: only the limit
    // moving sends it back to a look.
    std::thread::sleep(Duration::from_secs(1));
    let file = if app.cgroup.v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    std::fs::write(app.cgroup.dir.join(file), (256 * MIB).to_string()).unwrap();
    let key = s.next_key(&app, &[]);
    let line = s.memprof.stored_line(&key);
    assert!(line.contains(&format!("limit={}", 256 * MIB)), "{line}");
    assert!((80..100).contains(&percent_of(&key)), "{key}");
}

/// A numeric field (`name=123`) of a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let rest = line.split(&format!(" {name}=")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
