//! The metrics and health server, scraped while memprof works: `/readyz` is false until the
//! detector runs (memprof held at the node's shared-set lock, as a sidecar is while another
//! instance loads), `/metrics` counts a real capture and OOM kill, `/healthz` fails while the
//! daemon's loop is held (its thread stopped by ptrace) and recovers when it is let go.
use std::{
    io::{Read, Write},
    os::fd::AsRawFd,
    time::Duration,
};

use crate::common::{bpffs::Bpffs, sidecar::prerequisites, *};

/// Status and body of `GET http://addr/path`.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the metrics server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// The address the server bound, from memprof's log.
fn listening(m: &Memprof) -> String {
    let line = m.wait_for_log(
        "metrics and health server listening",
        Duration::from_secs(30),
    );
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .expect("the address in the line")
        .to_string()
}

/// A sample's value in Prometheus' text format (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn readyz_is_false_until_the_detector_runs() {
    if prerequisites().is_none() {
        return;
    }
    // Another instance holds the node's shared set while it loads: memprof waits for it.
    let bpffs = Bpffs::mount();
    let root = bpffs.root().join("memprof");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::open(&root).unwrap();
    // SAFETY: a valid open descriptor.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let dir = tempfile::tempdir().unwrap();
    // Sharing is for memprofs outside the node's PID namespace.
    let m = Memprof::launch_at(
        dir.path(),
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        &["--detector", "btf"],
        &[("MEMPROF_BPFFS", bpffs.path())],
    );
    let addr = listening(&m);
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no detector running yet"), "{body}");
    let (status, body) = get(&addr, "/healthz");
    assert_eq!((status, body.trim()), (200, "starting"));
    assert!(!m.output().contains("memprof started"), "{}", m.output());

    drop(lock);
    m.wait_for_log("memprof started", START);
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("detector: ebpf"), "{body}");
    assert!(body.contains("spool: writable"), "{body}");
    wait_for("the loop's first beat", Duration::from_secs(10), || {
        get(&addr, "/healthz") == (200, "ok\n".into())
    });
    assert_eq!(get(&addr, "/nothing").0, 404);
}

#[test]
fn metrics_count_a_capture_and_a_kill_and_healthz_sees_a_held_loop() {
    if prerequisites().is_none() {
        return;
    }
    // The kernel counts its programs' run time only while this is set.
    let _stats = Sysctl::set("kernel/bpf_stats_enabled", "1");
    let dir = tempfile::tempdir().unwrap();
    let m = Memprof::spawn_at(dir.path(), &[], &["--detector", "btf"], &[]);
    let addr = listening(&m);
    let (status, before) = get(&addr, "/metrics");
    assert_eq!(status, 200, "{before}");

    honest::honest_service_profiled_by(&m, dir.path(), "memprof-test-serve");
    m.wait_for_log("OOM record stored", Duration::from_secs(60));
    let (_, text) = get(&addr, "/metrics");
    for series in [
        r#"memprof_kernel_events_total{kind="crossed"}"#,
        r#"memprof_kernel_events_total{kind="oom_victim"}"#,
        r#"memprof_detections_total{detector="ebpf",trigger="process"}"#,
        r#"memprof_captures_total{kind="threshold",result="stored"}"#,
        r#"memprof_uploads_total{result="stored"}"#,
        r#"memprof_oom_kills_total{profiled_before="true"}"#,
        "memprof_detection_to_stored_seconds_count",
    ] {
        assert!(
            sample(&text, series) >= 1.0,
            "{series} did not move:\n{text}"
        );
    }
    assert_eq!(
        sample(&text, r#"memprof_oom_kills_total{profiled_before="false"}"#),
        0.0
    );
    // Every profile left the spool.
    wait_for("the spool to empty", Duration::from_secs(30), || {
        sample(&get(&addr, "/metrics").1, "memprof_spool_objects") == 0.0
    });
    // The kernel ran memprof's rss_stat program for every RSS change it saw.
    assert!(
        sample(
            &text,
            r#"memprof_bpf_program_runs_total{program="rss_stat_btf"}"#
        ) > 0.0,
        "{text}"
    );

    // Hold the daemon's loop: it runs on the main thread, which ptrace stops alone.
    let tid = m.child.id() as libc::pid_t;
    // SAFETY: ptrace on a child of this test; the seize and interrupt take no pointers.
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0), 0);
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
    }
    wait_for("/healthz to fail", Duration::from_secs(30), || {
        get(&addr, "/healthz").0 == 503
    });
    let (_, body) = get(&addr, "/healthz");
    assert!(
        body.contains("the daemon loop has not turned for"),
        "{body}"
    );
    // The server itself still answers: it runs beside the loop.
    assert_eq!(get(&addr, "/metrics").0, 200);
    // SAFETY: as above; the thread is in a ptrace stop after the interrupt.
    unsafe {
        let mut status = 0;
        libc::waitpid(tid, &mut status, libc::__WALL);
        assert_eq!(libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0), 0);
    }
    wait_for("/healthz to recover", Duration::from_secs(10), || {
        get(&addr, "/healthz") == (200, "ok\n".into())
    });
}
