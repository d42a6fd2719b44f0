//! Targets whose pprof port misbehaves, on real parts: processes holding most of their memory
//! cgroup's limit, each in its own network namespace, serving from a real socket a port that
//! resets the connection, hangs, answers 404, answers a page that is not a profile, answers
//! without end, or answers a byte at a time. Each yields one clear log line and, instead of
//! nothing, a snapshot of what the kernel says of the process and what the endpoint said.
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::common::*;

const PORT: &str = "7171";

/// One misbehaviour: the mode of the fixture, what the log line says, what the snapshot shows
/// of the endpoint's answer.
const CASES: [(&str, &str, &str); 6] = [
    ("refuse", "", "status: (no status line)"),
    // An endpoint that takes longer than half a second holds nothing back: the evidence read
    // at the crossing is stored then, while the capture goes on.
    (
        "hang",
        "no complete answer within 2s (0 bytes received)",
        "no profile within 500ms of the crossing",
    ),
    ("404", "HTTP 404 Not Found", "404 page not found"),
    (
        "garbage",
        "the answer is not a gzip-compressed profile",
        "Welcome to the admin console",
    ),
    (
        "endless",
        "the answer exceeds MEMPROF_CAPTURE_MAX_BYTES (1048576 bytes)",
        "status: 200 OK",
    ),
    // A profile that trickles in is coming: the snapshot waits for its end, and shows it.
    (
        "slow",
        "no complete answer within 2s (",
        " bytes:\n\\x1f\\x8b\\x00",
    ),
];

#[test]
fn each_misbehaving_endpoint_leaves_one_log_line_and_a_snapshot() {
    if !require(is_root(), "root (cgroups, network namespaces)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
        || !require(
            have("unshare") && have("ip"),
            "unshare and ip (util-linux, iproute2)",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MEMORY_CRITICAL_PERCENTAGE", "50".to_string()),
        ("PPROF_PORT", PORT.into()),
        ("MEMPROF_CAPTURE_TIMEOUT_MS", "2000".into()),
        ("MEMPROF_CAPTURE_MAX_BYTES", "1048576".into()),
        ("MEMPROF_MAX_CAPTURES_PER_MINUTE", "1000".into()),
    ];
    let memprof = Memprof::spawn_at(dir.path(), &[], &[], &env);
    let targets: Vec<(MemCgroup, Child)> = CASES
        .iter()
        .map(|(mode, ..)| {
            let cg = MemCgroup::new(&format!("memprof-test-hostile-{mode}"), 200 << 20);
            let child = target(mode, &cg);
            (cg, child)
        })
        .collect();

    for ((mode, says, answered), (_, child)) in CASES.iter().zip(&targets) {
        let pid = child.id();
        let line = memprof.wait_for_line(
            &format!("the {mode} endpoint's failure"),
            Duration::from_secs(60),
            |l| l.contains("endpoint capture failed") && l.contains(&format!("(PID {pid}'s ")),
        );
        println!("{mode}: {line}");
        assert!(line.contains(says), "{mode}: {line}");
        memprof.wait_for_line(
            &format!("the {mode} target's snapshot"),
            Duration::from_secs(30),
            |l| {
                l.contains("snapshot stored in place of a profile")
                    && l.contains(&format!("pid={pid} "))
            },
        );
        let (path, text) = snapshot_of(&dir.path().join("profiles"), pid);
        assert!(
            text.contains(&format!("== /proc/{pid}/status\nName:\tpython3")),
            "{mode}: {text}"
        );
        assert!(
            text.contains("/smaps_rollup\n") && text.contains("\nRss:"),
            "{mode}: {text}"
        );
        // v1 names the process's anonymous memory `rss`, v2 `anon`.
        let stat = text.split("/memory.stat\n").nth(1).unwrap_or_default();
        assert!(
            stat.starts_with("cache ") || stat.starts_with("anon "),
            "{mode}: {text}"
        );
        let early = answered.starts_with("no profile within");
        assert_eq!(
            text.contains("== the endpoint's answer"),
            !early,
            "{mode}: {text}"
        );
        assert!(text.contains(answered), "{mode}: {text}");
        let meta = path.with_file_name(format!(
            "{}.meta.json",
            path.file_name().unwrap().to_string_lossy()
        ));
        let meta = std::fs::read_to_string(&meta).expect("the snapshot's metadata");
        assert!(meta.contains("\"kind\": \"snapshot\""), "{meta}");
    }
    // One snapshot per crossing: retries of the endpoint add log lines, not snapshots.
    for (_, child) in &targets {
        let pid = child.id();
        let out = memprof.output();
        let stored = out
            .lines()
            .filter(|l| l.contains("snapshot stored") && l.contains(&format!("pid={pid} ")))
            .count();
        assert_eq!(stored, 1, "{out}");
    }
    let (code, out) = memprof.stop();
    assert_eq!(code, Some(0), "{out}");
}

/// The fixture in `cg` and a network namespace of its own, once it holds its memory.
fn target(mode: &str, cg: &MemCgroup) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile_endpoint.py");
    let procs = cg.procs_file();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--net",
        "sh",
        "-c",
        "ip link set lo up && exec /usr/bin/python3 \"$@\"",
        "sh",
    ])
    .arg(script)
    .args([mode, PORT, "120"])
    .stdout(Stdio::piped());
    // SAFETY: only async-signal-safe work (a write) between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
    }
    let mut child = cmd.spawn().expect("starting the fixture");
    assert_eq!(first_line(&mut child).trim(), "ready", "{mode}");
    child
}

/// The snapshot stored for `pid` below the local destination: its path and text.
fn snapshot_of(dir: &Path, pid: u32) -> (PathBuf, String) {
    let found = find_file(dir, &format!("_pid-{pid}_"), ".snapshot.txt");
    let path = found.unwrap_or_else(|| panic!("no snapshot for PID {pid} below {}", dir.display()));
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}
