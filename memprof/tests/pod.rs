//! memprof as a sidecar in a real pod layout (see `common::pod`): its own container with a
//! 128 MiB limit and a mount view showing only its own cgroup, the Go service in another
//! container, one PID and one network namespace for both, a real S3 server reached over the
//! pod's link. Covers the limit read from the service's own view, two pods at once, PID
//! reuse, a second crossing, and a full kernel map.
mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{
    pod::{Container, Pod, Spec},
    *,
};

const MIB: u64 = 1 << 20;

fn prerequisites() -> Option<PathBuf> {
    if !require(is_root(), "root (BPF, cgroups, namespaces)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
        || !require(
            have("ip") && have("nsenter") && have("unshare"),
            "iproute2 and util-linux",
        )
        || !S3Server::available()
    {
        return None;
    }
    go_service()
}

struct Sidecar {
    container: Container,
    log: PathBuf,
}

impl Sidecar {
    fn start(pod: &Pod, s3: &S3Server, extra: &[(&str, &str)]) -> Self {
        let dir = pod.work_dir();
        let log = dir.join("memprof.log");
        let mut env = s3.env();
        env.push(("POD_NAME", pod.name.clone()));
        env.push(("POD_NAMESPACE", "memprof-test".into()));
        env.push(("MEMORY_CRITICAL_PERCENTAGE", "80".into()));
        env.push(("RUST_LOG", "memprof=debug".into()));
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let spool = dir.join("spool").display().to_string();
        let local = dir.join("local").display().to_string();
        let cmd = [
            env!("CARGO_BIN_EXE_memprof"),
            "--detector",
            "btf",
            "--spool-dir",
            &spool,
            "--local-dir",
            &local,
        ];
        let spec = Spec {
            name: "memprof",
            limit: 128 * MIB,
            cmd: &cmd,
            env: &env,
            out: &log,
        };
        let container = pod.container(&spec, None);
        let s = Sidecar { container, log };
        s.wait_for_log("memprof started", Duration::from_secs(30));
        s
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let mut line = String::new();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(l) = self.output().lines().find(|l| l.contains(needle)) {
                line = l.to_string();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !line.is_empty(),
            "memprof never logged {needle:?}:\n{}",
            self.output()
        );
        line
    }

    /// SIGTERM, then memprof's exit code (through `nsenter`, which passes it on).
    fn stop(mut self) -> Option<i32> {
        self.container.signal(libc::SIGTERM);
        self.container.child.wait().unwrap().code()
    }
}

fn service(pod: &Pod, name: &str, limit: u64, args: &[&str], pid: Option<u32>) -> Container {
    let go = go_service_path().display().to_string();
    let mut cmd = vec![go.as_str()];
    cmd.extend_from_slice(args);
    let out = pod.work_dir().join(format!("{name}.out"));
    let spec = Spec {
        name,
        limit,
        cmd: &cmd,
        env: &[],
        out: &out,
    };
    pod.container(&spec, pid)
}

/// A pod with a memprof sidecar (`env` added to its environment) and an S3 server on the
/// host's end of the pod's link. Fields drop in order: the sidecar before its pod. Bind
/// every field (`_s3` too): a field left to `..` is dropped at once.
struct Setup {
    memprof: Sidecar,
    client: S3Client,
    _s3: S3Server,
    pod: Pod,
}

fn setup(name: &str, index: u8, env: &[(&str, &str)]) -> Option<Setup> {
    prerequisites()?;
    let pod = Pod::new(name, index);
    let s3 = S3Server::start_on("profiles", &pod.host_addr());
    Some(Setup {
        memprof: Sidecar::start(&pod, &s3, env),
        client: s3.client(),
        _s3: s3,
        pod,
    })
}

/// The first key naming `pid` that is not in `seen`, found while `service` still runs.
fn wait_key(
    client: &S3Client,
    pid: u32,
    service: &Container,
    seen: &[String],
    log: &Sidecar,
) -> String {
    let marker = format!("_pid-{pid}_");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        let alive = service.alive();
        if let Some(key) = client
            .keys()
            .into_iter()
            .find(|k| k.contains(&marker) && !seen.contains(k))
        {
            assert!(
                alive,
                "profile {key} arrived only after the service was gone"
            );
            return key;
        }
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!(
        "no new profile for pid {pid} while the service lived; memprof said:\n{}",
        log.output()
    );
}

fn stored_line(log: &str, key: &str) -> String {
    log.lines()
        .find(|l| l.contains("profile stored") && l.contains(key))
        .unwrap_or_else(|| panic!("no 'profile stored' line for {key}:\n{log}"))
        .to_string()
}

fn percent_of(key: &str) -> u32 {
    key.rsplit('_')
        .find_map(|part| part.split('.').next()?.strip_suffix("pct")?.parse().ok())
        .unwrap_or_else(|| panic!("no percentage in {key}"))
}

/// `MEMPROF_E2E_LIMIT_MIB` / `MEMPROF_E2E_RATE_MIB_S` shrink the scenario on slow machines
/// (the emulated VM of `cargo xtask vm-test`).
fn scaled(limit_mib: u64, rate: u32) -> (u64, String) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let limit = var("MEMPROF_E2E_LIMIT_MIB").unwrap_or(limit_mib);
    let rate = var("MEMPROF_E2E_RATE_MIB_S").unwrap_or(rate as u64);
    (limit, rate.to_string())
}

