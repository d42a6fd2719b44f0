//! The run time the kernel charged to each of memprof's BPF programs, read at each scrape. The
//! kernel counts it only while `kernel.bpf_stats_enabled` is 1 (counting itself costs a
//! little on every run); otherwise the metrics are left out rather than shown as zero.
use std::sync::Mutex;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, MetricType},
};

/// memprof's programs, by kernel program id, and their names.
static WATCHED: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

/// Adds a program memprof loaded (or found shared) to the ones reported.
pub fn watch(id: u32, name: &str) {
    let mut watched = WATCHED.lock().expect("bpf metrics lock");
    if !watched.iter().any(|(i, _)| *i == id) {
        watched.push((id, name.to_string()));
    }
}

fn stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

/// (name, run time in ns, runs) of each watched program still loaded.
fn read() -> Vec<(String, u64, u64)> {
    let watched = WATCHED.lock().expect("bpf metrics lock").clone();
    if watched.is_empty() || !stats_enabled() {
        return Vec::new();
    }
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|info| {
            let (_, name) = watched.iter().find(|(id, _)| *id == info.id())?;
            let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            Some((name.clone(), ns, info.run_count()))
        })
        .collect()
}

#[derive(Debug)]
pub(super) struct Programs;

impl Collector for Programs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let programs = read();
        if programs.is_empty() {
            return Ok(());
        }
        let mut seconds = encoder.encode_descriptor(
            "bpf_program_run_seconds",
            "Time the kernel spent in each of memprof's BPF programs \
             (while kernel.bpf_stats_enabled is 1)",
            None,
            MetricType::Counter,
        )?;
        for (name, ns, _) in &programs {
            let labels = [("program", name.as_str())];
            ConstCounter::new(*ns as f64 / 1e9).encode(seconds.encode_family(&labels)?)?;
        }
        let mut runs = encoder.encode_descriptor(
            "bpf_program_runs",
            "Runs of each of memprof's BPF programs (while kernel.bpf_stats_enabled is 1)",
            None,
            MetricType::Counter,
        )?;
        for (name, _, count) in &programs {
            let labels = [("program", name.as_str())];
            ConstCounter::new(*count).encode(runs.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
