//! A tenant with 100,000 listening TCP sockets, in a real pod with a memprof sidecar: they sit
//! in the pod's network namespace, the one the honest service's pprof port is in, so every
//! listing of that namespace's listeners (the tenant's discovery, and the honest service's)
//! meets all of them. No process may hold more descriptors than its hard limit, so the tenant
//! is a few processes of as many listeners as they may each hold; the first then holds more
//! than half its container's limit in memory and crosses its level. Its crossing yields one
//! clear line and a snapshot, not a stall; the honest service's endpoint is still found among
//! the tenant's listeners and its profile taken from it before its OOM kill; memprof stays
//! alive within its 128 MiB.
use std::time::Duration;

use crate::common::{pod::Spec, sidecar::*, wait_for};

const SOCKETS: &str = "100000";

/// Listeners to make, MiB to hold. Children fork off first, each listening on as many ports
/// as its descriptor limit allows; the first process takes the rest, fills its memory and
/// says so. Addresses 127.0.0.2 and up (the pod's own services listen on 127.0.0.1), ports
/// below the ephemeral range (outgoing connections in the namespace keep their ports), never
/// 6060: memprof would take a listener on `PPROF_PORT` for an endpoint without a probe, and an
/// endpoint that never answers is the case of `endpoints`, not this one; nor 9400, where the
/// sidecar's metrics server listens on every address of the pod.
const SOCKETS_PY: &str = r#"
import os, resource, socket, sys, time
total, mib = int(sys.argv[1]), int(sys.argv[2])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
per = min(hard - 64, total)
PORTS = [p for p in range(2000, 32000) if p not in (6060, 9400)]

def listen(first, count):
    held = []
    for i in range(first, first + count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.%d" % (2 + i // len(PORTS)), PORTS[i % len(PORTS)]))
        s.listen(1)
        held.append(s)
    return held

done = 0
while total - done > per:
    r, w = os.pipe()
    if os.fork() == 0:
        held = listen(done, per)
        os.write(w, b"x")
        while True:
            time.sleep(3600)
    os.read(r, 1)
    done += per
held = listen(done, total - done)
n = mib << 20
blob = bytearray(n)
blob[::4096] = b"x" * (n // 4096)
print("ready pid=%d listeners=%d" % (os.getpid(), total), flush=True)
while True:
    time.sleep(3600)
"#;

#[test]
fn a_hundred_thousand_listeners_cost_one_bounded_discovery() {
    let Some(s) = setup(
        "hostile-sockets",
        66,
        &[
            // The tenant's sockets are charged to its container, not to its RSS: at half its
            // limit it leaves room for them.
            ("MEMORY_CRITICAL_PERCENTAGE", "50"),
            ("MEMPROF_MAX_CAPTURES_PER_MINUTE", "1000"),
        ],
    ) else {
        return;
    };
    let out = s.pod.work_dir().join("sockets.out");
    // 100,000 listeners take ~400 MiB of kernel memory, charged to the container.
    let tenant = s.pod.container(
        &Spec {
            name: "sockets",
            limit: 1280 * MIB,
            cmd: &["/usr/bin/python3", "-c", SOCKETS_PY, SOCKETS, "700"],
            env: &[],
            out: &out,
        },
        None,
    );
    let said = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_for("the tenant's listeners", Duration::from_secs(60), || {
        assert!(tenant.alive(), "the tenant died: {}", said());
        said().starts_with("ready ")
    });
    let listeners = count_listeners(tenant.host_pid);
    println!("sockets: {listeners} listeners in the pod's network namespace");
    assert!(listeners >= 100_000, "{listeners}");

    // The tenant's crossing: one line saying nothing could be taken, and a snapshot.
    let pid = tenant.pid;
    let of_tenant =
        |what: &'static str| move |l: &str| l.contains(what) && l.contains(&format!("pid={pid} "));
    let nothing = s.memprof.wait_for_line_matching(
        "the tenant's crossing",
        Duration::from_secs(60),
        of_tenant("nothing captured"),
    );
    println!("{nothing}");
    let snapshot = s.snapshot_key(pid);
    let text = String::from_utf8_lossy(&s.client.get(&snapshot)).into_owned();
    assert!(text.contains("Name:\tpython3"), "{text}");
    // Its discovery listed its ~20,000 descriptors and the namespace's 100,000 listeners.
    let listed = s.memprof.wait_for_line_matching(
        "the tenant's discovery",
        Duration::from_secs(60),
        of_tenant("not probing the ports"),
    );
    println!(
        "sockets: the tenant's discovery: {}",
        field(&listed, "took_ms")
    );
    assert!(
        listed.len() < 1024,
        "a line of {} bytes: {listed}",
        listed.len()
    );

    // The honest service's endpoint is found among the tenant's listeners, and its profile
    // taken from there before its OOM kill.
    let (limit, rate) = scaled(256, 50);
    let honest = s.service("honest", limit * MIB, &["-rate", &rate]);
    let found = s.memprof.wait_for_line_matching(
        "the honest service's endpoint",
        Duration::from_secs(60),
        |l| l.contains("pprof endpoint found") && l.contains(&format!("pid={} ", honest.pid)),
    );
    println!(
        "sockets: the honest service's discovery: {}",
        field(&found, "took_ms")
    );
    let key = s.next_key(&honest, &[]);
    let stored = s.memprof.stored_line(&key);
    assert!(stored.contains("source=\"endpoint\""), "{stored}");
    honest.wait_oom_kill();

    let log = s.memprof_survived("sockets");
    // One snapshot for one crossing, whatever the tenant's processes did meanwhile.
    assert_eq!(s.snapshots(), 1, "{log}");
    // The container's peak counts kernel memory (and reclaimable caches) beside memprof's RSS.
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.memprof.container.host_pid));
    let hwm = status.unwrap_or_default();
    let hwm = hwm
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?");
    println!(
        "sockets: memprof's {hwm}, its log is {} KiB",
        log.len() >> 10
    );
    drop(tenant);
}

/// Listening TCP sockets in the network namespace of `pid` (as `ss` counts them).
fn count_listeners(pid: u32) -> usize {
    let out = std::process::Command::new("nsenter")
        .args(["--net", "--target", &pid.to_string(), "ss", "-Hltn"])
        .output()
        .expect("running ss");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The value of `name=` in a log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let at = format!(" {name}=");
    line.split_once(&at)
        .and_then(|(_, v)| v.split(' ').next())
        .unwrap_or("?")
}
