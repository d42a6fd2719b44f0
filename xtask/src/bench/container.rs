//! Container-trigger detection latency: a process in a memory cgroup of its own grows past
//! the container level (50 % of 256 MiB) one MiB at a time. It reads its cgroup's working set
//! (usage − inactive file, as memprof and the kubelet compute it) after each MiB and prints
//! the wall clock when it first reaches the level; memprof's "container reached its level"
//! line carries memprof's own clock. Both modes side by side, ABBA: `auto` (the kernel's
//! notifications: a cgroup v1 usage threshold here) and `poll` (the working set read every
//! WATCH_TIME ms, the default 500).
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    kill::{daemon, Cgroup},
    Results,
};

const LIMIT: u64 = 256 << 20;
const LEVEL_PCT: u64 = 50;

const GROWER: &str = r#"
import sys, time
cg, v2, level = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
usage_file = cg + ("/memory.current" if v2 else "/memory.usage_in_bytes")
inactive_key = "inactive_file" if v2 else "total_inactive_file"
def working_set():
    usage = int(open(usage_file).read())
    for line in open(cg + "/memory.stat"):
        k, v = line.split()
        if k == inactive_key:
            return usage - int(v)
time.sleep(1.5)
chunks = []
while True:
    chunks.append(b"\x01" * (1 << 20))
    if working_set() >= level:
        break
    time.sleep(0.002)
print(time.time() % 86400, flush=True)
time.sleep(30)
"#;

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    if runs == 0 {
        return Ok(());
    }
    // The grower checks after each MiB (~3 ms apart): memprof can be told before it looks.
    println!(
        "\ncontainer trigger: detection latency, a process growing ~300 MiB/s past {LEVEL_PCT} % \
         of a {} MiB cgroup, {runs} runs per mode, ABBA",
        LIMIT >> 20
    );
    let mut auto = Vec::new();
    let mut poll = Vec::new();
    for i in 0..runs {
        let order = if i % 2 == 0 {
            ["auto", "poll"]
        } else {
            ["poll", "auto"]
        };
        for mode in order {
            let (ms, via) = one_run(bin, mode)?;
            println!("  {mode:<5} {ms:>8.2} ms  (woken by {via})");
            if mode == "auto" { &mut auto } else { &mut poll }.push(ms);
        }
    }
    results.add("container trigger", "notified (auto)", "ms", &auto, None);
    results.add("container trigger", "working-set poll", "ms", &poll, None);
    results.print_group("container trigger");
    Ok(())
}

/// Latency in ms of one detection, and what woke memprof.
fn one_run(bin: &Path, mode: &str) -> Result<(f64, String)> {
    let cg = Cgroup::new("memprof-bench-container", LIMIT)?;
    let dir = std::env::temp_dir().join(format!("memprof-bench-ct-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("memprof.log");
    let mut memprof = Guard(
        daemon(bin, &dir, &log)?
            .args(["--container-detector", mode])
            .args(["--memory-container-percentage", &LEVEL_PCT.to_string()])
            .args(["--memory-critical-percentage", "99"])
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    wait_line(&log, "memprof started", Duration::from_secs(30))?;
    let v2 = !cg.0.join("memory.limit_in_bytes").exists();
    let level = LIMIT / 100 * LEVEL_PCT;
    let mut grower = Guard(
        Command::new("sh")
            .args([
                "-c",
                "echo $$ > \"$0/cgroup.procs\" && exec python3 -c \"$1\" \"$0\" \"$2\" \"$3\"",
            ])
            .arg(&cg.0)
            .arg(GROWER)
            .arg(if v2 { "1" } else { "0" })
            .arg(level.to_string())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let out = grower.0.stdout.take().context("grower's stdout")?;
    let mut crossed = String::new();
    BufReader::new(out).read_line(&mut crossed)?;
    let crossed: f64 = crossed
        .trim()
        .parse()
        .context("the grower's crossing time")?;
    let line = wait_line(&log, "container reached its level", Duration::from_secs(10))?;
    let detected = seconds_of_day(&line).context("the log line's time")?;
    let via = line
        .split("via=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_string();
    grower.0.kill()?;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(memprof.0.id() as i32, libc::SIGTERM) };
    let _ = memprof.0.wait();
    drop(grower);
    drop(cg);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(((detected - crossed) * 1e3, via))
}

/// Kills the child on drop (the run failed half-way).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn wait_line(log: &Path, needle: &str, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return Ok(l.to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("memprof did not log {needle:?} within {timeout:?}")
}

/// `…THH:MM:SS.ffffffZ` at the start of a log line, as seconds since midnight UTC.
pub(super) fn seconds_of_day(line: &str) -> Option<f64> {
    let time = line.split('T').nth(1)?.split('Z').next()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}