#[test]
fn sidecar_in_a_pod_profiles_against_the_service_limit() {
    let (limit_mib, rate) = scaled(512, 200);
    let Some(Setup {
        memprof,
        client,
        pod,
        _s3,
    }) = setup("limit", 1, &[])
    else {
        return;
    };
    let app = service(&pod, "app", limit_mib * MIB, &["-rate", &rate], None);
    let started = Instant::now();

    let key = wait_key(&client, app.pid, &app, &[], &memprof);
    let stored_after = started.elapsed();
    wait_for(
        "the OOM killer to take the service",
        Duration::from_secs(120),
        || !app.alive(),
    );
    assert!(
        app.cgroup.oom_kills() >= 1,
        "the service was not killed by the OOM killer"
    );
    println!(
        "pod ({}): profile stored {stored_after:?} after start, OOM kill {:?} after start",
        if app.cgroup.v2 {
            "cgroup v2"
        } else {
            "cgroup v1"
        },
        started.elapsed()
    );

    let pct = percent_of(&key);
    assert!(
        (80..100).contains(&pct),
        "percentage {pct} in {key} is not the service's"
    );
    let log = memprof.output();
    let line = stored_line(&log, &key);
    println!("pod: {line}");
    assert!(
        line.contains(&format!("limit={}", limit_mib * MIB))
            && line.contains("limit_source=Cgroup"),
        "memprof measured against another limit than the service's {limit_mib} MiB: {line}"
    );
    let top = pprof_top(&client.get(&key));
    assert!(
        top.contains("main.leakyRetain"),
        "the profile does not name the leak:\n{top}"
    );
    memprof.wait_for_log(
        &format!("OOM killer chose process pid={}", app.pid),
        Duration::from_secs(10),
    );
    assert_eq!(memprof.stop(), Some(0), "memprof should exit 0 on SIGTERM");
}

#[test]
fn two_sidecars_capture_only_their_own_pods() {
    if prerequisites().is_none() {
        return;
    }
    let (pod_a, pod_b) = (Pod::new("tenant-a", 2), Pod::new("tenant-b", 3));
    let (s3_a, s3_b) = (
        S3Server::start_on("profiles", &pod_a.host_addr()),
        S3Server::start_on("profiles", &pod_b.host_addr()),
    );
    let memprof_a = Sidecar::start(&pod_a, &s3_a, &[]);
    let memprof_b = Sidecar::start(&pod_b, &s3_b, &[]);
    // Distinct PIDs, so that a profile in the wrong bucket would show.
    let app_a = service(&pod_a, "app", 512 * MIB, &["-rate", "200"], Some(50));
    let app_b = service(
        &pod_b,
        "app",
        512 * MIB,
        &["-rate", "200", "-delay", "5s"],
        Some(60),
    );

    let key_a = wait_key(&s3_a.client(), 50, &app_a, &[], &memprof_a);
    assert!(
        s3_b.client().keys().is_empty(),
        "pod b's bucket got a profile before its service leaked"
    );
    let log_a = memprof_a.output();
    assert_eq!(
        memprof_a.stop(),
        Some(0),
        "memprof a should exit 0 on SIGTERM"
    );

    // With the first sidecar gone, the second still works.
    let key_b = wait_key(&s3_b.client(), 60, &app_b, &[], &memprof_b);
    wait_for("both services' OOM kills", Duration::from_secs(120), || {
        !app_a.alive() && !app_b.alive()
    });
    memprof_b.wait_for_log(
        &format!("host_pid={}", app_b.host_pid),
        Duration::from_secs(10),
    );
    let log_b = memprof_b.output();

    for (keys, pod, pid) in [
        (s3_a.client().keys(), "tenant-a", 50),
        (s3_b.client().keys(), "tenant-b", 60),
    ] {
        assert!(!keys.is_empty());
        for key in keys {
            assert!(
                key.contains(&format!("/{pod}/")) && key.contains(&format!("_pid-{pid}_")),
                "{key} in {pod}'s bucket"
            );
        }
    }
    println!("tenants: {key_a} / {key_b}");
    // Neither sidecar hears of the other pod's processes, OOM kills included.
    assert!(
        !log_b.contains(&format!("host_pid={}", app_a.host_pid)),
        "memprof b logged pod a's service:\n{log_b}"
    );
    assert!(
        !log_a.contains(&format!("host_pid={}", app_b.host_pid)),
        "memprof a logged pod b's service:\n{log_a}"
    );
}

