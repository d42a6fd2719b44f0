//! One capture at the threshold, start to finish: take the profile from the endpoint or from
//! the process's memory (`--go-heap`), name it, hand it to delivery, and log one line per
//! profile saying what happened; the outcome goes back to the policy.
use std::time::Instant;

use tracing::{info, warn};

use super::{goheap, listener, pprof::Pprof, Profile};
use crate::{
    assess::{policy::Outcome, ProcKey, Reading},
    config::GoHeapMode,
    deliver::{
        key::{object_key, KeyParts, Level, Place},
        Deliverer,
    },
    detect::{Candidate, Source},
};

/// Everything a capture needs, shared by the capture tasks.
pub struct Capturer {
    pub pprof: Pprof,
    pub deliverer: Deliverer,
    pub place: Place,
    pub key_prefix: String,
    pub go_heap: GoHeapMode,
    pub goheap: goheap::registry::Registry,
    pub read_bounds: goheap::read::Bounds,
}

/// Facts for naming and logging a profile.
pub struct Stored<'a> {
    /// The process, whose stored profiles the at-kill profile lists.
    pub proc: ProcKey,
    pub pid: u32,
    pub comm: &'a str,
    pub level: Level,
    pub source: &'static str,
    pub started: Instant,
}

impl Capturer {
    pub async fn capture(&self, c: &Candidate, reading: &Reading) -> Outcome {
        let _in_flight = self.goheap.begin(reading.key);
        let pid = c.ns_pid;
        let percent = format!("{:.1}", reading.percent());
        let endpoint =
            self.go_heap != GoHeapMode::Memory && listener::listens_on(pid, self.pprof.port());
        let mut outcome = Outcome::NoProfile;
        let fetch_start = Instant::now();
        if endpoint {
            match self.pprof.capture().await {
                Ok(p) => {
                    self.store(c, reading, p, "endpoint", fetch_start).await;
                    outcome = Outcome::Stored;
                }
                Err(e) => {
                    warn!(
                        pid,
                        comm = reading.comm,
                        percent,
                        "endpoint capture failed: {e:#}"
                    );
                    outcome = Outcome::Failed;
                }
            }
        }
        if self.go_heap == GoHeapMode::Endpoint && outcome == Outcome::Stored {
            return outcome;
        }
        let (registry, key, comm) = (self.goheap.clone(), reading.key, reading.comm.clone());
        let go = tokio::task::spawn_blocking(move || registry.ensure(key, &comm))
            .await
            .ok()
            .flatten();
        let Some(go) = go else {
            if outcome == Outcome::NoProfile {
                warn!(
                    pid,
                    comm = reading.comm,
                    percent,
                    port = self.pprof.port(),
                    "over the threshold, but the process serves no pprof endpoint and its heap \
                     cannot be read from memory (not Go, or see its discovery line); nothing \
                     captured"
                );
            }
            return outcome;
        };
        let read_start = Instant::now();
        let bounds = self.read_bounds;
        let result = tokio::task::spawn_blocking(move || goheap::read_profile(pid, &go, bounds))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        match result {
            Ok(read) => {
                let kind = if outcome == Outcome::Stored {
                    "heap-memory"
                } else {
                    "heap"
                };
                info!(
                    pid,
                    buckets = read.buckets,
                    read_ms = format!("{:.2}", read.read.as_secs_f64() * 1e3),
                    "heap read from process memory"
                );
                let p = Profile {
                    kind,
                    extension: "pb.gz",
                    bytes: read.bytes,
                };
                self.store(c, reading, p, "memory", read_start).await;
                Outcome::Stored
            }
            Err(e) => {
                warn!(
                    pid,
                    comm = reading.comm,
                    percent,
                    "reading the heap from memory failed: {e:#}"
                );
                if outcome == Outcome::Stored {
                    outcome
                } else {
                    Outcome::Failed
                }
            }
        }
    }

    async fn store(
        &self,
        c: &Candidate,
        reading: &Reading,
        profile: Profile,
        source: &'static str,
        fetch_start: Instant,
    ) {
        let detector = match c.source {
            Source::Kernel { .. } => "ebpf",
            Source::Retry => "retry",
            _ => "poll",
        };
        let (key, delivered) = self
            .deliver(
                Stored {
                    proc: reading.key,
                    pid: c.ns_pid,
                    comm: &reading.comm,
                    level: Level::Percent(reading.percent()),
                    source,
                    started: fetch_start,
                },
                &profile,
            )
            .await;
        let ms = |from: Instant, to: Instant| format!("{:.2}", (to - from).as_secs_f64() * 1e3);
        if delivered {
            info!(
                pid = c.ns_pid,
                comm = reading.comm,
                rss = reading.rss,
                limit = reading.limit,
                limit_source = ?reading.limit_source,
                percent = format!("{:.1}", reading.percent()),
                bytes = profile.bytes.len(),
                key,
                source,
                detector,
                detect_to_stored_ms = ms(c.detected, Instant::now()),
                assess_ms = ms(c.detected, fetch_start),
                "profile stored"
            );
        }
    }

    /// Names the profile and delivers it: its key, and whether it is stored already (otherwise
    /// it waits in the spool, and the retry loop delivers it). The key is remembered for the
    /// process before delivery starts, so an OOM kill during a slow upload still names it.
    pub async fn deliver(&self, s: Stored<'_>, profile: &Profile) -> (String, bool) {
        let key = object_key(&KeyParts {
            prefix: &self.key_prefix,
            place: &self.place,
            comm: s.comm,
            pid: s.pid,
            level: s.level,
            kind: profile.kind,
            extension: profile.extension,
            time: chrono::Utc::now(),
        });
        self.goheap.stored(s.proc, &key);
        match self.deliverer.deliver(&key, &profile.bytes).await {
            Ok(()) => (key, true),
            Err(e) => {
                warn!(
                    pid = s.pid,
                    key,
                    source = s.source,
                    took_ms = s.started.elapsed().as_millis() as u64,
                    "profile kept in the spool, delivery failed: {e:#}"
                );
                (key, false)
            }
        }
    }
}
