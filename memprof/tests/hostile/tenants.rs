//! A tenant that tries to take memprof from the others, in a real pod with a memprof sidecar:
//! a process holding most of its container's memory forks fifty children that share its
//! pages (each child's RSS counts them, so all fifty-one cross their level at once), each with
//! a command line of nearly 6 MiB (the most a program may be given). Its captures take a third
//! of the minute's budget; an honest Go service in another container, crossing after, is still
//! profiled before its OOM kill, and memprof stays alive within its 128 MiB.
use std::{path::Path, time::Duration};

use crate::common::{sidecar::*, wait_for};

/// Run in the storm's container: arguments of 44 × 131,000 bytes (the stack limit raised so
/// the kernel takes them), then the program that fills its memory and forks.
const STORM_SH: &str = r#"
ulimit -s unlimited
arg=$(head -c 131000 /dev/zero | tr '\0' x)
set --
for i in $(seq 44); do set -- "$@" "$arg"; done
exec /usr/bin/python3 -c "$STORM" 600 50 "$@"
"#;

/// MiB to hold, children to fork; then everyone waits.
const STORM_PY: &str = r#"
import os, sys, time
n = int(sys.argv[1]) << 20
blob = bytearray(n)
blob[::4096] = b"x" * (n // 4096)
print("ready pid=%d" % os.getpid(), flush=True)
for _ in range(int(sys.argv[2])):
    if os.fork() == 0:
        break
while True:
    time.sleep(3600)
"#;

#[test]
fn a_fork_storm_takes_only_its_share() {
    let Some(s) = setup(
        "hostile-storm",
        63,
        &[
            ("MEMPROF_MAX_CAPTURES_PER_MINUTE", "6"),
            // Each child's RSS counts the pages it shares, its charge does not: at half its
            // limit the storm leaves room for its children's own pages.
            ("MEMORY_CRITICAL_PERCENTAGE", "50"),
        ],
    ) else {
        return;
    };
    let storm = s.pod.container(
        &crate::common::pod::Spec {
            name: "storm",
            limit: 1024 * MIB,
            cmd: &["sh", "-c", STORM_SH],
            env: &[("STORM", STORM_PY.to_string())],
            out: &s.pod.work_dir().join("storm.out"),
        },
        None,
    );
    let started = std::time::Instant::now();
    while storm.cgroup.pids().len() != 51 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the storm has {:?}, {} OOM kills; it said:\n{}",
            storm.cgroup.pids(),
            storm.cgroup.oom_kills(),
            std::fs::read_to_string(s.pod.work_dir().join("storm.out")).unwrap_or_default(),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A third of 6 a minute: 2 captures of the storm, the others held by its share.
    let held = |out: &str| {
        out.lines()
            .filter(|l| l.contains("a tenant's third of MEMPROF_MAX_CAPTURES_PER_MINUTE"))
            .count()
    };
    let started = std::time::Instant::now();
    while held(&s.memprof.output()) < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the storm was not held to its share; the storm said:\n{}\nmemprof said:\n{}",
            std::fs::read_to_string(s.pod.work_dir().join("storm.out")).unwrap_or_default(),
            s.memprof.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cmdline = storm
        .cgroup
        .pids()
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .max_by_key(Vec::len)
        .unwrap_or_default();
    println!(
        "storm: {} processes, command lines of {} bytes, {} held captures",
        storm.cgroup.pids().len(),
        cmdline.len(),
        held(&s.memprof.output())
    );
    assert!(cmdline.len() > 5 << 20, "{}", cmdline.len());

    s.honest_service_profiled();
    s.memprof_survived("storm");
    // Everything taken went through the spool and out of it: no entry left unreadable.
    wait_for("the spool to empty", Duration::from_secs(30), || {
        spooled(&s.pod.work_dir().join("spool")) == 0
    });
    drop(storm);
}

/// Spool files (not the half-written ones) in `dir`.
fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .count()
}
