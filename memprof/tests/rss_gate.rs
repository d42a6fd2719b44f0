//! The `rss_stat` gate on real parts: memprof idle beside nothing near its level keeps its
//! `rss_stat` program off its hook; a Go service growing in a memory cgroup past half its
//! level gets it attached, its profile is stored while it still lives, and after the OOM
//! kill the program is detached again; the same once more in the cgroup made again at its
//! path. A program started in a cgroup the gate watches already is read only once it has
//! lived a moment, so that a short-lived one costs no read.
use std::time::Duration;

use crate::common::*;

/// The hold below every mark before detaching, shortened from 10 s.
const HOLD_MS: &str = "1000";

/// Whether a `rss_stat_btf` program of process `pid` (one it holds a descriptor of) is
/// attached by a BPF link now. Other memprofs on the machine have their own programs.
fn rss_stat_attached(pid: u32) -> bool {
    let held: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| !info.contains("link_id:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
        })
        .collect();
    let ours: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| held.contains(&p.id()) && p.name_as_str() == Some("rss_stat_btf"))
        .map(|p| p.id())
        .collect();
    assert_eq!(ours.len(), 1, "memprof holds one rss_stat_btf program");
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .any(|l| ours.contains(&l.program_id()))
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn rss_stat_is_attached_only_while_a_service_nears_its_level() {
    if !require(is_root(), "root (BPF, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
    {
        return;
    }
    let Some(go) = go_service() else { return };
    // Only the test's cgroup is watched: the machine's own processes have no limit, so their
    // mark is half their level of the node's memory, which the root cgroup's usage (page
    // cache included) passes on a busy machine, and rightly holds the program on.
    let env = [
        ("MEMORY_CRITICAL_PERCENTAGE", "80".to_string()),
        ("MEMPROF_RSS_GATE_HOLD_MS", HOLD_MS.to_string()),
        ("MEMPROF_INCLUDE_CGROUP", "memprof-rss-gate".to_string()),
    ];
    let m = Memprof::spawn(&["--detector", "btf"], &env);
    let pid = m.child.id();
    m.wait_for_log("rss_stat detached", Duration::from_secs(30));
    assert!(
        !rss_stat_attached(pid),
        "rss_stat is still attached while memprof is idle"
    );

    // Twice, the second time in a cgroup made again at the same path while memprof still
    // remembers the first (as a restarted service's is): its watcher must follow the new one.
    let mut service_pids = Vec::new();
    for round in 0..2 {
        let cg = MemCgroup::new("memprof-rss-gate", 512 << 20);
        let mut service = cg.start(&go, &["-rate", "200", "-addr", "127.0.0.1:0"]);
        let service_pid = service.id();
        let attached = m.wait_for_log("rss_stat attached", Duration::from_secs(30));
        assert!(
            attached.contains("memprof-rss-gate"),
            "attached for another cgroup: {attached}"
        );
        let profiles = m.log.parent().unwrap().join("profiles");
        let marker = format!("_pid-{service_pid}_");
        let mut stored_alive = false;
        while cg.pids().contains(&service_pid) {
            stored_alive |= find_file(&profiles, &marker, ".pb.gz").is_some();
            if stored_alive {
                assert!(
                    rss_stat_attached(pid),
                    "rss_stat is not attached while the service nears its level"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            stored_alive,
            "no profile of pid {service_pid} in {} before the kill; memprof said:\n{}",
            profiles.display(),
            m.output()
        );
        wait_for("the OOM kill", Duration::from_secs(60), || {
            !cg.pids().contains(&service_pid)
        });
        let _ = service.wait();
        assert!(cg.oom_kills() >= 1, "the service was not OOM-killed");

        wait_for(
            "rss_stat detached after the kill",
            Duration::from_secs(30),
            || count(&m.output(), "rss_stat detached") >= 2 + round,
        );
        assert!(
            !rss_stat_attached(pid),
            "rss_stat is still attached after the kill"
        );
        service_pids.push(service_pid);
    }
    let (code, log) = m.stop();
    assert_eq!(code, Some(0), "memprof should exit 0 on SIGTERM:\n{log}");
    for service_pid in service_pids {
        assert!(
            log.contains(&format!("pid={service_pid}")) && log.contains("profile stored"),
            "{log}"
        );
    }
}

/// Whether the log has a line with `needle` for process `pid` (its `pid=` field exactly).
fn logged_for(log: &str, needle: &str, pid: u32) -> bool {
    log.lines()
        .any(|l| l.contains(needle) && l.split_whitespace().any(|f| f == format!("pid={pid}")))
}

#[test]
fn a_program_started_where_the_gate_watches_is_read_once_it_has_lived_a_moment() {
    if !require(is_root(), "root (BPF, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
    {
        return;
    }
    let Some(go) = go_service() else { return };
    let cg = MemCgroup::new("memprof-rss-settle", 512 << 20);
    let args = ["-rate", "0", "-addr", "127.0.0.1:0"];
    // Read at memprof's start: from then on its cgroup is watched.
    let mut first = cg.start(&go, &args);
    let env = [
        ("MEMPROF_RSS_GATE_HOLD_MS", HOLD_MS.to_string()),
        ("MEMPROF_INCLUDE_CGROUP", "memprof-rss-settle".to_string()),
    ];
    let m = Memprof::spawn(&["--detector", "btf"], &env);
    m.wait_for_log("rss_stat detached", Duration::from_secs(30));
    m.wait_for_line(
        "the first service discovered",
        Duration::from_secs(30),
        |l| logged_for(l, "Go heap readable", first.id()),
    );

    // A program started there is read once it has lived a moment (its wait,
    // `daemon::exec_settle::SETTLE`, 250 ms), not at its exec: a program that ends sooner (an
    // exec probe) is never read.
    let started = chrono::Utc::now();
    let mut second = cg.start(&go, &args);
    let line = m.wait_for_line(
        "the second service discovered",
        Duration::from_secs(30),
        |l| logged_for(l, "Go heap readable", second.id()),
    );
    let read_at = line
        .split_whitespace()
        .next()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("no time on {line}"));
    let waited = read_at.signed_duration_since(started);
    assert!(
        waited >= chrono::TimeDelta::milliseconds(250),
        "read {waited} after its start, not after its wait:\n{line}"
    );
    let log = m.output();
    assert_eq!(
        count(&log, "rss_stat attached"),
        0,
        "rss_stat went back on its hook:\n{log}"
    );
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (code, log) = m.stop();
    assert_eq!(code, Some(0), "memprof should exit 0 on SIGTERM:\n{log}");
}
