//! The profile taken at the kill: the kernel's walk of an OOM victim's Go heap, read in the
//! victim's own context as its SIGKILL arrived, becomes a symbolized profile stored next to
//! the threshold profiles of the same process, which it names.
use std::{sync::Arc, time::Instant};

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::{
    goheap::{self, kernel_walk, kernel_walk::KillRead},
    Capturer, Profile, PENDING_WAIT,
};

/// How long the at-kill profile waits for the kill's report to have read the charge.
const KILL_REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Turns the kernel's at-kill heap walks into stored profiles, each in its own task.
pub fn spawn(ring: RingBuf<MapData>, capturer: Arc<Capturer>) {
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(async move {
        if let Err(e) = kernel_walk::run(ring, tx).await {
            error!("heap ring buffer reader stopped: {e:#}; no more at-kill profiles");
        }
    });
    tokio::spawn(async move {
        while let Some(read) = rx.recv().await {
            let capturer = Arc::clone(&capturer);
            tokio::spawn(async move { capturer.at_kill(read).await });
        }
    });
}

impl Capturer {
    pub async fn at_kill(&self, r: KillRead) {
        let started = Instant::now();
        let Some(mut found) = self.goheap.by_pid(r.ns_pid) else {
            warn!(
                pid = r.ns_pid,
                "the kernel walked a heap memprof no longer knows; dropped"
            );
            return;
        };
        // The name it last ran under (its discovery may have seen it before its last exec).
        if let Some(seen) = self.seen.get(found.key) {
            found.comm = seen.comm;
        }
        // The runtime's memory as the kernel read it, for the accounting in this profile's
        // metadata and in the OOM record.
        let go_memory = found
            .go
            .stats
            .zip(r.go_stats)
            .map(|(place, words)| goheap::memstats::decode(&place, &words));
        self.note_kill_go(found.key, go_memory);
        // The kill's report (with the container's charge) comes through another ring and task,
        // usually first: a moment's wait lets this profile's metadata and line carry the split.
        let deadline = Instant::now() + KILL_REPORT_WAIT;
        while self.kill_accounting(found.key, false).is_none() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Taken now: the OOM record takes the kill's accounting once this profile is stored.
        let split = self.kill_accounting(found.key, false).map(|a| a.phrase());
        if r.rate == 0 && r.buckets.is_empty() {
            crate::metrics::capture("at_kill", "no_profile");
            warn!(
                pid = found.key.pid,
                comm = found.comm,
                "no at-kill profile: {}",
                goheap::PROFILING_OFF
            );
            return;
        }
        let mut comments = vec!["memprof: read by the kernel at the OOM kill".to_string()];
        let cut = r.buckets.iter().filter(|b| b.frames_cut > 0).count();
        let mut incomplete = Vec::new();
        if r.lost_live > 0 {
            incomplete.push(format!(
                "{} buckets holding live memory did not fit the ring buffer (MEMPROF_AT_KILL_RING)",
                r.lost_live
            ));
        }
        if r.lost_freed > 0 {
            // Sent last on purpose: they only add to the allocation counts.
            incomplete.push(format!(
                "{} buckets whose memory was all freed did not fit the ring buffer",
                r.lost_freed
            ));
        }
        if r.left_out > 0 {
            incomplete.push(format!(
                "{} buckets beyond the walk's cap left out",
                r.left_out
            ));
        }
        if r.failed || !r.ended {
            incomplete.push("the walk stopped early (unreadable memory or no end record)".into());
        }
        if cut > 0 {
            incomplete.push(format!("{cut} stacks cut at the kernel's depth limit"));
        }
        for i in &incomplete {
            comments.push(format!("memprof: truncated: {i}"));
        }
        let earlier = self
            .goheap
            .stored_after_pending(found.key, PENDING_WAIT)
            .await;
        if !earlier.is_empty() {
            comments.push(format!("memprof: preceded by {}", earlier.join(", ")));
        }
        let buckets = r.buckets.len();
        let go = found.go.clone();
        let mut r = r;
        for b in &mut r.buckets {
            for pc in &mut b.stack {
                *pc = pc.wrapping_add(go.text_base);
            }
        }
        let max_bytes = self.read_bounds.max_profile_bytes;
        let built = tokio::task::spawn_blocking(move || {
            goheap::build_profile(&go, &r.buckets, r.rate, comments, max_bytes)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|b| b);
        let bytes = match built {
            Ok(b) => b,
            Err(e) => {
                crate::metrics::capture("at_kill", "failed");
                warn!(
                    pid = found.key.pid,
                    comm = found.comm,
                    "building the at-kill profile failed: {e:#}"
                );
                return;
            }
        };
        let profile = Profile {
            kind: "heap",
            extension: "pb.gz",
            bytes,
        };
        let stored = self.store_kill_evidence(found.key, &found.comm, "kernel", &profile, started);
        let stored = stored.await;
        crate::metrics::capture(
            "at_kill",
            if stored.is_some() { "stored" } else { "failed" },
        );
        if let Some(key) = stored {
            // This profile is the episode's last: what grew since its first.
            let grew_most = self.grew_of(found.key).first().map(|g| g.phrase());
            info!(
                pid = found.key.pid,
                comm = found.comm,
                who = self.who(found.key.pid),
                key,
                buckets,
                bytes = profile.bytes.len(),
                walk_ms = format!("{:.2}", r.walk_ns as f64 / 1e6),
                truncated = incomplete.join("; "),
                earlier = earlier.join(","),
                memory = split.as_deref().unwrap_or("not read"),
                grew_most = grew_most.as_deref().unwrap_or("-"),
                "at-kill profile stored"
            );
        }
    }
}
