//! The kernel detector on the real kernel: load and attach the BPF object, arm a level for a
//! growing process, and check the crossing event (PID, RSS) against procfs; a fork storm in
//! a PID namespace of its own takes only its share of the kernel's process map.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::*;
use memprof::{
    assess::Assessor,
    detect::{ring, Candidate, Source},
    kernel::{Arm, Hook, Kernel},
};

/// The kernel detector loaded and attached with `hook`, its events flowing into the receiver.
pub(crate) struct Loaded {
    pub rt: tokio::runtime::Runtime,
    pub arm: Arm,
    pub rx: tokio::sync::mpsc::Receiver<Candidate>,
}

pub(crate) fn load(hook: Hook, max_procs: u32) -> Option<Loaded> {
    if !require(is_root(), "root (CAP_BPF, CAP_PERFMON)")
        || !require(
            std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
            "kernel BTF",
        )
    {
        return None;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let kernel = Kernel::load(hook, max_procs, memprof_common::HEAP_RING_BYTES, None)
        .unwrap_or_else(|e| panic!("loading {hook}: {e:#}"));
    let arm = kernel.arm();
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    rt.spawn(ring::forward(kernel, tx, None));
    Some(Loaded { rt, arm, rx })
}

fn crossing_is_reported(hook: Hook) {
    let Some(Loaded { rt, arm, mut rx }) = load(hook, memprof_common::MAX_PROCS) else {
        return;
    };
    let Some(go) = go_service() else { return };

    let mut child = Command::new(go)
        .args(["-addr", "127.0.0.1:0", "-rate", "64", "-delay", "300ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    first_line(&mut child);
    let pid = child.id();
    let mut assessor = Assessor::new(None).unwrap();
    let start = assessor.read(pid).expect("child readable in procfs");
    let level = start.rss + (96 << 20);
    let event = crossing(&rt, &arm, &mut rx, pid, &start, level);
    let procfs_rss = assessor.read(pid).unwrap().rss;
    child.kill().unwrap();
    child.wait().unwrap();

    let Source::Kernel { rss, .. } = event.source else {
        unreachable!()
    };
    assert_eq!(event.ns_pid, pid, "PID as memprof's namespace sees it");
    assert!(rss >= level, "reported {rss} below the armed level {level}");
    let diff = (rss as f64 - procfs_rss as f64).abs() / procfs_rss as f64;
    println!(
        "{hook}: kernel rss {rss}, procfs rss {procfs_rss}, difference {:.2} %",
        diff * 100.0
    );
    assert!(
        diff < 0.05,
        "kernel RSS {rss} differs from procfs {procfs_rss} by {:.1} %",
        diff * 100.0
    );
}

/// Arms `pid` at its first sight by the kernel and waits for its crossing of `level`.
pub(crate) fn crossing(
    rt: &tokio::runtime::Runtime,
    arm: &Arm,
    rx: &mut tokio::sync::mpsc::Receiver<Candidate>,
    pid: u32,
    start: &memprof::assess::Reading,
    level: u64,
) -> Candidate {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            let mut armed = false;
            loop {
                let c = rx.recv().await.expect("ring buffer reader stopped");
                let Some(k) = c.kernel.filter(|k| k.host_pid == pid) else {
                    continue;
                };
                match c.source {
                    // First sight (fork, then the exec'd program): the identity to arm with.
                    // Arming with an identity the process no longer has (before exec) fails.
                    Source::Kernel { level: 0, .. } if !armed => {
                        assert_eq!(
                            k.start_ticks(),
                            Some(start.key.start),
                            "start time as /proc/PID/stat counts it"
                        );
                        armed = arm.set(&k, level, start.counters).is_ok();
                    }
                    Source::Kernel { level: l, .. } if l == level => return c,
                    _ => {}
                }
            }
        })
        .await
        .expect("no crossing event within 20 s")
    })
}

#[test]
fn btf_tracepoint_reports_crossing() {
    crossing_is_reported(Hook::Btf);
}

#[test]
fn classic_tracepoint_reports_crossing() {
    crossing_is_reported(Hook::Classic);
}

/// Arming never brings back a process that has exited: its entry is gone, and arming only
/// updates existing entries of the same identity.
#[test]
fn arming_an_exited_process_fails() {
    let Some(Loaded { rt, arm, mut rx }) = load(Hook::Btf, memprof_common::MAX_PROCS) else {
        return;
    };
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let seen = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let c = rx.recv().await.expect("ring buffer reader stopped");
                if let Some(k) = c.kernel.filter(|k| k.host_pid == pid) {
                    return k;
                }
            }
        })
        .await
        .expect("the kernel never reported the short-lived process")
    });
    for attempt in 1..=2 {
        let err = arm
            .set(&seen, 1 << 30, [0; 4])
            .expect_err("arming an exited process must fail");
        println!("attempt {attempt}: {err:#}");
    }
}