#[test]
fn a_reused_pid_starts_afresh() {
    // Only the kernel path may find the second process (the safety net is out of reach), and
    // the default 300 s cooldown would hold a profile if the old process's state carried over.
    let Some(Setup {
        memprof,
        client,
        pod,
        _s3,
    }) = setup("reuse", 4, &[("MEMPROF_SAFETY_NET_MS", "600000")])
    else {
        return;
    };
    let first = service(&pod, "first", 256 * MIB, &["-rate", "100"], Some(40));
    let key1 = wait_key(&client, 40, &first, &[], &memprof);
    drop(first);
    let second = service(&pod, "second", 256 * MIB, &["-rate", "100"], Some(40));
    let key2 = wait_key(&client, 40, &second, std::slice::from_ref(&key1), &memprof);
    let line = stored_line(&memprof.output(), &key2);
    assert!(
        line.contains("detector=\"ebpf\"") || line.contains("detector=ebpf"),
        "{line}"
    );
    println!("reuse: {key1} then {key2}");
}

#[test]
fn a_second_crossing_gives_a_second_profile() {
    let Some(Setup {
        memprof,
        client,
        pod,
        _s3,
    }) = setup(
        "again",
        5,
        &[
            ("MEMORY_CRITICAL_PERCENTAGE", "50"),
            ("MEMPROF_COOLDOWN_SECS", "0"),
            ("MEMPROF_SAFETY_NET_MS", "200"),
        ],
    )
    else {
        return;
    };
    // Rises to 320 MiB (crossing 256 MiB), frees everything, rises again.
    let app = service(
        &pod,
        "app",
        512 * MIB,
        &["-rate", "100", "-free-at", "320"],
        None,
    );
    let key1 = wait_key(&client, app.pid, &app, &[], &memprof);
    let key2 = wait_key(
        &client,
        app.pid,
        &app,
        std::slice::from_ref(&key1),
        &memprof,
    );
    println!("again: {key1} then {key2}");
    for key in [key1, key2] {
        assert!((50..70).contains(&percent_of(&key)), "{key}");
    }
}

#[test]
fn a_full_kernel_map_leaves_processes_to_the_safety_net() {
    let Some(Setup {
        memprof,
        client,
        pod,
        _s3,
    }) = setup(
        "full",
        6,
        &[("MEMPROF_MAX_PROCS", "1"), ("MEMPROF_SAFETY_NET_MS", "200")],
    )
    else {
        return;
    };
    // memprof itself or this idle service holds the one slot for as long as the test runs.
    let _filler = service(
        &pod,
        "filler",
        512 * MIB,
        &["-addr", "127.0.0.1:0", "-rate", "1"],
        None,
    );
    std::thread::sleep(Duration::from_millis(500));
    let app = service(&pod, "app", 512 * MIB, &["-rate", "100"], None);
    let key = wait_key(&client, app.pid, &app, &[], &memprof);
    let line = stored_line(&memprof.output(), &key);
    assert!(
        line.contains("detector=\"poll\"") || line.contains("detector=poll"),
        "{line}"
    );
    memprof.wait_for_log("process map is full", Duration::from_secs(20));
}

#[test]
fn a_failed_capture_is_retried_while_above() {
    let Some(Setup {
        memprof,
        client,
        pod,
        _s3,
    }) = setup("retry", 7, &[("MEMORY_CRITICAL_PERCENTAGE", "50")])
    else {
        return;
    };
    // The endpoint fails twice, as a service thrashing near its limit does; the leak leaves
    // ~5 s between the crossing and the kill.
    let app = service(
        &pod,
        "app",
        512 * MIB,
        &["-rate", "50", "-fail-heap", "2"],
        None,
    );
    let key = wait_key(&client, app.pid, &app, &[], &memprof);
    let log = memprof.output();
    let retries = log
        .lines()
        .filter(|l| l.contains("retrying the capture"))
        .count();
    assert_eq!(retries, 2, "two failures, two retries:\n{log}");
    let line = stored_line(&log, &key);
    assert!(
        line.contains("detector=\"retry\"") || line.contains("detector=retry"),
        "{line}"
    );
}

#[test]
fn a_resized_limit_is_noticed() {
    let Some(Setup {
        memprof,
        client,
        pod,
        _s3,
    }) = setup("resize", 8, &[("MEMPROF_SAFETY_NET_MS", "200")])
    else {
        return;
    };
    let app = service(&pod, "app", 1024 * MIB, &["-rate", "40"], None);
    // Armed at 80 % of 1 GiB; then the container is resized to 256 MiB (as an in-place pod
    // resize does) while it uses ~80 MiB. Without a re-read it would be killed unprofiled.
    // What README tells operators to check: the limit memprof announces for the service.
    let watching = memprof.wait_for_log(
        &format!("watching process pid={} comm=\"leaky\"", app.pid),
        Duration::from_secs(10),
    );
    assert!(
        watching.contains(&format!("limit={}", 1024 * MIB))
            && watching.contains("limit_source=Cgroup"),
        "{watching}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let file = if app.cgroup.v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    std::fs::write(app.cgroup.dir.join(file), (256 * MIB).to_string()).unwrap();
    let key = wait_key(&client, app.pid, &app, &[], &memprof);
    let line = stored_line(&memprof.output(), &key);
    assert!(line.contains(&format!("limit={}", 256 * MIB)), "{line}");
    assert!((80..100).contains(&percent_of(&key)), "{key}");
}
