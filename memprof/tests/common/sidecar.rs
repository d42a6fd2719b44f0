//! memprof as a sidecar in a pod (see `pod`): its own container with a 128 MiB limit, the
//! Go service in others, a real S3 server on the host's end of the pod's link; and the checks
//! the pod tests share.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{
    bpffs::Bpffs,
    go_service, have, is_root,
    pod::{Container, Pod, Spec},
    require, MemCgroup, S3Client, S3Server, START,
};

pub const MIB: u64 = 1 << 20;

pub fn prerequisites() -> Option<PathBuf> {
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

pub struct Sidecar {
    pub container: Container,
    pub log: PathBuf,
}

impl Sidecar {
    pub fn start(pod: &Pod, s3: &S3Server, extra: &[(&str, &str)]) -> Self {
        Self::start_via(pod, s3, extra, &[], &["--detector", "btf"])
    }

    /// As `start`, memprof run by `wrapper` (e.g. `setpriv` with a capability set) with `args`.
    pub fn start_via(
        pod: &Pod,
        s3: &S3Server,
        extra: &[(&str, &str)],
        wrapper: &[&str],
        args: &[&str],
    ) -> Self {
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
        let mut cmd = wrapper.to_vec();
        cmd.push(env!("CARGO_BIN_EXE_memprof"));
        cmd.extend_from_slice(args);
        cmd.extend_from_slice(&["--spool-dir", &spool, "--local-dir", &local]);
        let spec = Spec {
            name: "memprof",
            limit: 128 * MIB,
            cmd: &cmd,
            env: &env,
            out: &log,
        };
        let container = pod.container(&spec, None);
        let s = Sidecar { container, log };
        s.wait_for_log("memprof started", START);
        s
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line_matching(needle, timeout, |l| l.contains(needle))
    }

    /// The first line of memprof's log that `matches`; on a timeout the whole log is shown.
    pub fn wait_for_line_matching(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        super::wait_for_line(what, timeout, || self.output(), matches)
    }

    /// memprof's "profile stored" line for `key` (written just after the object is stored,
    /// so it may trail the object in the bucket by a moment).
    pub fn stored_line(&self, key: &str) -> String {
        let line = self.wait_for_log(&format!("key=\"{key}\""), Duration::from_secs(10));
        assert!(line.contains("profile stored"), "{line}");
        line
    }

    /// SIGTERM, then memprof's exit code (through `nsenter`, which passes it on).
    pub fn stop(mut self) -> Option<i32> {
        self.container.signal(libc::SIGTERM);
        self.container.child.wait().unwrap().code()
    }
}

pub fn service(pod: &Pod, name: &str, limit: u64, args: &[&str], pid: Option<u32>) -> Container {
    let go = go_service().expect("the Go test service");
    program(pod, &go, name, limit, args, pid)
}

/// `bin` as a container of `pod`.
pub fn program(
    pod: &Pod,
    bin: &std::path::Path,
    name: &str,
    limit: u64,
    args: &[&str],
    pid: Option<u32>,
) -> Container {
    let go = bin.display().to_string();
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

/// A pod with a memprof sidecar (`env` added to its environment), an S3 server on the
/// host's end of the pod's link, and a bpffs of its own where the sidecar pins its kernel
/// programs' maps (as on a node; no other test's, nor the host's, meets them). Fields drop in
/// order: the sidecar before its pod, the bpffs last.
pub struct Setup {
    pub memprof: Sidecar,
    pub client: S3Client,
    /// Serves `client` for as long as the pod lives.
    _s3: S3Server,
    pub pod: Pod,
    _bpffs: Bpffs,
}

pub fn setup(name: &str, index: u8, env: &[(&str, &str)]) -> Option<Setup> {
    setup_pod(name, index, env, false)
}

/// As `setup`; with `read_only_cgroups`, every container sees its cgroup read-only.
pub fn setup_pod(
    name: &str,
    index: u8,
    env: &[(&str, &str)],
    read_only_cgroups: bool,
) -> Option<Setup> {
    setup_via(name, index, env, read_only_cgroups, &[])
}

/// As `setup_pod`, memprof run by `wrapper` (e.g. `setpriv` with a capability set).
pub fn setup_via(
    name: &str,
    index: u8,
    env: &[(&str, &str)],
    read_only_cgroups: bool,
    wrapper: &[&str],
) -> Option<Setup> {
    prerequisites()?;
    // Before the pod: its mount namespace is a copy of the host's.
    let bpffs = Bpffs::mount();
    let mut pod = Pod::new(name, index);
    pod.read_only_cgroups = read_only_cgroups;
    let s3 = S3Server::start_on("profiles", &pod.host_addr());
    let bpffs_path = bpffs.path();
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "MEMPROF_BPFFS") {
        env.push(("MEMPROF_BPFFS", &bpffs_path));
    }
    Some(Setup {
        memprof: Sidecar::start_via(&pod, &s3, &env, wrapper, &["--detector", "btf"]),
        client: s3.client(),
        _s3: s3,
        pod,
        _bpffs: bpffs,
    })
}

impl Setup {
    /// Starts the Go service in its own container of the pod.
    pub fn service(&self, name: &str, limit: u64, args: &[&str]) -> Container {
        service(&self.pod, name, limit, args, None)
    }

    pub fn program(
        &self,
        bin: &std::path::Path,
        name: &str,
        limit: u64,
        args: &[&str],
    ) -> Container {
        program(&self.pod, bin, name, limit, args, None)
    }

    /// The key of the snapshot stored for `pid` (in the pod's PID namespace).
    pub fn snapshot_key(&self, pid: u32) -> String {
        let marker = format!("_pid-{pid}_");
        let mut found = None;
        super::wait_for(
            &format!("the snapshot of PID {pid}"),
            Duration::from_secs(60),
            || {
                found = self
                    .client
                    .keys()
                    .into_iter()
                    .find(|k| k.contains(&marker) && k.ends_with(".snapshot.txt"));
                found.is_some()
            },
        );
        found.unwrap()
    }

    /// The first profile of `service` not in `seen`, stored while it still runs.
    pub fn next_key(&self, service: &Container, seen: &[String]) -> String {
        wait_key(&self.client, service.pid, service, seen, &|| {
            self.memprof.output()
        })
    }
}

/// The first profile key of `pid` not in `seen`, stored while `service` still runs; `log` gives
/// memprof's output for the failure message.
pub fn wait_key(
    client: &S3Client,
    pid: u32,
    service: &Container,
    seen: &[String],
    log: &dyn Fn() -> String,
) -> String {
    let marker = format!("_pid-{pid}_");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        let alive = service.alive();
        if let Some(key) = client
            .keys()
            .into_iter()
            // Profiles only: a failed capture's snapshot is not what these tests wait for.
            .find(|k| k.contains(&marker) && !seen.contains(k) && !k.ends_with(".snapshot.txt"))
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
        log()
    );
}

