//! Process lifecycles and policy through a real pod (see `common::pod`): a reused PID starts
//! afresh, a second crossing gives a second profile, escalating levels leave a series, a kill
//! is recorded, the scope and the rate limit say which rule held a capture, and a process
//! without a limit is captured at absolute levels.
use std::time::Duration;

use crate::common::{go, pprof_diff, sidecar::*};

#[test]
fn a_reused_pid_starts_afresh() {
    // Only the kernel path may find the second process (the safety net is out of reach), and
    // the default 300 s cooldown would hold a profile if the old process's state carried over.
    let Some(s) = setup("reuse", 4, &[("MEMPROF_SAFETY_NET_MS", "600000")]) else {
        return;
    };
    // The first takes whatever PID comes next (memprof's own threads take PIDs in the pod
    // too); the second is given the same one.
    let first = service(&s.pod, "first", 256 * MIB, &["-rate", "100"], None);
    let key1 = s.next_key(&first, &[]);
    let pid = first.pid;
    drop(first);
    let second = service(&s.pod, "second", 256 * MIB, &["-rate", "100"], Some(pid));
    let key2 = s.next_key(&second, std::slice::from_ref(&key1));
    let line = s.memprof.stored_line(&key2);
    assert!(line.contains("detector=\"ebpf\""), "{line}");
    println!("reuse: {key1} then {key2}");
}

#[test]
fn a_second_crossing_gives_a_second_profile() {
    let Some(s) = setup(
        "again",
        5,
        &[
            ("MEMORY_CRITICAL_PERCENTAGE", "50"),
            ("MEMPROF_COOLDOWN_SECS", "0"),
            ("MEMPROF_SAFETY_NET_MS", "200"),
        ],
    ) else {
        return;
    };
    // Rises to 320 MiB (crossing 256 MiB), frees everything, rises again.
    let app = s.service("app", 512 * MIB, &["-rate", "100", "-free-at", "320"]);
    let key1 = s.next_key(&app, &[]);
    let key2 = s.next_key(&app, std::slice::from_ref(&key1));
    println!("again: {key1} then {key2}");
    for key in [key1, key2] {
        assert!((50..70).contains(&percent_of(&key)), "{key}");
    }
}

/// A leak through `80,90,95` leaves a series: one profile per level, in that order, all while
/// the service lives; the first and the last, diffed as users diff them, show the leak grow.
#[test]
fn escalating_levels_leave_a_series() {
    let Some(s) = setup("series", 14, &[("MEMORY_CRITICAL_PERCENTAGE", "80,90,95")]) else {
        return;
    };
    // Heap profiles publish what the last GC saw: collecting every 10 % of growth (as a
    // service near GOMEMLIMIT does) makes each level's profile its own.
    // In the emulated VM a capture takes up to ~1.5 s: leak slowly enough that each level
    // is still ahead when the previous one is stored.
    let (limit_mib, vm_rate) = scaled(512, 50);
    let rate = if vm_rate == "50" { vm_rate } else { "6".into() };
    let app = s.service(
        "app",
        limit_mib * MIB,
        &["-rate", &rate, "-gc-percent", "10"],
    );
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..3 {
        let key = s.next_key(&app, &keys);
        keys.push(key);
    }
    println!("series: {keys:?}");
    let pct: Vec<u32> = keys.iter().map(|k| percent_of(k)).collect();
    assert!(
        (80..90).contains(&pct[0]) && (90..95).contains(&pct[1]) && (95..100).contains(&pct[2]),
        "levels out of order: {keys:?}"
    );
    for key in &keys[1..] {
        let line = s.memprof.stored_line(key);
        assert!(
            line.contains("detector=\"ebpf\"") || line.contains("detector=\"next-level\""),
            "{line}"
        );
    }
    let diff = pprof_diff(&s.client.get(&keys[0]), &s.client.get(&keys[2]));
    let grew = diff
        .lines()
        .find(|l| l.contains("main.leakyRetain"))
        .unwrap_or_else(|| panic!("the diff does not name the leak:\n{diff}"));
    println!("series: go tool pprof -base first last: {grew}");
    assert!(
        !grew.trim_start().starts_with('-') && !grew.trim_start().starts_with("0 "),
        "the leak did not grow between the first and the last profile: {grew}"
    );
    app.wait_oom_kill();
    let record = oom_record(&s, app.pid);
    println!("series: {record}");
    let profiles: Vec<String> = record["profiles"]
        .as_array()
        .expect("profiles")
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(profiles[..3], keys[..], "{record}");
    // Then the at-kill profile, when the kernel walked the heap (see docs/limits.md).
    assert!(
        profiles[3..].iter().all(|k| k.ends_with("_oom.heap.pb.gz")),
        "{record}"
    );
    assert_eq!(record["profiled_before_kill"], true);
    assert_eq!(record["limit_bytes"], limit_mib * MIB);
    assert_eq!(record["comm"], "leaky");
}

