//! memprof's idle cost: its CPU time and peak RSS beside N idle processes (`sleep`, 10 to
//! 5,000) and three idle Go services (endpoint discovery looks at Go programs: two serve pprof,
//! one does not), all in a memory cgroup with a limit, as in a pod; for the eBPF detector
//! (whose procfs poll is a slow safety net) and the procfs poll at its default `WATCH_TIME`.
//! memprof runs in the host's PID namespace, so it also sees the machine's own processes, the
//! same in every run. Its CPU time is read from a CPU accounting cgroup that holds memprof
//! alone (nanoseconds, threads that ended included) over its mode's window, after `SETTLE`; its peak is
//! the kernel's `VmHWM`. Each row notes how many processes (and threads: `/proc/stat`'s
//! `processes`) the machine started in its window: memprof is woken by each exec, so a window
//! where other work ran reads high.
//!
//! Then churn: the same pod with 200 idle processes and, as exec probes and shells do, a loop
//! starting short-lived programs (`/bin/true`, then `sleep 0.1`: two each pass, about 20 a
//! second), for the eBPF detector (the poll does not hear of execs); its CPU per process the
//! machine started.
use std::{
    fs::File,
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{kill, median, results::Results};
use crate::workspace_root;

/// Idle processes beside memprof.
const COUNTS: [usize; 4] = [10, 200, 1000, 5000];
/// Detector flag, the mode's name in the table, and how long its CPU time is counted: for the
/// eBPF detector one whole period of the safety net's listing (every 30th round of 10 s, when
/// every process is read), so that each window holds one such round and the figure is the
/// long-run average; the poll's rounds are all alike.
const MODES: [(&str, &str, Duration); 2] = [
    ("btf", "ebpf", Duration::from_secs(300)),
    ("poll", "poll 500 ms", Duration::from_secs(30)),
];
/// From "memprof started" to the window: discovery, the first safety-net rounds and the first
/// endpoint sweep's full round (which a 12 s settle left inside the window).
const SETTLE: Duration = Duration::from_secs(30);
/// The idle processes' memory cgroup limit: room for 5,000 of them.
const LIMIT: u64 = 4 << 30;
/// The churn row: idle processes beside the loop, and its window.
const CHURN_PROCESSES: usize = 200;
const CHURN_WINDOW: Duration = Duration::from_secs(60);

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    let leaky = workspace_root().join("target/testapps/go-system/leaky");
    for (detector, mode, window) in MODES {
        for n in COUNTS {
            let (mut cpu, mut peak) = (Vec::new(), Vec::new());
            let (mut started, mut ms) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let m = measure(bin, &leaky, detector, n, window, false)?;
                cpu.push(m.cpu_ms_per_min);
                peak.push(m.peak_mib);
                started.push(m.started.to_string());
                ms.push(m.cpu_ms);
            }
            let name = format!("{mode}, {n} idle processes");
            results.add("idle CPU", &name, "ms/min", &cpu, None);
            // A minute holds 60,000 ms of one core.
            results.note(format!(
                "{:.3} % of a core; processes started in the window: {}",
                median(&cpu) / 600.0,
                started.join(", ")
            ));
            results.add("idle peak RSS", &name, "MiB", &peak, None);
        }
    }
    let (mut cpu, mut per_program) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let m = measure(bin, &leaky, "btf", CHURN_PROCESSES, CHURN_WINDOW, true)?;
        cpu.push(m.cpu_ms_per_min);
        per_program.push(m.cpu_ms * 1000.0 / m.started.max(1) as f64);
    }
    let name = format!("ebpf, {CHURN_PROCESSES} idle processes, ~20 programs started a second");
    results.add("churn CPU", &name, "ms/min", &cpu, None);
    results.note(format!("{:.3} % of a core", median(&cpu) / 600.0));
    results.add("churn CPU", &name, "µs/process", &per_program, None);
    results.note("memprof's CPU in the window over the processes the machine started in it".into());
    for group in ["idle CPU", "idle peak RSS", "churn CPU"] {
        results.print_group(group);
    }
    Ok(())
}

struct Measured {
    cpu_ms_per_min: f64,
    /// CPU time over the window, and the processes the machine started in it.
    cpu_ms: f64,
    started: u64,
    peak_mib: f64,
}

