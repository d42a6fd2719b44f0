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
//! Nothing is pinned: on two cores, service and load generator take both, and memprof's work
//! competes with them for the CPU it needs wherever it runs, as it does beside a busy pod.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{container::wait_line, kill::daemon, Killed, Results};
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

/// What each load run measures, a bench of its own each (name, unit, the load generator's key).
const METRICS: [(&str, &str, &str); 3] = [
    ("service", "req/s", "rps"),
    ("service p50", "µs", "p50_us"),
    ("service p99", "µs", "p99_us"),
];

pub fn run(bin: &Path, rounds: usize, results: &mut Results) -> Result<()> {
    setup::build_testapps()?;
    let apps = workspace_root().join("target/testapps/go-system");
    println!(
        "\nservice: testapps/service under testapps/load (2 connections, {SETTLE:?} idle, \
         1 s warm-up + 5 s), {rounds} rounds, ABBA"
    );
    let mut service = Killed(
        Command::new(apps.join("service"))
            .args(["-addr", "127.0.0.1:0", "-cache", "64"])
            .stdout(Stdio::piped())
            .spawn()?,
    );
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
    let load = Load {
        bin: apps.join("load"),
        url,
        ids: items * 5 / 4,
    };
    // Uncounted: the heap grows to its collector's goal and the cache settles to its churn.
    load.measure("3s")?;

    let dir = std::env::temp_dir().join(format!("memprof-bench-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("memprof.log");
    // Per mode, per metric (in METRICS' order), one value per round.
    let mut samples: BTreeMap<&str, [Vec<f64>; 3]> = BTreeMap::new();
    // Per mode, memprof's own CPU while the load ran, in % of a core.
    let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
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
                let memprof = daemon(bin, &dir, &log)?
                    .args(flags)
                    .stderr(Stdio::inherit())
                    .spawn()?;
                let pid = memprof.id();
                let s =
                    wait_line(&log, "memprof started", Duration::from_secs(30)).and_then(|_| {
                        std::thread::sleep(SETTLE);
                        let before = cpu_ns(pid);
                        let s = load.measure("5s")?;
                        // The load's 1 s warm-up and 5 s measured: 6 s of one core.
                        let share = (cpu_ns(pid) - before) / 6e9 * 100.0;
                        cpu.entry(mode).or_default().push(share);
                        Ok(s)
                    });
                super::stop(memprof);
                s?
            };
            println!(
                "  {mode:<12} {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
                s[0], s[1], s[2]
            );
            for (all, v) in samples.entry(mode).or_default().iter_mut().zip(s) {
                all.push(v);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    for (i, (bench, unit, _)) in METRICS.into_iter().enumerate() {
        let base = super::median(&samples["none"][i]);
        for (mode, _) in MODES {
            results.add(bench, mode, unit, &samples[mode][i], Some(base));
        }
        results.print_group(bench);
    }
    // The service's own noise (~5 % per run here) hides a cost under 1 %; memprof's CPU time
    // during the same window is what it takes from the service's cores, to 0.01 %.
    for (mode, share) in &cpu {
        results.add("service: memprof's CPU", mode, "% core", share, None);
    }
    results.print_group("service: memprof's CPU");
    Ok(())
}

/// CPU time of every thread of `pid`, in ns (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

struct Load {
    bin: std::path::PathBuf,
    url: String,
    ids: usize,
}

impl Load {
    /// One closed-loop run of `duration` after a 1 s warm-up, its METRICS; any failed
    /// request fails it.
    fn measure(&self, duration: &str) -> Result<[f64; 3]> {
        let out = Command::new(&self.bin)
            .args(["-url", &self.url, "-conns", "2", "-warmup", "1s"])
            .args(["-duration", duration, "-ids", &self.ids.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        let line = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("the load generator failed: {line}");
        }
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
        let [a, b, c] = METRICS.map(|(_, _, key)| number(key));
        Ok([a?, b?, c?])
    }
}
