//! Real parts for the integration tests: a memory cgroup, the Go test service, an S3 server
//! (s3s-fs) with SigV4 keys, and memprof itself as a child process.
//!
//! Under `CI=true` a missing prerequisite fails the test; elsewhere the test is skipped with a
//! message saying what is missing and how to get it (`cargo xtask setup`).

pub mod bpffs;
pub mod browser;
mod cgroup;
pub mod go;
pub mod honest;
pub mod outage;
pub mod pod;
mod pprof;
pub mod proxy;
mod s3;
pub mod sidecar;
pub mod webhook;

pub use pprof::{
    http_get, pprof_build_id, pprof_diff, pprof_inuse, pprof_top, pprof_top_line, pprof_traces,
    wait_for_heap_samples,
};

pub use cgroup::MemCgroup;
pub use honest::honest_service_profiled_by;
pub use s3::{S3Client, S3Server, ACCESS_KEY, REGION, SECRET_KEY};

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when `ok`; otherwise panics in CI and returns false (skip) elsewhere.
pub fn require(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(!in_ci(), "prerequisite missing in CI: {what}");
        eprintln!(
            "SKIPPED: {what} (run `cargo xtask setup` as root, or set CI=true to make this fail)"
        );
    }
    ok
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Go test service (testapps/leaky), built with the system's Go.
pub fn go_service() -> Option<PathBuf> {
    go::build("leaky", go::Toolchain::System)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The first line of `output()` (a log read afresh each time) that `matches`; on a timeout
/// the whole log is shown.
pub fn wait_for_line(
    what: &str,
    timeout: Duration,
    output: impl Fn() -> String,
    matches: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let out = output();
        if let Some(line) = out.lines().find(|l| matches(l)) {
            return line.to_string();
        }
        assert!(
            start.elapsed() < timeout,
            "memprof never logged {what:?}; output:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file below `dir` whose name holds `marker` and ends with `suffix`.
pub fn find_file(dir: &Path, marker: &str, suffix: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.contains(marker) && name.ends_with(suffix) {
                return Some(p);
            }
        }
    }
    None
}

/// The capabilities the memprof container of manifest `path` (below `deploy/`) adds, as
/// `setpriv` spells them (`+bpf`, `+perfmon`, …).
pub fn manifest_capabilities(path: &str) -> Vec<String> {
    let yaml = std::fs::read_to_string(workspace_root().join("deploy").join(path)).expect(path);
    let list = yaml
        .lines()
        .skip_while(|l| l.trim() != "capabilities:")
        .find_map(|l| l.trim().strip_prefix("add: [")?.strip_suffix(']'))
        .unwrap_or_else(|| panic!("a capabilities list in {path}"));
    list.split(',')
        .map(|c| format!("+{}", c.trim().to_lowercase()))
        .collect()
}

/// `setpriv` running a program with only `caps` (bounding and inheritable sets) and
/// no_new_privs, as a pod's securityContext does.
pub fn with_capabilities(caps: &[String]) -> Vec<String> {
    [
        "setpriv".to_string(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
        "--".into(),
    ]
    .to_vec()
}

/// memprof's spool and local destination below `dir` (`spool/`, `profiles/`), and its
/// metrics server on a free port of loopback.
pub fn dir_args(dir: &Path) -> [String; 6] {
    let sub = |name: &str| dir.join(name).display().to_string();
    [
        "--spool-dir".into(),
        sub("spool"),
        "--local-dir".into(),
        sub("profiles"),
        // Any free port: tests run several daemons in the host's network namespace.
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]
}

/// A kernel setting (`/proc/sys/…`) changed for a test and put back as it was when dropped,
/// the test failing or not.
pub struct Sysctl {
    path: PathBuf,
    was: String,
}

impl Sysctl {
    /// The setting at `path` (below /proc/sys), now.
    pub fn read(path: &str) -> String {
        let path = Path::new("/proc/sys").join(path);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    pub fn set(path: &str, value: &str) -> Self {
        let was = Self::read(path);
        let path = Path::new("/proc/sys").join(path);
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Sysctl { path, was }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.was);
    }
}

/// How long memprof may take to start: a few hundred ms here, many seconds in the VM stage's
/// emulated guest while the host's tests run beside it.
pub const START: Duration = Duration::from_secs(60);

/// The memprof binary under test, run by `wrapper` (e.g. `setpriv` with a capability set)
/// when there is one.
pub fn memprof_command(wrapper: &[&str]) -> Command {
    let bin = env!("CARGO_BIN_EXE_memprof");
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// memprof as a child process, its output collected in a file.
pub struct Memprof {
    pub child: Child,
    pub log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Memprof {
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        Self::spawn_via(&[], args, env)
    }

    /// memprof started by `wrapper` (e.g. `setpriv` with a capability set).
    pub fn spawn_via(wrapper: &[&str], args: &[&str], env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Self::spawn_at(dir.path(), wrapper, args, env);
        m._dir = Some(dir);
        m
    }

    /// memprof with its spool, destination and log below `dir`, which may outlive it (a
    /// restart finds the same spool); each start has a log of its own.
    pub fn spawn_at(dir: &Path, wrapper: &[&str], args: &[&str], env: &[(&str, String)]) -> Self {
        let m = Self::launch_at(dir, wrapper, args, env);
        m.wait_for_log("memprof started", START);
        m
    }

    /// As `spawn_at`, without waiting for memprof to start.
    pub fn launch_at(dir: &Path, wrapper: &[&str], args: &[&str], env: &[(&str, String)]) -> Self {
        let log = (0..)
            .map(|i| dir.join(format!("memprof.{i}.log")))
            .find(|p| !p.exists())
            .unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = memprof_command(wrapper)
            .args(dir_args(dir))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "memprof=debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting memprof");
        Memprof {
            child,
            log,
            _dir: None,
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line(needle, timeout, |l| l.contains(needle))
    }

    /// The first line of memprof's log that `matches`; on a timeout the whole log is shown.
    pub fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        wait_for_line(what, timeout, || self.output(), matches)
    }

    /// Stops memprof with SIGTERM and returns its exit code and output.
    pub fn stop(mut self) -> (Option<i32>, String) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        (status.code(), self.output())
    }
}

impl Drop for Memprof {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the first line of a child's stdout (the Go service prints `ready pid=N addr=…`).
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}
