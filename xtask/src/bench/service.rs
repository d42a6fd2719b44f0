//! What memprof costs a real service: `testapps/service` (a Go JSON API answering each request
//! out of a 64 MiB LRU cache, 80 % hits, some KB of JSON encoded per request, net/http/pprof
//! on the same mux) driven by `testapps/load` (closed loop, two keep-alive connections, 1 s
//! uncounted then 5 s measured): requests per second and the p50 and p99 latency, with no
//! memprof and with memprof running each detector (tp_btf; the procfs poll every 500 ms, the
//! default, and every 100 ms), in ABBA order so that drift falls on every mode alike. This is
//! the cost the project promises to keep under 0.5 %; the page-fault loop in mod.rs is the
//! worst case, this is what a service sees.
//!
//! One service serves the whole run, as one would in production: its heap, cache and
//! connections are warm for every mode, and a fresh one would measure its own start-up.
//! memprof sees it all the same: it watches every process, those already running included.
//! The load generator, too, is one process for the whole run (`-stdin`, a run per line): memprof
//! meets it once, at its start, as it would a service's clients; a new client per window would
//! put that first sight (its executable read, its sockets looked at) into every window.
//! Nothing is pinned: on two cores, service and load generator take both, and memprof's work
//! competes with them for the CPU it needs wherever it runs, as it does beside a busy pod.
//!
//! The service's requests per second vary by ~5 % from one window to the next, more than the
//! cost looked for; two figures resolve less than that. Each round's ratio to the round's own
//! run without memprof (paired, so drift between rounds cancels), and the service's CPU time
//! per request (from its cgroup's CPU accounting: what the kernel programs cost it is spent in
//! its own context and shows there, while memprof's own CPU is measured beside it).
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Lines, Write},
    path::Path,
    process::{ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{container::wait_line, idle::CpuCgroup, kill::daemon, programs, Killed, Results};
use crate::{setup, workspace_root};

/// Each mode's name and memprof's flags (no memprof for "none").
const MODES: [(&str, &[&str]); 4] = [
    ("none", &[]),
    ("btf", &["--detector", "btf"]),
    (
        "poll 500 ms",
        &["--detector", "poll", "--watch-time", "500"],
    ),
    (
        "poll 100 ms",
        &["--detector", "poll", "--watch-time", "100"],
    ),
];

/// memprof's first seconds go to meeting every process (its executable parsed, its endpoint
/// probed): paid once, not what a service pays from then on. Every mode waits as long before
/// its load, memprof or not, so that the service idles alike (an idle Go heap is scavenged and
/// faulted back).
const SETTLE: Duration = Duration::from_secs(3);

/// What each load run measures, a bench of its own each (name, unit, the load generator's key;
/// the last is the service's CPU time per request, from its cgroup's CPU accounting).
const METRICS: [(&str, &str, &str); 4] = [
    ("service", "req/s", "rps"),
    ("service p50", "µs", "p50_us"),
    ("service p99", "µs", "p99_us"),
    ("service: CPU per request", "µs", ""),
];

/// With the kernel counting each BPF program's run time: memprof's programs run in the
/// service's own context, and what they take is added to memprof's CPU.
pub fn run(bin: &Path, rounds: usize, results: &mut Results) -> Result<()> {
    setup::build_testapps()?;
    programs::with_stats(|| measure(bin, rounds, results))
}

fn measure(bin: &Path, rounds: usize, results: &mut Results) -> Result<()> {
    let apps = workspace_root().join("target/testapps/go-system");
    println!(
        "\nservice: testapps/service under testapps/load (2 connections, {SETTLE:?} idle, \
         1 s warm-up + 5 s), {rounds} rounds, ABBA"
    );
    // CPU time from cgroups (cpuacct): a thread that exits mid-window (tokio's blocking pool
    // lets idle ones go) takes its time out of a sum over /proc/PID/task.
    let (service_cpu, memprof_cpu) = (
        CpuCgroup::new("memprof-bench-service-app")?,
        CpuCgroup::new("memprof-bench-service-memprof")?,
    );
    let mut cmd = Command::new(apps.join("service"));
    cmd.args(["-addr", "127.0.0.1:0", "-cache", "64"])
        .stdout(Stdio::piped());
    service_cpu.join(&mut cmd)?;
    let mut service = Killed(cmd.spawn()?);
    let mut ready = String::new();
    BufReader::new(service.0.stdout.take().context("the service's stdout")?)
        .read_line(&mut ready)?;
    let word = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .with_context(|| format!("no {name} in the service's line {ready:?}"))
    };
    let url = format!("http://{}/item", word("addr=")?);
    let items: usize = word("items=")?.parse()?;
    // Uniform over 1.25 × what the cache holds: 80 % hits.
    let mut load = Load::start(&apps.join("load"), &url, items * 5 / 4, &service_cpu)?;
    // Uncounted: the heap grows to its collector's goal and the cache settles to its churn.
    load.measure("3s")?;

    let dir = std::env::temp_dir().join(format!("memprof-bench-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("memprof.log");
    // Per mode, per metric (in METRICS' order), one value per round.
    let mut samples: BTreeMap<&str, [Vec<f64>; 4]> = BTreeMap::new();
    // Per mode, memprof's CPU while the load ran (its process's and its kernel programs'): in %
    // of a core, and in % of the CPU the service used meanwhile.
    let mut cpu: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for round in 0..rounds {
        let mut order = MODES.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for (mode, flags) in order {
            let s = if flags.is_empty() {
                std::thread::sleep(SETTLE);
                load.measure("5s")?
            } else {
                let mut cmd = daemon(bin, &dir, &log)?;
                cmd.args(flags).stderr(Stdio::inherit());
                memprof_cpu.join(&mut cmd)?;
                let memprof = cmd.spawn()?;
                let pid = memprof.id();
                let s =
                    wait_line(&log, "memprof started", Duration::from_secs(30)).and_then(|_| {
                        std::thread::sleep(SETTLE);
                        // memprof's programs, by the descriptors it holds; their run time is
                        // every run of them on the machine (the service's faults and the load
                        // generator's alike), the kernel's accounting on (a little more each).
                        let mine = program_ids(pid);
                        let kernel_ns = || -> u64 {
                            programs::snapshot()
                                .into_iter()
                                .filter(|(id, _)| mine.contains(id))
                                .map(|(_, (_, ns, _))| ns)
                                .sum()
                        };
                        let before = (memprof_cpu.usage_ns()?, service_cpu.usage_ns()?);
                        let (programs_before, start) = (kernel_ns(), Instant::now());
                        let s = load.measure("5s")?;
                        let used = (memprof_cpu.usage_ns()? - before.0) as f64
                            + kernel_ns().saturating_sub(programs_before) as f64;
                        let window = start.elapsed().as_secs_f64();
                        let served = (service_cpu.usage_ns()? - before.1) as f64;
                        let (core, of_service) = cpu.entry(mode).or_default();
                        core.push(used / 1e9 / window * 100.0);
                        of_service.push(used / served * 100.0);
                        Ok(s)
                    });
                super::stop(memprof);
                s?
            };
            println!(
                "  {mode:<12} {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  {:>6.1} µs CPU/request",
                s[0], s[1], s[2], s[3]
            );
            for (all, v) in samples.entry(mode).or_default().iter_mut().zip(s) {
                all.push(v);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    for (i, (bench, unit, _)) in METRICS.into_iter().enumerate() {
        let none = &samples["none"][i];
        let base = super::median(none);
        for (mode, _) in MODES {
            results.add(bench, mode, unit, &samples[mode][i], Some(base));
            if mode != "none" {
                results.note(paired(&samples[mode][i], none));
            }
        }
        results.print_group(bench);
    }
    // The service's own noise (~5 % per run here) hides a cost under 1 %; memprof's CPU time
    // during the same window (its process's and its programs') is what it takes from the
    // service's cores, to 0.01 %, and beside the service's own CPU, what it costs the service.
    for (mode, (core, of_service)) in &cpu {
        results.add("service: memprof's CPU", mode, "% core", core, None);
        results.note(format!(
            "{:.2} % of the service's own CPU meanwhile (median)",
            super::median(of_service)
        ));
    }
    results.print_group("service: memprof's CPU");
    Ok(())
}

/// The ids of the BPF programs `pid` holds (its descriptors' `prog_id`).
fn program_ids(pid: u32) -> BTreeSet<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
        })
        .collect()
}

/// Each round's change from the same round's run without memprof: their median, and the
/// middle half of them (between the lower and upper quartiles, nearest rank).
fn paired(mode: &[f64], none: &[f64]) -> String {
    let mut change: Vec<f64> = mode
        .iter()
        .zip(none)
        .map(|(m, n)| (m / n - 1.0) * 100.0)
        .collect();
    change.sort_by(f64::total_cmp);
    let n = change.len();
    if n == 0 {
        return String::new();
    }
    let median = (change[(n - 1) / 2] + change[n / 2]) / 2.0;
    format!(
        "paired: {median:+.1}% (middle half {:+.1} to {:+.1}%)",
        change[n / 4],
        change[n - 1 - n / 4]
    )
}

/// The load generator (`-stdin`), running for the whole bench, and the service it measures.
struct Load<'a> {
    child: Killed,
    to: ChildStdin,
    from: Lines<BufReader<ChildStdout>>,
    service: &'a CpuCgroup,
}

impl<'a> Load<'a> {
    fn start(bin: &Path, url: &str, ids: usize, service: &'a CpuCgroup) -> Result<Self> {
        let mut child = Killed(
            Command::new(bin)
                .args(["-url", url, "-conns", "2", "-warmup", "1s", "-stdin"])
                .args(["-ids", &ids.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?,
        );
        let to = child.0.stdin.take().context("the load generator's stdin")?;
        let from = BufReader::new(child.0.stdout.take().context("its stdout")?).lines();
        Ok(Self {
            child,
            to,
            from,
            service,
        })
    }

    /// One closed-loop run of `duration` after a 1 s warm-up, its METRICS; any failed
    /// request fails it.
    fn measure(&mut self, duration: &str) -> Result<[f64; 4]> {
        let before = self.service.usage_ns()?;
        writeln!(self.to, "{duration}")?;
        let line = match self.from.next() {
            Some(line) => line?,
            None => bail!("the load generator ended ({:?})", self.child.0.wait()),
        };
        // The service's CPU over the warm-up and the measured part, per request of both.
        let cpu_ns = (self.service.usage_ns()? - before) as f64;
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the load generator's line {line:?}"))?;
        let number = |key: &str| {
            v[key]
                .as_f64()
                .with_context(|| format!("no {key} in {line:?}"))
        };
        if number("errors")? > 0.0 {
            bail!("requests failed: {line}");
        }
        let [a, b, c] = [0, 1, 2].map(|i| number(METRICS[i].2));
        let per_request = cpu_ns / 1e3 / number("sent")?.max(1.0);
        Ok([a?, b?, c?, per_request])
    }
}
