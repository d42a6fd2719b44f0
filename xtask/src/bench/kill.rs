//! The Go heap walks, measured on real parts: `testapps/stacks` (12,000 distinct stacks,
//! ~12,050 buckets) leaking into a memory cgroup until the OOM killer takes it, with and
//! without memprof, alternating.
//!
//! * how much later the victim dies because of the at-kill walk: `oom/mark_victim` → the
//!   victim's last `sched/sched_process_exit`, both timestamped by the kernel in a private
//!   tracefs instance;
//! * the walk's time per 1,000 buckets in the kernel ("at-kill profile stored" `walk_ms`) and
//!   in userspace (`process_vm_readv`, "heap read from process memory" `read_ms`).
use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::Results;
use crate::{setup, workspace_root};

const TRACE: &str = "/sys/kernel/tracing/instances/memprof-bench";
const LIMIT: u64 = 256 << 20;

/// A memory cgroup of its own (v1 where the memory controller is, else v2), removed on drop.
pub struct Cgroup(pub PathBuf);

impl Cgroup {
    pub fn new(name: &str, limit: u64) -> Result<Self> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(name), "memory.limit_in_bytes")
        } else {
            (Path::new("/sys/fs/cgroup").join(name), "memory.max")
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(limit_file), limit.to_string())?;
        Ok(Self(dir))
    }
}

impl Drop for Cgroup {
    /// Retries while the last of its processes finish exiting.
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn trace_on() -> Result<()> {
    let dir = Path::new(TRACE);
    if !dir.exists() {
        std::fs::create_dir(dir).context("creating a tracefs instance")?;
    }
    for event in ["oom/mark_victim", "sched/sched_process_exit"] {
        std::fs::write(dir.join("events").join(event).join("enable"), "1")?;
    }
    std::fs::write(dir.join("trace"), "")?;
    Ok(())
}

/// Seconds from the victim's `mark_victim` to the last exit of one of its threads.
fn kill_to_exit(pid: u32, comm: &str) -> Result<f64> {
    let text = std::fs::read_to_string(Path::new(TRACE).join("trace"))?;
    let stamp = |l: &str| -> Option<f64> {
        l.split_whitespace()
            .find_map(|w| w.strip_suffix(':')?.parse::<f64>().ok())
    };
    let marked = text
        .lines()
        .filter(|l| l.contains("mark_victim:") && l.contains(&format!("pid={pid} ")))
        .find_map(stamp)
        .context("no mark_victim for the victim in the trace")?;
    let exited = text
        .lines()
        .filter(|l| l.contains("sched_process_exit:") && l.contains(&format!("comm={comm} ")))
        .filter_map(stamp)
        .filter(|t| *t >= marked)
        .fold(f64::NAN, f64::max);
    if exited.is_nan() {
        bail!("no exit of the victim after mark_victim");
    }
    Ok(exited - marked)
}

struct Run {
    delay_ms: f64,
    /// (buckets, ms) of the kernel walk and the userspace read.
    kernel: Option<(f64, f64)>,
    user: Option<(f64, f64)>,
}

/// memprof as a daemon keeping its profiles and spool under `dir`, logging to `log`.
pub fn daemon(bin: &Path, dir: &Path, log: &Path) -> Result<Command> {
    let mut cmd = Command::new(bin);
    cmd.arg("--local-dir")
        .arg(dir.join("profiles"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(log)?);
    Ok(cmd)
}

pub fn field(line: &str, name: &str) -> Option<f64> {
    let rest = line.split(&format!("{name}=")).nth(1)?;
    rest.trim_start_matches('"')
        .split(['"', ' '])
        .next()?
        .parse()
        .ok()
}

fn one_run(memprof: Option<&Path>, stacks: &Path) -> Result<Run> {
    let cg = Cgroup::new("memprof-bench-kill", LIMIT)?;
    let dir = std::env::temp_dir().join(format!("memprof-bench-kill-{}", std::process::id()));
    let log = dir.join("memprof.log");
    std::fs::create_dir_all(&dir)?;
    let mut daemon = match memprof {
        Some(bin) => {
            let child = daemon(bin, &dir, &log)?
                .args(["--detector", "btf", "--go-heap", "memory"])
                .args(["--memory-critical-percentage", "50"])
                // Room for the whole walk: its time per bucket is what is measured.
                .args(["--at-kill-ring", "4Mi"])
                .stderr(Stdio::null())
                .spawn()?;
            let start = Instant::now();
            while !std::fs::read_to_string(&log)?.contains("memprof started") {
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("memprof did not start");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(child)
        }
        None => None,
    };
    trace_on()?;
    let procs = cg.0.join("cgroup.procs");
    let mut cmd = Command::new(stacks);
    cmd.args(["-rate", "60"]).stdout(Stdio::piped());
    // SAFETY: only async-signal-safe work (a write) between fork and exec.
    unsafe { cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string())) };
    let mut victim = cmd.spawn()?;
    let pid = victim.id();
    let mut ready = String::new();
    BufReader::new(victim.stdout.take().context("stdout")?).read_line(&mut ready)?;
    victim.wait()?;
    let comm: String = stacks
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    let delay_ms = kill_to_exit(pid, &comm)? * 1e3;
    let mut run = Run {
        delay_ms,
        kernel: None,
        user: None,
    };
    if let Some(mut d) = daemon.take() {
        let start = Instant::now();
        while run.kernel.is_none() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
            let text = std::fs::read_to_string(&log)?;
            for l in text.lines().filter(|l| l.contains(&format!("pid={pid}"))) {
                if l.contains("at-kill profile stored") {
                    run.kernel = field(l, "buckets").zip(field(l, "walk_ms"));
                }
                if l.contains("heap read from process memory") {
                    run.user = field(l, "buckets").zip(field(l, "read_ms"));
                }
            }
        }
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        let _ = d.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(run)
}

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    setup::build_testapps()?;
    let stacks = workspace_root().join("target/testapps/go-system/stacks");
    println!("\nGo heap walks (testapps/stacks, ~12,050 buckets, 256 MiB cgroup), {runs} runs each, alternating");
    let (mut without, mut with, mut kernel, mut user) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        without.push(one_run(None, &stacks)?.delay_ms);
        let r = one_run(Some(bin), &stacks)?;
        with.push(r.delay_ms);
        kernel.extend(r.kernel.map(|(b, ms)| ms / b * 1e3));
        user.extend(r.user.map(|(b, ms)| ms / b * 1e3));
    }
    let _ = std::fs::remove_dir(TRACE);
    let base = super::median(&without);
    let bench = "Go heap walks";
    results.add(
        bench,
        "mark_victim → exit, no memprof",
        "ms",
        &without,
        None,
    );
    results.add(
        bench,
        "mark_victim → exit, memprof walking",
        "ms",
        &with,
        Some(base),
    );
    results.add(bench, "kernel walk per 1,000 buckets", "ms", &kernel, None);
    results.add(bench, "userspace read per 1,000 buckets", "ms", &user, None);
    results.print_group(bench);
    Ok(())
}
