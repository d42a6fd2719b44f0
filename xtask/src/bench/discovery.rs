//! Go binaries with and without their symbol table and DWARF: `memprof capture --pid
//! --go-heap memory` of an idle Go service that serves no endpoint, so its heap is read from
//! memory and symbolized from DWARF or, stripped, from Go's line table. Per binary: discovery
//! (memprof's own `took_ms`: the executable parsed, the runtime's variables found), the whole
//! capture to a local directory, and memprof's peak RSS (`ru_maxrss`), ABBA.
use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{median, Killed, Results};
use crate::{setup::GO_CURRENT, workspace_root};

struct Target {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
}

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    println!(
        "\nGo discovery and symbolization, stripped vs not (memprof capture --pid, heap read \
         from memory, {runs} runs per binary, ABBA)"
    );
    let dir = std::env::temp_dir().join(format!("memprof-bench-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let targets = targets(&dir)?;
    let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); targets.len()];
    for round in 0..runs {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            samples[i].push(one(bin, &dir, &targets[i])?);
            let _ = std::fs::remove_dir_all(dir.join("profiles"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (t, s) in targets.iter().zip(samples) {
        let discovery: Vec<f64> = s.iter().map(|x| x.0).collect();
        let total: Vec<f64> = s.iter().map(|x| x.1).collect();
        let peak: Vec<f64> = s.iter().map(|x| x.2).collect();
        results.add("Go discovery", &t.name, "ms", &discovery, None);
        results.note(format!(
            "capture stored in {:.0} ms, memprof's peak RSS {:.1} MiB",
            median(&total),
            median(&peak)
        ));
    }
    results.print_group("Go discovery");
    Ok(())
}

/// The test service built by Debian's Go and the newest, with and without `-s -w`, and
/// Debian's podman (stripped by its packaging, linked by the system's linker).
fn targets(dir: &Path) -> Result<Vec<Target>> {
    let go_current = format!("/opt/memprof-go/{GO_CURRENT}/go/bin/go");
    let mut out = Vec::new();
    for (go, release) in [("go", "1.19 (Debian)"), (go_current.as_str(), GO_CURRENT)] {
        for (flags, how) in [
            (None, "unstripped"),
            (Some("-ldflags=-s -w"), "stripped -s -w"),
        ] {
            let bin = dir.join(format!("leaky-{}-{}", out.len(), how.len()));
            let mut cmd = Command::new(go);
            cmd.arg("build").args(flags).arg("-o").arg(&bin).arg(".");
            let status = cmd
                .current_dir(workspace_root().join("testapps/leaky"))
                .env("GOTOOLCHAIN", "local")
                .status()
                .with_context(|| format!("building the test service with {go}"))?;
            if !status.success() {
                bail!("go build of testapps/leaky with {go} failed");
            }
            let size = std::fs::metadata(&bin)?.len() as f64 / 1e6;
            out.push(Target {
                name: format!("Go {release}, {how} ({size:.1} MB)"),
                bin,
                args: ["-addr", "", "-rate", "20"].map(String::from).to_vec(),
            });
        }
    }
    let podman = PathBuf::from("/usr/bin/podman");
    let size = std::fs::metadata(&podman).context("Debian's podman (cargo xtask setup)")?;
    out.push(Target {
        name: format!(
            "podman (Debian, stripped, {:.1} MB)",
            size.len() as f64 / 1e6
        ),
        bin: podman,
        args: vec![
            "system".into(),
            "service".into(),
            "--time=0".into(),
            format!("unix://{}/podman.sock", dir.display()),
        ],
    });
    Ok(out)
}

/// One capture: (discovery ms, capture ms, peak RSS MiB).
fn one(bin: &Path, dir: &Path, t: &Target) -> Result<(f64, f64, f64)> {
    let target = Killed(
        Command::new(&t.bin)
            .args(&t.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", t.bin.display()))?,
    );
    // Past its start-up: the heap holds what the program allocated to get going.
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    let mut child = Command::new(bin)
        .arg("--local-dir")
        .arg(dir.join("profiles"))
        .args(["--listen", "127.0.0.1:0", "--go-heap", "memory"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args(["capture", "--pid", &target.0.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut log = String::new();
    child
        .stderr
        .take()
        .context("memprof's stderr")?
        .read_to_string(&mut log)?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with valid pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if r != child.id() as i32 || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "memprof capture of {} failed (status {status}):\n{log}",
            t.name
        );
    }
    let discovery = log
        .split("took_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.trim_matches('"').parse::<f64>().ok())
        .with_context(|| format!("no discovery time in memprof's log:\n{log}"))?;
    Ok((discovery, ms, usage.ru_maxrss as f64 / 1024.0))
}
