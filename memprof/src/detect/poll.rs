//! The procfs poll: every interval, every visible process becomes a candidate. It is the
//! detector when BPF is unavailable and, at a much longer interval, the safety net that
//! catches what the kernel path cannot (idle processes that were already large at start-up,
//! events lost to a full ring buffer, processes beyond the kernel map's capacity), re-reads
//! the limits of armed processes (so a resize is noticed) and re-arms processes that fell back
//! below the threshold.
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::{Candidate, Source};

/// PIDs of all processes in memprof's /proc, except memprof itself.
pub fn visible_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .collect()
}

pub async fn run(interval: Duration, tx: Sender<Candidate>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let detected = Instant::now();
        for ns_pid in visible_pids() {
            let c = Candidate {
                ns_pid,
                kernel: None,
                detected,
                source: Source::Poll,
            };
            if tx.send(c).await.is_err() {
                return;
            }
        }
    }
}
