//! A large profile on real parts: a target whose endpoint serves 1 GiB (a synthetic answer
//! that starts as gzip does), `memprof capture --pid` against it, and a real S3 server
//! (s3s-fs, SigV4). The download streams into the spool and goes up to S3 in parts streamed
//! from the spool file: the object arrives whole while memprof's peak RSS stays far below it.
use std::{
    io::{Read, Seek, SeekFrom},
    path::Path,
    process::{Command, Stdio},
};

use crate::common::*;

const BODY_MIB: u64 = 1024;

#[test]
fn a_1_gib_profile_streams_through_multipart_with_a_small_peak_rss() {
    if !require(is_root(), "root (another process's sockets)") || !S3Server::available() {
        return;
    }
    let s3 = S3Server::start("profiles");
    let port = free_port().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile_endpoint.py");
    let mut target = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["large", &port, "1", &BODY_MIB.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut target).trim(), "ready");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("capture.log");
    let out = std::fs::File::create(dir.path().join("stdout")).unwrap();
    let peak = dir.path().join("peak_rss_kib");
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PEAK_RSS])
        .arg(&peak)
        .arg(env!("CARGO_BIN_EXE_memprof"))
        .args(dir_args(dir.path()))
        .args(["--pprof-port", &port, "capture", "--pid"])
        .arg(target.id().to_string())
        .envs(s3.env())
        .env("MEMPROF_CAPTURE_MAX_BYTES", "2147483648")
        .env("MEMPROF_SPOOL_MAX_BYTES", "4Gi")
        .env("RUST_LOG", "memprof=debug")
        .stdout(out)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let code = child.wait().unwrap().code();
    let peak_kib: u64 = std::fs::read_to_string(&peak)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {}", peak.display()));
    let _ = target.kill();
    let _ = target.wait();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let key = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    let key = key.trim();
    let line = stderr
        .lines()
        .find(|l| l.contains("multipart upload complete"))
        .unwrap_or_else(|| panic!("no multipart upload: {stderr}"));
    assert!(
        line.contains("parts=64 ") && line.contains(&format!("bytes={}", BODY_MIB << 20)),
        "{line}"
    );
    println!(
        "{line}\npeak RSS of memprof capture: {} MiB",
        peak_kib / 1024
    );

    // Whole and in order: as long as served, each MiB with its own fill byte.
    let mut object = std::fs::File::open(s3.root.path().join("profiles").join(key)).unwrap();
    assert_eq!(object.metadata().unwrap().len(), BODY_MIB << 20);
    let mut head = [0u8; 4];
    object.read_exact(&mut head).unwrap();
    assert_eq!(head, [0x1f, 0x8b, 0, 0]);
    for mib in [1, 250, 251, 777, BODY_MIB - 1] {
        let mut b = [0u8; 2];
        object.seek(SeekFrom::Start((mib << 20) + 12345)).unwrap();
        object.read_exact(&mut b).unwrap();
        assert_eq!(b, [(mib % 251) as u8; 2], "MiB {mib}");
    }
    assert!(
        std::fs::read_dir(dir.path().join("spool"))
            .unwrap()
            .next()
            .is_none(),
        "the spool is empty once S3 has the profile"
    );
    // Streamed: the peak is memprof's own footprint, not the profile's size.
    assert!(
        peak_kib < 256 * 1024,
        "peak RSS {peak_kib} KiB for a 1 GiB profile"
    );
}

/// Runs argv[2..] and writes its peak RSS in KiB to argv[1]. A child's `ru_maxrss` counts the
/// high-water mark of the address space it replaced at exec too, which for a child of this test
/// binary is the binary's own (large, after the other tests); forked from a small python3 and
/// reaped by its `wait4`, memprof's figure is its own.
const PEAK_RSS: &str = "import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], 'w').write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
";
