//! A large profile: a synthetic endpoint (the test fixture, `large` mode) serving 16 MiB or
//! 1 GiB, taken with `memprof capture --pid` into a local directory and into a real S3 server
//! (s3s-fs: one streamed PUT at 16 MiB, a multipart upload at 1 GiB), ABBA. Reports the time
//! from start to stored, the throughput and memprof's peak RSS (`ru_maxrss` from wait4): a
//! streamed profile's peak is memprof's own footprint, whatever the profile's size.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::{
    median,
    s3::{free_port, BUCKET, S3},
    Killed, Results,
};
use crate::workspace_root;

/// Mode name, body MiB, whether S3 (else a local directory).
const MODES: [(&str, u64, bool); 4] = [
    ("16 MiB → local dir", 16, false),
    ("16 MiB → S3 (PUT)", 16, true),
    ("1 GiB → local dir", 1024, false),
    ("1 GiB → S3 (multipart)", 1024, true),
];

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    println!(
        "\nlarge profile (memprof capture --pid against a synthetic endpoint, {runs} runs per \
         mode, ABBA)"
    );
    let dir = std::env::temp_dir().join(format!("memprof-bench-large-{}", std::process::id()));
    let s3_root = dir.join("s3");
    let s3_server = S3::start(&s3_root)?;
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); MODES.len()];
    for round in 0..runs {
        let mut order: Vec<usize> = (0..MODES.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (_, mib, s3) = MODES[i];
            let s3 = s3.then_some(&s3_server);
            samples[i].push(one(bin, &dir, mib, s3)?);
            // Objects do not pile up on disk between runs.
            let _ = std::fs::remove_dir_all(s3_root.join(BUCKET).join("memprof"));
            let _ = std::fs::remove_dir_all(dir.join("profiles"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    for ((name, mib, _), s) in MODES.iter().zip(samples) {
        let ms: Vec<f64> = s.iter().map(|x| x.0).collect();
        let peak = s.iter().map(|x| x.1).fold(0.0, f64::max);
        results.add("large profile", name, "ms", &ms, None);
        results.note(format!(
            "{:.0} MiB/s, peak RSS {peak:.1} MiB",
            *mib as f64 / (median(&ms) / 1e3)
        ));
    }
    results.print_group("large profile");
    Ok(())
}

/// One capture: (milliseconds, peak RSS in MiB).
fn one(bin: &Path, dir: &Path, mib: u64, s3: Option<&S3>) -> Result<(f64, f64)> {
    let port = free_port()?.to_string();
    let fixture = workspace_root().join("memprof/tests/fixtures/hostile_endpoint.py");
    let mut target = Command::new("/usr/bin/python3")
        .arg(fixture)
        .args(["large", &port, "1", &mib.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(target.stdout.as_mut().context("fixture stdout")?),
        &mut line,
    )?;
    let target = Killed(target);
    let mut cmd = Command::new(bin);
    cmd.arg("--local-dir")
        .arg(dir.join("profiles"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args(["--pprof-port", &port, "capture", "--pid"])
        .arg(target.0.id().to_string())
        .env("MEMPROF_CAPTURE_MAX_BYTES", "4294967296")
        .env("MEMPROF_SPOOL_MAX_BYTES", "8Gi")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(s3) = s3 {
        s3.configure(&mut cmd);
    }
    let start = Instant::now();
    let child = cmd.spawn()?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with valid pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if r != child.id() as i32 || libc::WEXITSTATUS(status) != 0 {
        bail!("memprof capture of {mib} MiB failed (status {status})");
    }
    Ok((ms, usage.ru_maxrss as f64 / 1024.0))
}
