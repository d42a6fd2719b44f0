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
    // Reaped by wait4, which also gives its peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_memprof"))
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
    let (code, peak_kib) = wait_with_peak_rss(child.id());
    let _ = target.kill();
    let _ = target.wait();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{stderr}");
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

/// Waits for the child and returns its exit code and peak RSS in KiB (`ru_maxrss`).
fn wait_with_peak_rss(pid: u32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with valid pointers.
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, pid as i32, "wait4");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}
