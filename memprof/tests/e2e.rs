//! End to end on real parts: a Go service leaking into a memory cgroup until the OOM killer
//! takes it, memprof beside it, a real S3 server. The profile must be in the bucket while the
//! service is still alive, name the service's PID and percentage, and decode as a pprof heap
//! profile that names the leaking function.
use std::{
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::*;

struct Scenario {
    name: &'static str,
    detector: &'static str,
    limit_mib: u64,
    rate_mib_s: u32,
    /// Run memprof and the service in a fresh PID namespace, as a pod with
    /// `shareProcessNamespace` does.
    pid_namespace: bool,
}

/// The processes of a running scenario.
struct Running {
    /// What owns the service (the service itself, or the namespace's init).
    child: Child,
    /// The service's PID as memprof sees it, and as the host (and its cgroup) sees it.
    ns_pid: u32,
    host_pid: u32,
    log: std::path::PathBuf,
    memprof: Option<Memprof>,
    _dir: tempfile::TempDir,
}

fn prerequisites() -> Option<std::path::PathBuf> {
    if !require(is_root(), "root (BPF, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
        || !S3Server::available()
    {
        return None;
    }
    go_service()
}

fn launch(
    s: &Scenario,
    go: &std::path::Path,
    cg: &MemCgroup,
    env: Vec<(&'static str, String)>,
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let rate = s.rate_mib_s.to_string();
    if !s.pid_namespace {
        let memprof = Memprof::spawn(&["--detector", s.detector], &env);
        let procs = cg.procs_file();
        let mut child = Command::new(go);
        child.args(["-rate", &rate]).stdout(Stdio::piped());
        // SAFETY: only async-signal-safe work (a write) between fork and exec.
        unsafe {
            child.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
        }
        let mut child = child.spawn().unwrap();
        first_line(&mut child);
        let pid = child.id();
        return Running {
            child,
            ns_pid: pid,
            host_pid: pid,
            log: memprof.log.clone(),
            memprof: Some(memprof),
            _dir: dir,
        };
    }
    let log = dir.path().join("memprof.log");
    let go_out = dir.path().join("service.out");
    // Inside the namespace: start memprof, wait until it watches, then start the service in
    // the cgroup; when the service is gone, stop memprof cleanly.
    let script = r#"
        "$MEMPROF" --detector "$DETECTOR" --spool-dir "$WORK/spool" --local-dir "$WORK/local" --listen 127.0.0.1:0 >"$LOG" 2>&1 &
        mp=$!
        while ! grep -q 'memprof started' "$LOG"; do kill -0 $mp || exit 3; sleep 0.05; done
        sh -c 'echo $$ > "$PROCS"; exec "$GO" -rate "$RATE"' >"$GO_OUT" &
        wait $!
        kill -TERM $mp
        wait $mp
    "#;
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", script])
        .env("MEMPROF", env!("CARGO_BIN_EXE_memprof"))
        .env("DETECTOR", s.detector)
        .env("WORK", dir.path())
        .env("LOG", &log)
        .env("PROCS", cg.procs_file())
        .env("GO", go)
        .env("RATE", &rate)
        .env("GO_OUT", &go_out)
        .env("RUST_LOG", "memprof=debug")
        .envs(env)
        .spawn()
        .unwrap();
    let mut ns_pid = 0;
    wait_for(
        "the service to start in the namespace",
        Duration::from_secs(30),
        || {
            let out = std::fs::read_to_string(&go_out).unwrap_or_default();
            ns_pid = out
                .split_whitespace()
                .find_map(|w| w.strip_prefix("pid=")?.parse().ok())
                .unwrap_or(0);
            ns_pid != 0
        },
    );
    let host_pid = cg.pids().first().copied().expect("service in the cgroup");
    assert_ne!(
        ns_pid, host_pid,
        "the service should have its own PID inside the namespace"
    );
    Running {
        child,
        ns_pid,
        host_pid,
        log,
        memprof: None,
        _dir: dir,
    }
}

/// `MEMPROF_E2E_LIMIT_MIB` and `MEMPROF_E2E_RATE_MIB_S` shrink a scenario where the machine is
/// slow (the emulated VM of `cargo xtask vm-test`).
fn scaled(mut s: Scenario) -> Scenario {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    if let Some(limit) = var("MEMPROF_E2E_LIMIT_MIB") {
        s.limit_mib = limit;
    }
    if let Some(rate) = var("MEMPROF_E2E_RATE_MIB_S") {
        s.rate_mib_s = rate as u32;
    }
    s
}

fn run(s: Scenario) {
    let s = scaled(s);
    let Some(go) = prerequisites() else { return };
    let s3 = S3Server::start("profiles");
    let client = s3.client();
    let cg = MemCgroup::new(&format!("memprof-e2e-{}", s.name), s.limit_mib << 20);
    let mut env = s3.env();
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "80".into()));
    env.push(("WATCH_TIME", "100".into()));
    let mut r = launch(&s, &go, &cg, env);
    let started = Instant::now();

    // Look at the bucket, then at the service: a key seen while the service is still in its
    // cgroup was stored before the kill.
    let marker = format!("_pid-{}_", r.ns_pid);
    let mut stored_while_alive = None;
    while started.elapsed() < Duration::from_secs(120) {
        let keys = client.keys();
        let alive = cg.pids().contains(&r.host_pid);
        // Profiles only: a capture whose profile was not coming half a second after the
        // crossing (under emulation, say) also stores its evidence.
        let profile = |k: &String| k.contains(&marker) && !k.ends_with(".snapshot.txt");
        if let Some(key) = keys.into_iter().find(profile) {
            assert!(
                alive,
                "profile {key} arrived only after the service was gone"
            );
            stored_while_alive = Some((key, started.elapsed()));
            break;
        }
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (key, seen_after) = stored_while_alive.unwrap_or_else(|| {
        panic!(
            "no profile for pid {} in the bucket while the service lived; memprof said:\n{}",
            r.ns_pid,
            std::fs::read_to_string(&r.log).unwrap_or_default()
        )
    });

    wait_for(
        "the OOM killer to take the service",
        Duration::from_secs(120),
        || !cg.pids().contains(&r.host_pid),
    );
    let killed_after = started.elapsed();
    assert!(
        cg.oom_kills() >= 1,
        "the service was not killed by the OOM killer"
    );
    let status = r.child.wait().unwrap();
    if !s.pid_namespace {
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "service should die by SIGKILL, got {status:?}"
        );
    }
    println!("{}: profile in the bucket {seen_after:?} after start, OOM kill seen {killed_after:?} after start", s.name);

    let pct: u32 = key
        .rsplit('_')
        .find_map(|part| part.split('.').next()?.strip_suffix("pct")?.parse().ok())
        .unwrap_or_else(|| panic!("no percentage in {key}"));
    assert!(
        pct >= 80,
        "percentage {pct} in {key} is below the threshold"
    );
    let top = pprof_top(&client.get(&key));
    assert!(
        top.contains("main.leakyRetain"),
        "the heap profile does not name the leaking function:\n{top}"
    );

    let log = match r.memprof.take() {
        Some(m) => {
            let (code, out) = m.stop();
            assert_eq!(code, Some(0), "memprof should exit 0 on SIGTERM:\n{out}");
            out
        }
        None => std::fs::read_to_string(&r.log).unwrap(),
    };
    let stored = log
        .lines()
        .find(|l| l.contains("profile stored") && l.contains(&format!("pid={}", r.ns_pid)));
    let stored =
        stored.unwrap_or_else(|| panic!("no 'profile stored' line for pid {}:\n{log}", r.ns_pid));
    println!("{}: {stored}", s.name);
    if s.detector != "poll" {
        assert!(
            log.lines().any(|l| l.contains("OOM killer chose process")
                && l.contains(&format!("pid={}", r.ns_pid))),
            "memprof did not see the OOM kill of pid {}:\n{log}",
            r.ns_pid
        );
    }
}

#[test]
fn ebpf_profile_beats_the_oom_killer() {
    run(Scenario {
        name: "ebpf",
        detector: "btf",
        limit_mib: 512,
        rate_mib_s: 200,
        pid_namespace: false,
    });
}

#[test]
fn ebpf_profile_beats_the_oom_killer_in_a_pid_namespace() {
    run(Scenario {
        name: "ebpf-pidns",
        detector: "btf",
        limit_mib: 512,
        rate_mib_s: 200,
        pid_namespace: true,
    });
}

#[test]
fn classic_tracepoint_profile_beats_the_oom_killer() {
    run(Scenario {
        name: "classic",
        detector: "classic",
        limit_mib: 512,
        rate_mib_s: 200,
        pid_namespace: false,
    });
}

#[test]
fn poll_fallback_profile_beats_the_oom_killer() {
    run(Scenario {
        name: "poll",
        detector: "poll",
        limit_mib: 256,
        rate_mib_s: 20,
        pid_namespace: false,
    });
}
