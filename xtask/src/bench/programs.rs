//! What each of memprof's BPF programs costs per event, as the kernel counts it
//! (`kernel.bpf_stats_enabled=1`: run time and run count per program), for both hooks: the
//! page-fault loop drives `rss_stat`, and a burst of short processes drives exec and exit.
//! The statistics are switched on only for the measurement (counting costs a little on every
//! run) and put back as they were.
use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result};

use super::{fault_loop, start_memprof, stop, Results};

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
const HOOKS: [&str; 2] = ["btf", "classic"];

/// Kernel program id → (name, run time ns, runs).
fn snapshot() -> BTreeMap<u32, (String, u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| {
            let name = p.name_as_str().unwrap_or("?").to_string();
            let ns = u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX);
            (p.id(), (name, ns, p.run_count()))
        })
        .collect()
}

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    let was = std::fs::read_to_string(STATS).context("reading kernel.bpf_stats_enabled")?;
    std::fs::write(STATS, "1")?;
    let outcome = measure(bin, runs, results);
    let _ = std::fs::write(STATS, was.trim());
    outcome
}

fn measure(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    println!(
        "\nper-event cost of each BPF program (kernel.bpf_stats_enabled), {runs} runs per hook"
    );
    let dir = std::env::temp_dir().join(format!("memprof-bench-progs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for hook in HOOKS {
        // name → per-run ns/event samples, and the events counted
        let mut per_event: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
        for _ in 0..runs {
            let others = snapshot();
            let memprof = start_memprof(bin, hook, &dir)?;
            std::thread::sleep(Duration::from_secs(1));
            let before = snapshot();
            fault_loop();
            for _ in 0..200 {
                Command::new("/bin/true").status()?;
            }
            let after = snapshot();
            stop(memprof);
            for (id, (name, ns, count)) in after {
                let Some((_, ns0, count0)) = before.get(&id).filter(|_| !others.contains_key(&id))
                else {
                    continue;
                };
                let runs = count.saturating_sub(*count0);
                if runs == 0 {
                    continue;
                }
                let entry = per_event.entry(name).or_default();
                entry.0.push(ns.saturating_sub(*ns0) as f64 / runs as f64);
                entry.1 += runs;
            }
        }
        for (name, (samples, events)) in per_event {
            results.add(
                "per-event cost",
                &format!("{hook}: {name}"),
                "ns",
                &samples,
                None,
            );
            results.note(format!("{events} events counted"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    results.print_group("per-event cost");
    Ok(())
}
