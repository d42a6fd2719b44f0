//! Benchmarks, every mode side by side in one run, printed and written to
//! `docs/benchmarks.md`, or another file there given by `--report` (`report.rs`):
//!
//! * the race against the OOM killer and the detection latency, eBPF vs polling at 500 and
//!   100 ms (`race.rs`, `race_table.rs`);
//! * each BPF program's cost per event, as the kernel counts it (`programs.rs`);
//! * the cost on a real Go HTTP service under load: requests per second, p50 and p99
//!   (`service.rs`);
//! * memprof's idle CPU and peak RSS beside 10 to 5,000 idle processes, per detector
//!   (`idle.rs`);
//! * page-fault overhead: a pure page-fault loop (fresh anonymous memory, 300 MiB × 7) with
//!   no memprof, and with memprof running each detector, in ABBA order (`page_faults.rs`); and
//!   with 0, 1, 8 and 32 sidecars, own or shared kernel programs (`shared.rs`);
//! * detection-to-stored latency: the end-to-end scenarios (real Go service, memory cgroup,
//!   S3 server, OOM killer) repeated, read from memprof's own "profile stored" log lines;
//! * the Go heap walks at the kill and at the threshold (`kill.rs`);
//! * a profile taken across network namespaces vs on the same loopback (`fetch.rs`);
//! * the container trigger's detection latency, notifications vs poll (`container.rs`);
//! * a large profile, 16 MiB and 1 GiB, to a local directory and to S3 (`large.rs`);
//! * memprof's own footprint: binary size, peak and settled RSS per detector (`footprint.rs`).
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

mod container;
mod discovery;
mod fetch;
mod footprint;
mod idle;
mod kill;
mod large;
mod page_faults;
mod plots;
mod programs;
mod race;
mod race_table;
mod report;
mod results;
mod s3;
mod service;
mod shared;
mod stamp;

use results::Results;

use page_faults::start_gated;
pub use programs::guest;

use crate::{build_release, cargo, workspace_root};

const CHUNK: usize = 300 << 20;
const PAGE: usize = 4096;

pub fn run(args: &[String]) -> Result<()> {
    let mut rounds = 12;
    let mut latency_runs = 5;
    let mut kill_runs = 5;
    let mut fetch_runs = 20;
    let mut container_runs = 4;
    let mut sidecar_rounds = 6;
    let mut large_runs = 2;
    let mut footprint_runs = 3;
    let mut discovery_runs = 3;
    let mut race_trials = 10;
    let mut program_runs = 3;
    let mut vm_program_runs = 1;
    let mut idle_runs = 1;
    let mut service_rounds = 12;
    let mut report = "benchmarks.md".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--report" {
            report = it.next().context("missing value")?.clone();
            if report.contains('/') || !report.ends_with(".md") {
                bail!("--report takes a file name in docs/ ending in .md, not {report}");
            }
            continue;
        }
        let mut value = || {
            it.next()
                .context("missing value")?
                .parse::<usize>()
                .context("not a number")
        };
        match a.as_str() {
            "--rounds" => rounds = value()?,
            "--latency-runs" => latency_runs = value()?,
            "--kill-runs" => kill_runs = value()?,
            "--fetch-runs" => fetch_runs = value()?,
            "--container-runs" => container_runs = value()?,
            "--sidecar-rounds" => sidecar_rounds = value()?,
            "--large-runs" => large_runs = value()?,
            "--footprint-runs" => footprint_runs = value()?,
            "--discovery-runs" => discovery_runs = value()?,
            "--race-trials" => race_trials = value()?,
            "--program-runs" => program_runs = value()?,
            "--vm-program-runs" => vm_program_runs = value()?,
            "--idle-runs" => idle_runs = value()?,
            "--service-rounds" => service_rounds = value()?,
            other => bail!(
                "unknown bench option {other} (use --rounds N, --latency-runs N, --kill-runs N, \
                 --fetch-runs N, --container-runs N, --sidecar-rounds N, --large-runs N, \
                 --footprint-runs N, --discovery-runs N, --race-trials N, --program-runs N, --vm-program-runs N, --idle-runs N, --service-rounds N, --report FILE)"
            ),
        }
    }
    crate::setup::all()?;
    let bin = build_release()?;
    let mut results = Results::default();
    let outcome = (|| {
        if race_trials > 0 {
            race::run(&bin, race_trials, &mut results)?;
        }
        if footprint_runs > 0 {
            footprint::run(&bin, footprint_runs, &mut results)?;
        }
        if rounds > 0 {
            page_faults::run(&bin, rounds, &mut results)?;
        }
        shared::run(&bin, sidecar_rounds, &mut results)?;
        if service_rounds > 0 {
            service::run(&bin, service_rounds, &mut results)?;
        }
        if idle_runs > 0 {
            idle::run(&bin, idle_runs, &mut results)?;
        }
        if program_runs > 0 {
            programs::run(&bin, program_runs, vm_program_runs, &mut results)?;
        }
        if latency_runs > 0 {
            latency(latency_runs, &mut results)?;
        }
        if kill_runs > 0 {
            kill::run(&bin, kill_runs, &mut results)?;
        }
        if fetch_runs > 0 {
            fetch::run(&bin, fetch_runs, &mut results)?;
        }
        if large_runs > 0 {
            large::run(&bin, large_runs, &mut results)?;
        }
        if discovery_runs > 0 {
            discovery::run(&bin, discovery_runs, &mut results)?;
        }
        container::run(&bin, container_runs, &mut results)
    })();
    // What was measured is shown also when a later measurement failed.
    results.print();
    report::write(&results, args, &report)?;
    outcome
}

/// Touches fresh anonymous pages: 7 × 300 MiB, each page faulted in once.
pub fn fault_loop() -> Duration {
    let start = Instant::now();
    for _ in 0..7 {
        let mut v = vec![0u8; CHUNK];
        for i in (0..CHUNK).step_by(PAGE) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
    }
    start.elapsed()
}

/// Waits until `child` (memprof, its stdout piped) says it started, then keeps draining its
/// output so it never blocks on a full pipe.
pub fn started(mut child: Child) -> Result<Child> {
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    for line in lines.by_ref() {
        if line?.contains("memprof started") {
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(child);
        }
    }
    bail!("exited before it started")
}

fn stop(mut child: Child) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// A child process killed (and reaped) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn median(v: &[f64]) -> f64 {
    results::summary(v).0
}

/// Runs the end-to-end scenarios `runs` times and collects memprof's detection-to-stored times.
fn latency(runs: usize, results: &mut Results) -> Result<()> {
    println!("\ndetection → stored in S3 (real Go service, 512 MiB cgroup, s3s-fs), {runs} runs per scenario");
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..runs {
        let out = cargo()
            .args([
                "test",
                "--release",
                "-p",
                "memprof",
                "--test",
                "tests",
                "--",
                "e2e::",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .current_dir(workspace_root())
            .stderr(Stdio::inherit())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            println!("{stdout}");
            bail!("end-to-end run failed");
        }
        for line in stdout.lines().filter(|l| l.contains("profile stored")) {
            let scenario = line.split(':').next().unwrap_or_default().to_string();
            let ms = line
                .split("detect_to_stored_ms=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(ms) = ms {
                times.entry(scenario).or_default().push(ms);
            }
        }
    }
    for (scenario, v) in times {
        results.add("detect → stored", &scenario, "ms", &v, None);
    }
    results.print_group("detect → stored");
    Ok(())
}
