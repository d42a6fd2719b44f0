//! The race against the OOM killer, the project's headline, every detector in one run: the Go
//! test service (`testapps/leaky`) retains 100 to 2000 MiB/s into a 1 GiB memory cgroup until
//! the OOM killer takes it, with memprof capturing at 80 % and 95 % and storing to a real S3
//! server (s3s-fs). Per cell (detector, level, rate): how often the level's profile was stored
//! before the kill, the median margin from stored to the kill, and how often an at-kill
//! profile arrived. The same trials give the detection latency: from the moment the process's
//! RSS crossed the level to memprof's decision, and to stored.
//!
//! One clock for all of it, CLOCK_MONOTONIC: the service timestamps each of its 10 ms steps
//! and reads its RSS after each (`-steps`), so the crossing is placed within its step by
//! interpolation; the kernel's `oom/mark_victim` is read from a tracefs instance on the
//! `mono` clock; memprof's log lines (UTC wall clock) are moved onto it by the offset between
//! the two clocks read at the trial's start. memprof's decision is its "profile stored" line's
//! time less the time from its decision on (`detect_to_stored_ms − decide_ms`: the decision
//! follows the process's reading at once).
//!
//! The container trigger is off in every mode: this compares the process detectors. Each
//! detector runs half of its trials, then the others theirs, then the second half in reverse
//! order (ABBA), so a drift in the machine's state spreads over all of them.
use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    kill::{daemon, field, Cgroup},
    race_table::{Outcome, Trial},
    s3::S3,
    Results,
};
use crate::{setup, workspace_root};

pub const DETECTORS: [(&str, &[&str]); 3] = [
    ("ebpf", &["--detector", "btf"]),
    (
        "poll 500 ms",
        &["--detector", "poll", "--watch-time", "500"],
    ),
    (
        "poll 100 ms",
        &["--detector", "poll", "--watch-time", "100"],
    ),
];
pub const RATES: [u32; 5] = [100, 250, 500, 1000, 2000];
pub const LEVELS: [u32; 2] = [80, 95];
const LIMIT: u64 = 1 << 30;
const TRACE: &str = "/sys/kernel/tracing/instances/memprof-race";

