//! `memprof top`: the processes memprof would watch, refreshed like `top` — who each is
//! (namespace/pod/container), RSS, limit, percent, the first level memprof captures at, and the
//! pprof endpoint found (`memory` for a Go program whose heap memprof reads without one).
use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Result;
use tokio::task::JoinSet;

use super::{human, interactive};
use crate::{
    assess::{Assessor, LimitSource, Reading},
    capture::{
        goheap::registry::Registry,
        http::{endpoint::Endpoints, pprof::Pprof},
    },
    config::Config,
};

/// How long a screen with another after it waits for endpoint probes (the rest finish for
/// the next screen). The last screen (`--iterations N`, as a script reads it) waits for every
/// probe, each bounded by the capture timeout, so that what it prints is complete.
const PROBE_WAIT: Duration = Duration::from_millis(1500);

pub async fn run(cfg: &Config, interval: Duration, iterations: u64) -> Result<()> {
    let mut assessor = Assessor::new(Some(cfg.pods_dir.clone()))?;
    let pprof = Pprof::new(
        cfg.pprof_port,
        &cfg.pprof_path,
        cfg.capture_timeout,
        cfg.capture_max_bytes,
    );
    let go = Registry::new(None);
    let endpoints = Endpoints::new(Arc::new(pprof), cfg.pprof_ports.clone(), go.clone());
    // Whether each process's Go heap is readable from memory, once decided.
    let mut readable = HashMap::new();
    let levels: Vec<String> = cfg.levels_pct.iter().map(u8::to_string).collect();
    let levels = levels.join(",");
    let mut screen = 0u64;
    loop {
        let mut readings: Vec<Reading> = pids()
            .into_iter()
            .filter(|&pid| pid != std::process::id())
            .filter_map(|pid| assessor.read(pid))
            .collect();
        assessor.retain(|k| readings.iter().any(|r| r.key == *k));
        readable.retain(|k, _| readings.iter().any(|r| r.key == *k));
        go.sweep(|k| readings.iter().any(|r| r.key == *k));
        let mut probes = JoinSet::new();
        for r in &readings {
            if endpoints.get(r.key).is_none() {
                let (e, go, key, comm) = (endpoints.clone(), go.clone(), r.key, r.comm.clone());
                probes.spawn(async move {
                    let c = comm.clone();
                    let heap = tokio::task::spawn_blocking(move || go.ensure(key, &c));
                    let heap = heap.await.ok().flatten().is_some();
                    e.find(key, &comm, true).await;
                    (key, heap)
                });
            }
        }
        let last = iterations != 0 && screen + 1 >= iterations;
        let wait = if last {
            cfg.capture_timeout.max(PROBE_WAIT)
        } else {
            PROBE_WAIT
        };
        let _ = tokio::time::timeout(wait, async {
            while let Some(done) = probes.join_next().await {
                if let Ok((key, heap)) = done {
                    readable.insert(key, heap);
                }
            }
        })
        .await;
        readings.sort_by(|a, b| b.percent().total_cmp(&a.percent()));
        let mut out = String::new();
        if interactive() {
            out.push_str("\x1b[H\x1b[2J");
        }
        out.push_str(&format!(
            "memprof top — {} processes, capture at {}% of the limit, {}\n",
            readings.len(),
            levels,
            chrono::Utc::now().format("%H:%M:%S UTC")
        ));
        out.push_str(&format!(
            "{:>7}  {:<40} {:<16} {:>9} {:>9} {:>6} {:>9}  {}\n",
            "PID", "NAMESPACE/POD/CONTAINER", "COMM", "RSS", "LIMIT", "%", "AT", "ENDPOINT"
        ));
        for r in &readings {
            let endpoint = match endpoints.get(r.key) {
                Some(addr) => addr.to_string(),
                None if readable.get(&r.key) == Some(&true) => "memory".into(),
                None => "-".into(),
            };
            out.push_str(&format!(
                "{:>7}  {:<40} {:<16} {:>9} {:>9} {:>6.1} {:>9}  {}\n",
                r.key.pid,
                // Both are the process's to choose: no control character reaches the terminal.
                r.identity.describe().escape_debug().to_string(),
                r.comm.escape_debug().to_string(),
                human(r.rss),
                human(r.limit),
                r.percent(),
                human(match cfg.levels_bytes.first() {
                    Some(b) if r.limit_source != LimitSource::Cgroup => *b,
                    _ => r.limit / 100 * u64::from(cfg.levels_pct[0]),
                }),
                endpoint
            ));
        }
        print!("{out}");
        if last {
            return Ok(());
        }
        screen += 1;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Every PID memprof can see.
fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}
