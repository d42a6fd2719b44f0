//! Real parts for the integration tests: a memory cgroup, the Go test service, an S3 server
//! (s3s-fs) with SigV4 keys, and memprof itself as a child process.
//!
//! Under `CI=true` a missing prerequisite fails the test; elsewhere the test is skipped with a
//! message saying what is missing and how to get it (`cargo xtask setup`).
#![allow(dead_code)] // each test binary uses a different part of this module

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
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

fn target_dir() -> PathBuf {
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

/// Where the Go test service is built (`cargo xtask vm-test` builds it there before boot,
/// because the VM sees the host's files read-only).
pub fn go_service_path() -> PathBuf {
    target_dir().join("testapps").join("leaky")
}

/// Builds the Go test service (testapps/leaky) with the system's Go, unless the binary is
/// newer than its source.
pub fn go_service() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = go_service_path();
        let src = workspace_root().join("testapps/leaky");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let fresh = ["main.go", "go.mod"]
            .iter()
            .all(|f| modified(&src.join(f)) <= modified(&out));
        if fresh {
            return Some(out);
        }
        if !require(have("go"), "Go toolchain (golang-go)") {
            return None;
        }
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .status()
            .expect("running go build");
        assert!(status.success(), "go build of testapps/leaky failed");
        Some(out)
    })
    .clone()
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

/// A fresh memory cgroup with a limit; v1 where the memory controller is mounted there,
/// otherwise v2. Removed (after killing what is left in it) on drop.
pub struct MemCgroup {
    pub dir: PathBuf,
    pub v2: bool,
}

impl MemCgroup {
    pub fn available() -> bool {
        Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
            || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.contains("memory"))
    }

    pub fn new(name: &str, limit: u64) -> Self {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(name), false)
        } else {
            let root = Path::new("/sys/fs/cgroup");
            std::fs::write(root.join("cgroup.subtree_control"), "+memory")
                .expect("enabling the memory controller");
            (root.join(name), true)
        };
        let cg = MemCgroup { dir, v2 };
        cg.kill_all();
        let _ = std::fs::remove_dir(&cg.dir);
        std::fs::create_dir(&cg.dir).expect("creating the test cgroup");
        let (file, swap) = if v2 {
            ("memory.max", Some("memory.swap.max"))
        } else {
            ("memory.limit_in_bytes", None)
        };
        std::fs::write(cg.dir.join(file), limit.to_string()).expect("setting the memory limit");
        if let Some(swap) = swap {
            let _ = std::fs::write(cg.dir.join(swap), "0");
        }
        cg
    }

    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// How many processes the OOM killer has killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    fn kill_all(&self) {
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A real S3 server (s3s-fs) on loopback with SigV4 credentials.
pub struct S3Server {
    child: Child,
    pub root: tempfile::TempDir,
    pub port: u16,
    pub bucket: String,
}

pub const ACCESS_KEY: &str = "memprof-test-access";
pub const SECRET_KEY: &str = "memprof-test-secret-0123456789";
pub const REGION: &str = "us-east-1";

impl S3Server {
    pub fn available() -> bool {
        require(
            have("s3s-fs"),
            "S3 test server s3s-fs (cargo install s3s-fs --features binary)",
        )
    }

    pub fn start(bucket: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let port = free_port();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        wait_for("s3s-fs to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        S3Server {
            child,
            root,
            port,
            bucket: bucket.to_string(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment memprof needs to use this server: the seed's variables plus the
    /// standard AWS ones.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BUCKET", self.bucket.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    pub fn client(&self) -> S3Client {
        S3Client::new(&self.endpoint(), &self.bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking S3 client over the real protocol (SigV4, path style).
pub struct S3Client {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Client {
    fn new(endpoint: &str, bucket: &str) -> Self {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "test",
            ))
            .force_path_style(true)
            .build();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        S3Client {
            rt,
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.into(),
        }
    }

    pub fn keys(&self) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.client.list_objects_v2().bucket(&self.bucket).send())
            .expect("ListObjectsV2");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect()
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("GetObject");
            out.body
                .collect()
                .await
                .expect("object body")
                .into_bytes()
                .to_vec()
        })
    }
}

/// memprof as a child process, its output collected in a file.
pub struct Memprof {
    pub child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Memprof {
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("memprof.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_memprof"))
            .args([
                "--spool-dir",
                &dir.path().join("spool").display().to_string(),
            ])
            .args([
                "--local-dir",
                &dir.path().join("profiles").display().to_string(),
            ])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "memprof=debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting memprof");
        let m = Memprof {
            child,
            log,
            _dir: dir,
        };
        m.wait_for_log("memprof started", Duration::from_secs(30));
        m
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let out = self.output();
            if let Some(line) = out.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                start.elapsed() < timeout,
                "memprof never logged {needle:?}; output:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// Decodes a pprof profile with Go's own tool and returns its `-top` listing.
pub fn pprof_top(profile: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), profile).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", "-sample_index=inuse_space"])
        .arg(f.path())
        .output()
        .expect("go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof could not decode the profile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
