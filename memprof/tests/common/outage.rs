//! Parts of the delivery tests: a leaking Go service in a memory cgroup, memprof's S3
//! settings, and what waits in its spool.
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use super::*;

pub fn prerequisites() -> Option<PathBuf> {
    if !require(is_root(), "root (BPF, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
        || !S3Server::available()
    {
        return None;
    }
    go_service()
}

/// The Go service in `cg`, retaining `rate` MiB/s.
pub fn leak(go: &Path, cg: &MemCgroup, rate: u32) -> Child {
    let procs = cg.procs_file();
    let mut child = Command::new(go);
    child
        .args(["-rate", &rate.to_string()])
        .stdout(Stdio::piped());
    // SAFETY: only async-signal-safe work (a write) between fork and exec.
    unsafe {
        child.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
    }
    let mut child = child.spawn().unwrap();
    first_line(&mut child);
    child
}

/// The environment for `server`'s bucket at `endpoint`, with `secret` as the secret key.
pub fn s3_env(endpoint: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BUCKET", "profiles".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", secret.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// The key a "not stored yet" line names.
pub fn key_in(line: &str) -> Option<&str> {
    let rest = line.split(" PUT s3://profiles/").nth(1)?;
    Some(&rest[..rest.find(": ")?])
}

/// The profiles waiting in the spool below `dir`: (key, profile bytes).
pub fn spooled(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("spool")).unwrap().flatten() {
        // Hidden files are entries still being written: not spooled yet.
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue; // sent and removed meanwhile
        };
        // The header line with the key, then one with the metadata, then the profile.
        if let Some(rest) = bytes.strip_prefix(b"memprof-spool 2 ".as_slice()) {
            let end = rest.iter().position(|b| *b == b'\n').unwrap();
            let key = String::from_utf8(rest[..end].to_vec()).unwrap();
            let rest = &rest[end + 1..];
            let end = rest.iter().position(|b| *b == b'\n').unwrap();
            out.push((key, rest[end + 1..].to_vec()));
        }
    }
    out
}
