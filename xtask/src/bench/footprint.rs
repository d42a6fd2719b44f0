//! memprof's own footprint, as a pod pays it: the release binary's size, and the peak and
//! settled RSS of memprof as PID 1 of a PID namespace of its own (a sidecar's view) with 200
//! idle processes beside it, per detector. The peak is the kernel's high-water mark
//! (`VmHWM`), start-up included.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use super::{results::Results, started};

/// Idle processes beside memprof.
const PROCESSES: usize = 200;
/// How long memprof runs before it is read: start-up, discovery and a few safety-net scans.
const SETTLE: Duration = Duration::from_secs(12);

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    let size = std::fs::metadata(bin)?.len() as f64 / (1 << 20) as f64;
    results.add("footprint", "release binary", "MiB", &[size], None);
    for (detector, name) in [("btf", "ebpf"), ("poll", "poll")] {
        let (mut peak, mut settled) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (hwm, rss) = measure(bin, detector)?;
            peak.push(hwm);
            settled.push(rss);
        }
        results.add(
            "footprint",
            &format!("{name}: peak RSS"),
            "MiB",
            &peak,
            None,
        );
        results.note(format!("{PROCESSES} idle processes in its PID namespace"));
        results.add(
            "footprint",
            &format!("{name}: RSS after {} s", SETTLE.as_secs()),
            "MiB",
            &settled,
            None,
        );
    }
    results.print_group("footprint");
    Ok(())
}

/// (peak, current) RSS in MiB of one memprof after `SETTLE`.
fn measure(bin: &Path, detector: &str) -> Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("memprof-bench-footprint-{}", std::process::id()));
    let script = format!(
        "for i in $(seq {PROCESSES}); do sleep 3600 & done; exec \"$0\" --detector {detector} \
         --listen 127.0.0.1:0 --local-dir {0}/profiles --spool-dir {0}/spool",
        dir.display()
    );
    let child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ])
        .arg(bin)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut child = started(child).context("memprof in its own PID namespace")?;
    std::thread::sleep(SETTLE);
    let read = status_of_child(&child);
    end(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    read
}

/// VmHWM and VmRSS of the child of `unshare` (memprof, PID 1 of its namespace), in MiB.
fn status_of_child(unshare: &Child) -> Result<(f64, f64)> {
    let children = format!("/proc/{0}/task/{0}/children", unshare.id());
    let pid = std::fs::read_to_string(children)?
        .split_whitespace()
        .next()
        .context("memprof is not running")?
        .to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .with_context(|| format!("{field} in /proc/{pid}/status"))?;
        let n: f64 = line
            .split_whitespace()
            .nth(1)
            .context("a number")?
            .parse()?;
        Ok(n / 1024.0)
    };
    Ok((kib("VmHWM:")?, kib("VmRSS:")?))
}

/// Ends the namespace: `unshare --kill-child` takes memprof and the idle processes with it.
fn end(unshare: &mut Child) {
    let _ = unshare.kill();
    let _ = unshare.wait();
}