pub fn percent_of(key: &str) -> u32 {
    key.rsplit('_')
        .find_map(|part| {
            let level = part.split('.').next()?;
            let level = level.strip_prefix("container-").unwrap_or(level);
            level.strip_suffix("pct")?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no percentage in {key}"))
}

/// `MEMPROF_E2E_LIMIT_MIB` / `MEMPROF_E2E_RATE_MIB_S` shrink the scenario on slow machines
/// (the emulated VM of `cargo xtask vm-test`; there `MEMPROF_E2E_PODS` shrinks the node of
/// `shared` and `MEMPROF_E2E_CONTAINER_PCT` lowers the container level, see `container_pct`).
pub fn scaled(limit_mib: u64, rate: u32) -> (u64, String) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let limit = var("MEMPROF_E2E_LIMIT_MIB").unwrap_or(limit_mib);
    let rate = var("MEMPROF_E2E_RATE_MIB_S").unwrap_or(rate as u64);
    (limit, rate.to_string())
}

/// The container level for a test: the default 90 %, or `MEMPROF_E2E_CONTAINER_PCT` where a
/// capture takes longer than the last 10 % of the limit lasts (under emulation).
pub fn container_pct() -> String {
    std::env::var("MEMPROF_E2E_CONTAINER_PCT").unwrap_or_else(|_| "90".into())
}
