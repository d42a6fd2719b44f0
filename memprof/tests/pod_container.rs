//! The container trigger through a real pod (see `common::pod`): what the OOM killer judges is
//! the container's charge, so a container of two processes, neither near the per-process
//! level, is captured as a whole before the kill; and page cache, which the kernel reclaims,
//! does not count.
use std::time::{Duration, Instant};

use crate::common::{pprof_top, sidecar::*};

/// Two services in one container, each under half of its limit and growing together: no
/// process reaches 80 %, the container's working set reaches its level first, and its larger
/// process is captured while both live; the log names both.
#[test]
fn a_container_of_two_processes_is_captured_as_a_whole() {
    let level = container_pct();
    let Some(s) = setup("twoprocs", 18, &[("MEMORY_CONTAINER_PERCENTAGE", &level)]) else {
        return;
    };
    let (limit_mib, _) = scaled(512, 0);
    let go = crate::common::go_service().expect("the Go test service");
    let go = go.display();
    let script =
        format!("{go} -addr 127.0.0.1:6061 -rate 8 & exec {go} -addr 127.0.0.1:6060 -rate 10");
    let app = s.program(
        std::path::Path::new("/bin/sh"),
        "app",
        limit_mib * MIB,
        &["-c", &script],
    );
    // The exec'd service keeps the container's first PID; its sibling is the other one.
    let mut sibling = 0;
    crate::common::wait_for("the second process", Duration::from_secs(10), || {
        let pids = app.cgroup.pids();
        sibling = pids
            .iter()
            .copied()
            .find(|p| {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm"));
                *p != app.host_pid && comm.is_ok_and(|c| c.trim() == "leaky")
            })
            .map_or(0, crate::common::pod::ns_pid);
        sibling != 0
    });
    let key = s.next_key(&app, &[]);
    println!("two processes: {key}");
    assert!(
        key.contains("_container-"),
        "not the container trigger: {key}"
    );
    assert!(percent_of(&key) >= level.parse().unwrap(), "{key}");
    let line = s.memprof.stored_line(&key);
    assert!(line.contains("detector=\"container-"), "{line}");
    let reached = s
        .memprof
        .wait_for_log(&format!("chosen={}", app.pid), Duration::from_secs(1));
    println!("two processes: {reached}");
    for pid in [app.pid, sibling] {
        assert!(reached.contains(&format!("{pid}:leaky:")), "{reached}");
    }
    let top = pprof_top(&s.client.get(&key));
    assert!(top.contains("main.leakyRetain"), "{top}");
    app.wait_oom_kill();
    // Neither process reached the per-process level: nothing else was captured before the
    // kill (the at-kill profile and the OOM record may follow, and a capture whose profile
    // was not coming half a second after the crossing also stored its evidence).
    let before: Vec<String> = s
        .client
        .keys()
        .into_iter()
        .filter(|k| !k.contains("_oom.") && !k.ends_with(".snapshot.txt"))
        .collect();
    assert_eq!(before, vec![key], "{}", s.memprof.output());
}

/// A container whose page cache fills it (a file written through the cache): its usage
/// reaches the limit, its working set stays low, and nothing is captured.
#[test]
fn page_cache_does_not_count_toward_the_container_level() {
    // Before the pod, whose mount namespace is a copy of the test's.
    let disk = DiskBacked::new();
    let Some(s) = setup("cache", 19, &[]) else {
        return;
    };
    let limit = 128 * MIB;
    let file = disk.dir.join("pod-cache.bin");
    // `dsync`: each write reaches the disk before the next, so the cached pages are clean and
    // reclaim can always take them; dirty pages behind slow writeback (the emulated VM's loop
    // device) could instead drive the container into an OOM kill.
    let script = format!(
        "for i in 1 2 3 4; do dd if=/dev/zero of={} bs=1M count=256 oflag=dsync 2>/dev/null; done; sleep 600",
        file.display()
    );
    let writer = s.program(
        std::path::Path::new("/bin/sh"),
        "writer",
        limit,
        &["-c", &script],
    );
    let usage_file = writer.cgroup.dir.join(if writer.cgroup.v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    });
    let usage = || -> u64 {
        std::fs::read_to_string(&usage_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    s.memprof
        .wait_for_log("writer\" limit=", Duration::from_secs(30));
    // The cache fills the container: by usage alone, the container level would be crossed.
    let mut full_since = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if usage() >= limit / 100 * 92 {
            full_since.get_or_insert_with(Instant::now);
        }
        if full_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&file);
    assert!(
        full_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)),
        "the page cache did not fill the container (usage {} of {limit})",
        usage()
    );
    let out = s.memprof.output();
    assert!(!out.contains("container reached its level"), "{out}");
    assert!(s.client.keys().is_empty(), "{:?}", s.client.keys());
    assert!(writer.alive(), "the writer was killed: {out}");
}

