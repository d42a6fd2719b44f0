//! What every hostile case checks beside its tenant: an honest Go service still profiled while
//! it lives and then OOM-killed, and memprof alive with no OOM kill in its container.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use super::{
    find_file, free_port, go_service,
    sidecar::{scaled, Setup, MIB},
    wait_for, MemCgroup, Memprof,
};

impl Setup {
    /// An honest Go service in a container of its own, profiled while it lives and then
    /// OOM-killed, as every hostile case requires beside its tenant: its profile's key.
    pub fn honest_service_profiled(&self) -> String {
        let (limit, rate) = scaled(256, 50);
        let honest = self.service("honest", limit * MIB, &["-rate", &rate]);
        let key = self.next_key(&honest, &[]);
        honest.wait_oom_kill();
        key
    }

    /// Asserts that memprof is alive with no OOM kill in its container, and prints its peak
    /// charge under `case`; its log.
    pub fn memprof_survived(&self, case: &str) -> String {
        let log = self.memprof.output();
        assert!(self.memprof.container.alive(), "memprof died:\n{log}");
        assert_eq!(self.memprof.container.cgroup.oom_kills(), 0, "{log}");
        println!(
            "{case}: memprof's container peaked at {} MiB",
            peak(&self.memprof.container.cgroup.dir) >> 20
        );
        log
    }

    /// Snapshots stored so far.
    pub fn snapshots(&self) -> usize {
        self.client
            .keys()
            .iter()
            .filter(|k| k.ends_with(".snapshot.txt"))
            .count()
    }
}

/// As `Setup::honest_service_profiled`, beside a node-wide `memprof` storing into `dir`, the
/// service in memory cgroup `cgroup`.
pub fn honest_service_profiled_by(memprof: &Memprof, dir: &Path, cgroup: &str) {
    let leaky = go_service().expect("the Go test service");
    let cg = MemCgroup::new(cgroup, 256 << 20);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut honest = cg.start(&leaky, &["-addr", &addr, "-rate", "50"]);
    let pid = honest.id();
    let profiles = dir.join("profiles");
    let mut stored_alive = false;
    let start = Instant::now();
    while cg.pids().contains(&pid) && start.elapsed() < Duration::from_secs(60) {
        if find_file(&profiles, &format!("_pid-{pid}_"), ".heap.pb.gz").is_some() {
            stored_alive = cg.pids().contains(&pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        stored_alive,
        "no heap profile of the honest service while it lived:\n{}",
        memprof.output()
    );
    wait_for(
        "the honest service's OOM kill",
        Duration::from_secs(60),
        || !cg.pids().contains(&pid),
    );
    assert!(cg.oom_kills() >= 1);
    let _ = honest.wait();
}

/// The memory cgroup's peak charge (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
pub fn peak(dir: &std::path::Path) -> u64 {
    ["memory.max_usage_in_bytes", "memory.peak"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}
