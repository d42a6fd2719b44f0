//! memprof's own footprint, as a pod pays it: the release binary's size, and the peak and
//! settled RSS of memprof as PID 1 of a PID namespace of its own (a sidecar's view) with 200
//! idle processes beside it, per detector. The peak is the kernel's high-water mark
//! (`VmHWM`), start-up included. Beside it, the peak of memprof's own memory cgroup, which is
//! what a container's limit is held against: it counts the kernel memory of the BPF maps and
//! the binary's page cache (dropped before each run, so each run reads it as a new pod does),
//! and a ring buffer once where RSS counts it twice.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use super::{kill::Cgroup, results::Results, started};

/// Idle processes beside memprof.
const PROCESSES: usize = 200;
/// How long memprof runs before it is read: start-up, discovery and a few safety-net scans.
const SETTLE: Duration = Duration::from_secs(12);

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    let size = std::fs::metadata(bin)?.len() as f64 / (1 << 20) as f64;
    results.add("footprint", "release binary", "MiB", &[size], None);
    for (detector, name) in [("btf", "ebpf"), ("poll", "poll")] {
        let (mut peak, mut settled, mut charged) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let m = measure(bin, detector, run)?;
            peak.push(m.hwm);
            settled.push(m.rss);
            charged.extend(m.cgroup_peak);
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
        if charged.is_empty() {
            results.note("no memory cgroup peak on this kernel (memory.peak needs 5.19)".into());
        } else {
            results.add(
                "footprint",
                &format!("{name}: memory cgroup peak"),
                "MiB",
                &charged,
                None,
            );
        }
    }
    results.print_group("footprint");
    Ok(())
}

/// One memprof's memory, in MiB.
struct Measured {
    /// `VmHWM` and `VmRSS` after `SETTLE`.
    hwm: f64,
    rss: f64,
    /// The high-water mark of its memory cgroup (memprof alone is in it), where the kernel
    /// keeps one.
    cgroup_peak: Option<f64>,
}

fn measure(bin: &Path, detector: &str, run: usize) -> Result<Measured> {
    let dir = std::env::temp_dir().join(format!("memprof-bench-footprint-{}", std::process::id()));
    // A new cgroup each run: its peak starts from nothing.
    let cg = Cgroup::new(
        &format!("memprof-bench-footprint-{detector}-{run}"),
        1 << 30,
    )?;
    drop_page_cache(bin)?;
    // Only memprof joins the cgroup (`0`: the writer), not the idle processes.
    let script = format!(
        "for i in $(seq {PROCESSES}); do sleep 3600 & done; echo 0 > {1}/cgroup.procs; \
         exec \"$0\" --detector {detector} --listen 127.0.0.1:0 --local-dir {0}/profiles \
         --spool-dir {0}/spool",
        dir.display(),
        cg.0.display()
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
    let cgroup_peak = cgroup_peak(&cg.0);
    end(&mut child);
    drop(cg);
    let _ = std::fs::remove_dir_all(&dir);
    let (hwm, rss) = read?;
    Ok(Measured {
        hwm,
        rss,
        cgroup_peak,
    })
}

/// The binary's page cache is charged to the cgroup that reads it first: dropped, each run
/// reads it as a new pod does.
fn drop_page_cache(file: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file)?;
    // SAFETY: a valid descriptor; advice only.
    match unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e))
            .with_context(|| format!("dropping {}'s page cache", file.display())),
    }
}

/// `memory.max_usage_in_bytes` (v1) or `memory.peak` (v2, since Linux 5.19), in MiB.
fn cgroup_peak(dir: &Path) -> Option<f64> {
    ["memory.max_usage_in_bytes", "memory.peak"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .map(|bytes| bytes / (1 << 20) as f64)
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