/// Where the container's cgroup is mounted read-only (runc and containerd do so in
/// unprivileged containers), no threshold or PSI trigger can be registered: memprof says so
/// and the working-set poll captures the container all the same.
#[test]
fn a_read_only_cgroup_falls_back_to_the_poll() {
    let level = container_pct();
    let Some(s) = setup_pod(
        "rocgroup",
        20,
        &[
            ("MEMORY_CRITICAL_PERCENTAGE", "99"),
            ("MEMORY_CONTAINER_PERCENTAGE", &level),
        ],
        true,
    ) else {
        return;
    };
    let (limit_mib, rate) = scaled(256, 20);
    let app = s.service("app", limit_mib * MIB, &["-rate", &rate]);
    // v1 offers nothing that works read-only; v2's memory.events is only read. (A first
    // line may come from the process's view before its container's mounts were set up.)
    let expected = if app.cgroup.v2 {
        "notified_by=\"memory.events\""
    } else {
        "notified_by=\"nothing, polling only"
    };
    let watching = s.memprof.wait_for_log(expected, Duration::from_secs(30));
    println!("read-only: {watching}");
    assert!(watching.contains("app\" limit="), "{watching}");
    let key = s.next_key(&app, &[]);
    println!("read-only: {key}");
    assert!(key.contains("_container-"), "{key}");
}

/// A directory on a disk-backed file system: a file's pages there are page cache the kernel can
/// write back and reclaim (tmpfs pages are not reclaimable without swap and would rightly
/// count). The target directory where it is writable; in the VM, whose host files are
/// read-only and whose /tmp is tmpfs, an ext4 image on a loop device, its tmpfs pages written
/// in full beforehand so that the container's writes charge no new ones.
struct DiskBacked {
    dir: std::path::PathBuf,
    mounted: bool,
}

impl DiskBacked {
    fn new() -> Self {
        let target = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if std::fs::write(target.join("pod-cache.probe"), b"").is_ok() {
            return Self {
                dir: target,
                mounted: false,
            };
        }
        let img = std::env::temp_dir().join("memprof-cache.img");
        let dir = std::env::temp_dir().join("memprof-cache-fs");
        std::fs::create_dir_all(&dir).unwrap();
        let run = |cmd: &str| {
            let st = std::process::Command::new("sh").args(["-c", cmd]).status();
            assert!(st.is_ok_and(|s| s.success()), "{cmd} failed");
        };
        run("modprobe loop 2>/dev/null; modprobe ext4 2>/dev/null; true");
        run(&format!(
            "dd if=/dev/zero of={} bs=1M count=600 status=none",
            img.display()
        ));
        run(&format!("mkfs.ext4 -q -F {}", img.display()));
        run(&format!(
            "mount -o loop {} {}",
            img.display(),
            dir.display()
        ));
        Self { dir, mounted: true }
    }
}

impl Drop for DiskBacked {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(&self.dir).status();
            let _ = std::fs::remove_file(std::env::temp_dir().join("memprof-cache.img"));
        }
    }
}