/// The OOM record of `pid`, once stored.
fn oom_record(s: &Setup, pid: u32) -> serde_json::Value {
    let marker = format!("_pid-{pid}_oom.record.json");
    let mut key = None;
    crate::common::wait_for("the OOM record", Duration::from_secs(60), || {
        key = s.client.keys().into_iter().find(|k| k.ends_with(&marker));
        key.is_some()
    });
    serde_json::from_slice(&s.client.get(&key.unwrap())).expect("the record is JSON")
}

/// Killed with no profile before it (none could be taken): the record says so, and so does the
/// log.
#[test]
fn a_kill_without_a_profile_before_it_is_recorded_as_such() {
    let Some(bin) = go::build_stripped("leaky", go::Toolchain::System) else {
        return;
    };
    // No endpoint, and memprof reads no process's memory: its heap can be read neither way.
    let Some(s) = setup("unprofiled", 15, &[("MEMPROF_GO_HEAP", "endpoint-only")]) else {
        return;
    };
    let app = s.program(&bin, "app", 256 * MIB, &["-addr", "", "-rate", "100"]);
    app.wait_oom_kill();
    let record = oom_record(&s, app.pid);
    println!("unprofiled: {record}");
    assert_eq!(record["profiled_before_kill"], false);
    assert_eq!(record["profiles"], serde_json::json!([]));
    assert!(record["cmdline"][0]
        .as_str()
        .is_some_and(|c| c.ends_with("/leaky")));
    s.memprof.wait_for_log(
        &format!("OOM kill with no profile before it pid={}", app.pid),
        Duration::from_secs(10),
    );
}

/// The scope leaves out the pause container and excluded commands (each logged once with its
/// rule), and the global rate limit suppresses a second capture within the minute, saying so.
#[test]
fn scope_and_rate_limit_say_which_rule_held_a_capture() {
    let Some(s) = setup(
        "scope",
        16,
        &[
            ("MEMPROF_EXCLUDE_COMM", "batch"),
            ("MEMPROF_MAX_CAPTURES_PER_MINUTE", "1"),
        ],
    ) else {
        return;
    };
    let leaky = crate::common::go_service().expect("the Go test service");
    let copy = |name: &str| {
        let path = s.pod.work_dir().join(name);
        std::fs::copy(&leaky, &path).unwrap();
        path
    };
    let args = ["-addr", "127.0.0.1:0", "-rate", "100"];
    let pause = s.program(&copy("pause"), "pause", 256 * MIB, &args);
    let batch = s.program(&copy("batch"), "batch", 256 * MIB, &args);
    for (c, rule) in [
        (&pause, "rule=\"the pod's pause container\""),
        (&batch, "rule=\"MEMPROF_EXCLUDE_COMM\""),
    ] {
        let line = s.memprof.wait_for_log(
            &format!("not watched pid={} ", c.pid),
            Duration::from_secs(30),
        );
        assert!(line.contains(rule), "{line}");
    }
    let first = s.service("first", 256 * MIB, &["-rate", "100"]);
    // The pod's loopback has one 6060: the second service's heap is read from its memory.
    let second = s.service("second", 256 * MIB, &["-addr", "", "-rate", "100"]);
    for c in [&pause, &batch, &first, &second] {
        c.wait_oom_kill();
    }
    let keys = s.client.keys();
    let of = |pid: u32| {
        keys.iter()
            .filter(|k| k.contains(&format!("_pid-{pid}_")))
            .count()
    };
    assert_eq!((of(pause.pid), of(batch.pid)), (0, 0), "{keys:?}");
    let (captured, held) = if of(first.pid) > 0 {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert!(of(captured.pid) > 0 && of(held.pid) == 0, "{keys:?}");
    let line = s.memprof.wait_for_log(
        &format!(
            "capture suppressed by the capture rate limit pid={} ",
            held.pid
        ),
        Duration::from_secs(5),
    );
    println!("scope: {line}");
    assert!(
        line.contains("rule=\"MEMPROF_MAX_CAPTURES_PER_MINUTE\""),
        "{line}"
    );
}

/// A container without a memory limit: `MEMORY_CRITICAL_BYTES` levels apply instead of a
/// percentage of the node's memory, and the keys name them.
#[test]
fn absolute_levels_for_a_process_without_a_limit() {
    let Some(s) = setup("bytes", 17, &[("MEMORY_CRITICAL_BYTES", "64Mi,128Mi")]) else {
        return;
    };
    let app = s.service("app", u64::MAX, &["-rate", "50"]);
    let first = s.next_key(&app, &[]);
    let second = s.next_key(&app, std::slice::from_ref(&first));
    println!("bytes: {first} then {second}");
    assert!(
        first.contains(&format!("_pid-{}_64MiB.heap", app.pid)),
        "{first}"
    );
    assert!(
        second.contains(&format!("_pid-{}_128MiB.heap", app.pid)),
        "{second}"
    );
    let line = s.memprof.stored_line(&first);
    assert!(line.contains("limit_source=Unlimited"), "{line}");
}
