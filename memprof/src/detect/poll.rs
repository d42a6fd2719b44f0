//! The procfs poll: every interval, every visible process becomes a candidate. It is the
//! detector when BPF is unavailable and, at a much longer interval, the safety net that
//! catches what the kernel path cannot (idle processes that were already large at start-up,
//! events lost to a full ring buffer, processes beyond the kernel map's capacity), re-reads
//! the limits of armed processes (so a resize is noticed) and re-arms processes that fell back
//! below the threshold. As a safety net it lists the processes only every `list_every` rounds,
//! each candidate carrying what the kernel's listing holds of it where that loaded (so that a
//! quiet process is passed over without a file opened); the rounds between send
//! one `Source::Known`, and the daemon reads only the processes it knows and the kernel does
//! not answer for (`daemon::safety_net`).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::mpsc::Sender;
use tracing::warn;

use super::{Candidate, Source};
use crate::kernel::{ListedProc, Listing};

pub async fn run(
    interval: Duration,
    list_every: u64,
    listing: Option<Listing>,
    tx: Sender<Candidate>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u64.. {
        ticker.tick().await;
        // One instant for the whole round: the daemon reads each cgroup's limit once per round.
        let detected = Instant::now();
        let candidate = |ns_pid, source, listed| Candidate {
            ns_pid,
            kernel: None,
            detected,
            source,
            listed,
        };
        if !round.is_multiple_of(list_every) {
            if tx.send(candidate(0, Source::Known, None)).await.is_err() {
                return;
            }
            continue;
        }
        let me = std::process::id();
        for (ns_pid, listed) in processes(listing.as_ref()) {
            if ns_pid != me
                && tx
                    .send(candidate(ns_pid, Source::Poll, listed))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
}

/// The processes to look at: the PIDs /proc lists, each with what the kernel's listing holds
/// of it. /proc names the processes, so that one the kernel's listing leaves out is still
/// looked at, at its procfs files: on the project's test machines the task iterator does not
/// visit PID 1 of the initial namespace (a supervisor whose namespace links even root may not
/// read; why, is not known), while in a PID namespace of its own it lists PID 1 too. Processes
/// the kernel lists without an address space (kernel threads) have no memory to watch and are
/// left out.
fn processes(listing: Option<&Listing>) -> Vec<(u32, Option<ListedProc>)> {
    let mut kernel: HashMap<u32, ListedProc> = match listing.map(Listing::list) {
        Some(Ok(listed)) => listed.into_iter().map(|p| (p.ns_pid, p)).collect(),
        Some(Err(e)) => {
            warn!("the kernel's listing failed, reading each process's files: {e}");
            HashMap::new()
        }
        None => HashMap::new(),
    };
    crate::sys::pidns::listed()
        .into_iter()
        .map(|pid| (pid, kernel.remove(&pid)))
        .filter(|(_, listed)| listed.is_none_or(|p| p.rss.is_some()))
        .collect()
}