fn measure(
    bin: &Path,
    leaky: &Path,
    detector: &str,
    n: usize,
    window: Duration,
    churn: bool,
) -> Result<Measured> {
    let dir = std::env::temp_dir().join(format!("memprof-bench-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pod = kill::Cgroup::new("memprof-bench-idle", LIMIT)?;
    let idle = Idle::start(n, leaky, &pod.0, churn)?;
    let cpu = CpuCgroup::new("memprof-bench-idle-cpu")?;
    let log = dir.join("memprof.log");
    let mut cmd = kill::daemon(bin, &dir, &log)?;
    cmd.args(["--detector", detector]).stderr(Stdio::null());
    cpu.join(&mut cmd)?;
    let mut memprof = cmd.spawn()?;
    let measured = (|| {
        wait_started(&log)?;
        std::thread::sleep(SETTLE);
        let (before, forked, start) = (cpu.usage_ns()?, forks()?, Instant::now());
        std::thread::sleep(window);
        let cpu_ms = cpu.usage_ns()?.saturating_sub(before) as f64 / 1e6;
        Ok(Measured {
            cpu_ms_per_min: cpu_ms * 60.0 / start.elapsed().as_secs_f64(),
            cpu_ms,
            started: forks()?.saturating_sub(forked),
            peak_mib: peak_mib(memprof.id())?,
        })
    })();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(memprof.id() as i32, libc::SIGTERM) };
    let _ = memprof.wait();
    drop(idle);
    drop(cpu);
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

fn wait_started(log: &Path) -> Result<()> {
    let start = Instant::now();
    while !std::fs::read_to_string(log)?.contains("memprof started") {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("memprof did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Processes the machine has started since boot (`/proc/stat`'s `processes`: forks, each
/// program's exec follows one).
fn forks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("processes "))
        .context("processes in /proc/stat")?
        .trim()
        .parse()
        .context("processes in /proc/stat")
}

/// `VmHWM` of the process, in MiB.
fn peak_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmHWM in memprof's status")?;
    Ok(kib / 1024.0)
}

/// A shell holding the idle processes in its process group, in the memory cgroup `cgroup`,
/// and with `churn` a loop starting short-lived programs; all of them are killed on drop.
struct Idle(Child);

impl Idle {
    fn start(n: usize, leaky: &Path, cgroup: &Path, churn: bool) -> Result<Self> {
        let script = format!(
            "echo $$ > {cg}/cgroup.procs && for i in $(seq {n}); do sleep 3600 & done; \
             \"$0\" -rate 0 -addr 127.0.0.1:7401 & \"$0\" -rate 0 -addr 127.0.0.1:7402 & \
             \"$0\" -rate 0 -addr '' & {loop} wait",
            cg = cgroup.display(),
            loop = match churn {
                true => "while :; do /bin/true; sleep 0.1; done &",
                false => "",
            }
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .arg(leaky)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let idle = Self(child);
        let children = format!("/proc/{0}/task/{0}/children", idle.0.id());
        let start = Instant::now();
        while std::fs::read_to_string(&children)?
            .split_whitespace()
            .count()
            < n + 3
        {
            if start.elapsed() > Duration::from_secs(120) {
                bail!("{n} idle processes did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(idle)
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the group is the shell's own.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// A cgroup counting the CPU time of what joins it: v1's `cpuacct` where it is mounted,
/// else v2's `cpu.stat`. Removed on drop.
pub(super) struct CpuCgroup {
    dir: PathBuf,
    v1: bool,
}

impl CpuCgroup {
    pub(super) fn new(name: &str) -> Result<Self> {
        let v1 = Path::new("/sys/fs/cgroup/cpuacct");
        let (dir, v1) = match v1.join("cpuacct.usage").exists() {
            true => (v1.join(name), true),
            false => (Path::new("/sys/fs/cgroup").join(name), false),
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, v1 })
    }

    /// Makes `cmd`'s process join this cgroup before its exec.
    pub(super) fn join(&self, cmd: &mut Command) -> Result<()> {
        let procs = File::options()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        // SAFETY: the child only writes to a descriptor opened before the fork (no
        // allocation): "0" moves the writer, before its exec, into the CPU cgroup.
        unsafe {
            cmd.pre_exec(move || (&procs).write_all(b"0"));
        }
        Ok(())
    }

    /// CPU time used by its processes so far, in nanoseconds.
    pub(super) fn usage_ns(&self) -> Result<u64> {
        if self.v1 {
            let text = std::fs::read_to_string(self.dir.join("cpuacct.usage"))?;
            return Ok(text.trim().parse()?);
        }
        let text = std::fs::read_to_string(self.dir.join("cpu.stat"))?;
        let usec: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .context("usage_usec in cpu.stat")?
            .trim()
            .parse()?;
        Ok(usec * 1000)
    }
}

impl Drop for CpuCgroup {
    /// Retries while memprof finishes exiting.
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
