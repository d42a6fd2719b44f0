//! What each of memprof's BPF programs costs per event, as the kernel counts it
//! (`kernel.bpf_stats_enabled=1`: run time and run count per program), for both hooks: the
//! page-fault loop drives `rss_stat`, and a burst of short processes drives exec and exit.
//! The statistics are switched on only for the measurement (counting costs a little on every
//! run) and put back as they were.
use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result};

use super::{fault_loop, start_gated, stop, Results};

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
const HOOKS: [&str; 2] = ["btf", "classic"];

/// Kernel program id → (name, run time ns, runs).
pub(super) fn snapshot() -> BTreeMap<u32, (String, u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| {
            let name = p.name_as_str().unwrap_or("?").to_string();
            let ns = u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX);
            (p.id(), (name, ns, p.run_count()))
        })
        .collect()
}

/// Measures here, then on 6.1 in the VM (`vm_runs` runs, none: skipped).
pub fn run(bin: &Path, runs: usize, vm_runs: usize, results: &mut Results) -> Result<()> {
    println!(
        "\nper-event cost of each BPF program (kernel.bpf_stats_enabled), {runs} runs per hook"
    );
    for (mode, samples, events) in with_stats(|| measure(bin, runs))? {
        results.add("per-event cost", &mode, "ns", &samples, None);
        results.note(format!("{events} events counted"));
    }
    results.print_group("per-event cost");
    if vm_runs > 0 {
        on_6_1(bin, vm_runs, results)?;
    }
    Ok(())
}

/// `cargo xtask bench-guest MEMPROF RUNS`, in the 6.1 guest: the same measurement, printed
/// one line per program for the host to read.
pub fn guest(args: &[String]) -> Result<()> {
    let [bin, runs] = args else {
        anyhow::bail!("usage: bench-guest MEMPROF RUNS");
    };
    for (mode, samples, events) in with_stats(|| measure(Path::new(bin), runs.parse()?))? {
        let samples: Vec<String> = samples.iter().map(|s| format!("{s:.2}")).collect();
        println!("{GUEST_LINE}{mode}\t{}\t{events}", samples.join(","));
    }
    Ok(())
}

const GUEST_LINE: &str = "== per-event ";

/// Boots the 6.1 guest (cgroup v2, emulated: no KVM here) and runs the measurement there.
fn on_6_1(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    println!("\nthe same on 6.1 (the VM, emulated by qemu without KVM: times are inflated)");
    let xtask = std::env::current_exe()?;
    let guest = crate::vm::boot(
        &format!("{} bench-guest {} {runs}; ", xtask.display(), bin.display()),
        true,
    )?;
    let out = guest.finish(Duration::from_secs(20 * 60))?;
    for line in out
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(GUEST_LINE))
    {
        let mut f = line.split('\t');
        let (Some(mode), Some(samples), Some(events)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let samples: Vec<f64> = samples.split(',').filter_map(|s| s.parse().ok()).collect();
        results.add("per-event cost, 6.1 (emulated)", mode, "ns", &samples, None);
        results.note(format!("{events} events counted"));
    }
    results.print_group("per-event cost, 6.1 (emulated)");
    Ok(())
}

/// Runs `f` with the kernel's BPF statistics on, and puts the setting back.
pub(super) fn with_stats<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let was = std::fs::read_to_string(STATS).context("reading kernel.bpf_stats_enabled")?;
    std::fs::write(STATS, "1")?;
    let outcome = f();
    let _ = std::fs::write(STATS, was.trim());
    outcome
}

/// Per program ("hook: name"): ns per event of each run, and the events counted in all.
fn measure(bin: &Path, runs: usize) -> Result<Vec<(String, Vec<f64>, u64)>> {
    let mut out = Vec::new();
    let dir = std::env::temp_dir().join(format!("memprof-bench-progs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for hook in HOOKS {
        // name → per-run ns/event samples, and the events counted
        let mut per_event: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
        for _ in 0..runs {
            let others = snapshot();
            // The gate off: each program is measured on its hook.
            let (memprof, _) = start_gated(bin, hook, &dir, false)?;
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
            out.push((format!("{hook}: {name}"), samples, events));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