pub fn run(bin: &Path, trials: usize, results: &mut Results) -> Result<()> {
    setup::build_testapps()?;
    let leaky = workspace_root().join("target/testapps/go-current/leaky");
    println!(
        "\nthe race: Go service into a 1 GiB cgroup at {RATES:?} MiB/s, levels {LEVELS:?} %, \
         {trials} trials per cell, S3 (s3s-fs)"
    );
    let dir = std::env::temp_dir().join(format!("memprof-bench-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let s3 = S3::start(&dir.join("s3"))?;
    trace_on()?;
    let mut all: Vec<Trial> = Vec::new();
    let halves = [trials.div_ceil(2), trials / 2];
    for (half, n) in halves.into_iter().enumerate() {
        let mut order: Vec<usize> = (0..DETECTORS.len()).collect();
        if half == 1 {
            order.reverse();
        }
        for d in order {
            let (mode, args) = DETECTORS[d];
            let log = dir.join(format!("{}.log", mode.replace(' ', "-")));
            let mut cmd = daemon(bin, &dir, &log)?;
            cmd.args(args)
                .args(["--memory-critical-percentage", "80,95"])
                .args(["--memory-container-percentage", "off"])
                .args(["--max-captures-per-minute", "1000"])
                .stderr(Stdio::null());
            s3.configure(&mut cmd);
            let memprof = super::Killed(cmd.spawn()?);
            super::container::wait_line(&log, "memprof started", Duration::from_secs(30))?;
            for _ in 0..n {
                for rate in RATES {
                    let t = trial(&leaky, &log, mode, rate)?;
                    println!("  {}", t.line());
                    all.push(t);
                }
            }
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(memprof.0.id() as i32, libc::SIGTERM) };
            drop(memprof);
        }
    }
    let _ = std::fs::remove_dir(TRACE);
    let _ = std::fs::remove_dir_all(&dir);
    super::race_table::report(&all, results);
    Ok(())
}

fn trace_on() -> Result<()> {
    let dir = Path::new(TRACE);
    if !dir.exists() {
        std::fs::create_dir(dir).context("creating a tracefs instance")?;
    }
    std::fs::write(dir.join("trace_clock"), "mono")?;
    std::fs::write(dir.join("events/oom/mark_victim/enable"), "1")?;
    Ok(())
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC and the start of the current UTC day, in seconds.
fn clocks() -> (f64, f64) {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    };
    let real = read(libc::CLOCK_REALTIME);
    let offset = real - read(libc::CLOCK_MONOTONIC);
    (offset, (real / 86400.0).floor() * 86400.0)
}

/// One service, leaking at `rate` until the OOM killer takes it.
fn trial(leaky: &Path, log: &Path, mode: &'static str, rate: u32) -> Result<Trial> {
    let cg = Cgroup::new("memprof-bench-race", LIMIT)?;
    std::fs::write(Path::new(TRACE).join("trace"), "")?;
    let (offset, day) = clocks();
    let seen = std::fs::metadata(log)?.len() as usize;
    let procs = cg.0.join("cgroup.procs");
    let mut cmd = Command::new(leaky);
    cmd.args(["-addr", "127.0.0.1:0", "-delay", "1s", "-steps"])
        .args(["-rate", &rate.to_string()])
        .stdout(Stdio::piped());
    // SAFETY: only async-signal-safe work (a write) between fork and exec.
    unsafe { cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string())) };
    let mut victim = super::Killed(cmd.spawn()?);
    let pid = victim.0.id();
    let out = victim.0.stdout.take().context("the service's stdout")?;
    let steps: Vec<(f64, f64, f64)> = BufReader::new(out)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| {
            let mut w = l
                .strip_prefix("step ")?
                .split(' ')
                .map(|v| v.parse::<f64>());
            Some((
                w.next()?.ok()? / 1e9,
                w.next()?.ok()? / 1e9,
                w.next()?.ok()?,
            ))
        })
        .collect();
    let _ = victim.0.wait();
    let kill = mark_victim(pid);
    // What memprof stores after the kill: the at-kill profile (the kernel's walk) and any
    // capture still under way. Quiet for a second, or 6 s at most.
    let mine = format!(" pid={pid} ");
    let (mut text, mut quiet, start) = (String::new(), Instant::now(), Instant::now());
    while start.elapsed() < Duration::from_secs(6) && quiet.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
        let now = std::fs::read_to_string(log)?;
        let new: String = now
            .get(seen..)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&mine))
            .collect::<Vec<_>>()
            .join("\n");
        if new != text {
            (text, quiet) = (new, Instant::now());
        }
    }
    let mono = |line: &str| super::container::seconds_of_day(line).map(|s| day + s - offset);
    let stored: Vec<(f64, f64, f64)> = text
        .lines()
        .filter(|l| l.contains("profile stored") && !l.contains("at-kill"))
        .filter_map(|l| {
            let at = mono(l)?;
            let decided = at - (field(l, "detect_to_stored_ms")? - field(l, "decide_ms")?) / 1e3;
            Some((field(l, "percent")?, decided, at))
        })
        .collect();
    let outcomes = LEVELS.map(|level| {
        let crossed = crossing(&steps, LIMIT as f64 * level as f64 / 100.0);
        let first = stored.iter().find(|(pct, ..)| *pct >= level as f64);
        Outcome {
            crossed,
            decided: first.map(|s| s.1),
            stored: first.map(|s| s.2),
        }
    });
    let achieved = match (steps.first(), steps.last()) {
        (Some(a), Some(b)) if b.1 > a.0 => (b.2 - a.2) / (b.1 - a.0) / (1 << 20) as f64,
        _ => f64::NAN,
    };
    Ok(Trial {
        mode,
        rate,
        achieved,
        kill,
        levels: outcomes,
        at_kill: text.contains("at-kill profile stored"),
    })
}

/// When RSS reached `level` bytes: within the step that crossed it, interpolated between the
/// RSS after the step before and after this one.
fn crossing(steps: &[(f64, f64, f64)], level: f64) -> Option<f64> {
    let i = steps.iter().position(|s| s.2 >= level)?;
    let (t0, t1, after) = steps[i];
    let before = if i == 0 { after } else { steps[i - 1].2 };
    let part = if after > before {
        ((level - before) / (after - before)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    Some(t0 + part * (t1 - t0))
}

/// The kernel's `mark_victim` of `pid` on CLOCK_MONOTONIC, in seconds.
fn mark_victim(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(PathBuf::from(TRACE).join("trace")).ok()?;
    text.lines()
        .filter(|l| l.contains("mark_victim:") && l.contains(&format!("pid={pid} ")))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_suffix(':')?.parse::<f64>().ok())
        })
}
