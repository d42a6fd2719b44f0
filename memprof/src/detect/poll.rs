//! The procfs poll: every interval, every visible process becomes a candidate. It is the
//! detector when BPF is unavailable and, at a much longer interval, the safety net that
//! catches what the kernel path cannot (idle processes that were already large at start-up,
//! events lost to a full ring buffer, processes beyond the kernel map's capacity), re-reads
//! the limits of armed processes (so a resize is noticed) and re-arms processes that fell back
//! below the threshold. As a safety net it lists the processes only every `list_every` rounds;
//! the rounds between send one `Source::Known`, and the daemon reads only the processes it
//! knows and the kernel does not answer for (`daemon::safety_net`).
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::{Candidate, Source};

pub async fn run(interval: Duration, list_every: u64, tx: Sender<Candidate>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u64.. {
        ticker.tick().await;
        // One instant for the whole round: the daemon reads each cgroup's limit once per round.
        let detected = Instant::now();
        let candidate = |ns_pid, source| Candidate {
            ns_pid,
            kernel: None,
            detected,
            source,
        };
        if !round.is_multiple_of(list_every) {
            if tx.send(candidate(0, Source::Known)).await.is_err() {
                return;
            }
            continue;
        }
        let me = std::process::id();
        for ns_pid in crate::sys::pidns::listed().into_iter().filter(|&p| p != me) {
            if tx.send(candidate(ns_pid, Source::Poll)).await.is_err() {
                return;
            }
        }
    }
}
