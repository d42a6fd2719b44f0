//! One capture at the threshold, start to finish: take the profile from the endpoint or from
//! the process's memory (`--go-heap`), name it, hand it to delivery, and log one line per
//! profile saying what happened; the outcome goes back to the policy.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{
    goheap, handover::Stored, http::download::Downloaded, http::pprof::Failure,
    snapshot::EvidenceRead, Capturer, Profile,
};
use crate::{
    assess::{policy::Outcome, Reading},
    config::GoHeapMode,
    detect::{Candidate, Source},
};

/// How long a capture may go without a profile taken before its evidence is stored.
const EVIDENCE_GRACE: Duration = Duration::from_millis(500);

/// What a capture did: the outcome for the policy, and the keys of what it stored.
pub struct Captured {
    pub outcome: Outcome,
    pub keys: Vec<String>,
}

impl Capturer {
    /// Takes a profile; when none could be taken, a snapshot in its place (once per
    /// crossing: retries of the crossing do not store another). The snapshot's files are read
    /// at once, and stored as soon as `EVIDENCE_GRACE` passes without a profile taken: an
    /// endpoint that hangs until the kill does not hold the evidence back.
    pub async fn capture(&self, c: &Candidate, reading: &Reading) -> Captured {
        let mut keys = Vec::new();
        let mut failed = None;
        let first = !matches!(c.source, Source::Retry);
        let mut evidence = first.then(|| self.evidence(c, reading));
        let taken = Arc::new(AtomicBool::new(false));
        let capture = self.capture_into(c, reading, &mut keys, &mut failed, &taken);
        let (outcome, early) = match &mut evidence {
            Some(evidence) => {
                self.evidence_by_grace(capture, c, reading, evidence, &taken)
                    .await
            }
            None => (capture.await, None),
        };
        let late = match (&mut evidence, early) {
            (Some(evidence), None) if outcome != Outcome::Stored => {
                let (why, answer) = match &failed {
                    Some(f) => (format!("{:#}", f.error), Some(&f.answer)),
                    None => (
                        "no pprof endpoint, and no heap readable from memory".into(),
                        None,
                    ),
                };
                let evidence = evidence.get().await;
                self.store_snapshot(c, reading, evidence, &why, answer)
                    .await
            }
            (_, early) => early.flatten(),
        };
        keys.extend(late);
        if outcome == Outcome::Stored {
            crate::metrics::stored_after(c.detected.elapsed());
        }
        Captured { outcome, keys }
    }

    /// Runs `capture`; should no profile be coming within `EVIDENCE_GRACE` (`taken`: the
    /// endpoint is sending one, or the heap was read from memory), stores `evidence` beside it
    /// (its key, once stored, in the second place).
    async fn evidence_by_grace(
        &self,
        capture: impl std::future::Future<Output = Outcome>,
        c: &Candidate,
        reading: &Reading,
        evidence: &mut EvidenceRead,
        taken: &AtomicBool,
    ) -> (Outcome, Option<Option<String>>) {
        tokio::pin!(capture);
        tokio::select! {
            outcome = &mut capture => return (outcome, None),
            _ = tokio::time::sleep(EVIDENCE_GRACE) => {}
        }
        if taken.load(Ordering::Relaxed) {
            return (capture.await, None);
        }
        let why = format!(
            "no profile within {EVIDENCE_GRACE:?} of the crossing (the capture went on; \
             memprof's log says how it ended)"
        );
        let store = async {
            let evidence = evidence.get().await;
            self.store_snapshot(c, reading, evidence, &why, None).await
        };
        let (stored, outcome) = tokio::join!(store, capture);
        (outcome, Some(stored))
    }

    async fn capture_into(
        &self,
        c: &Candidate,
        reading: &Reading,
        keys: &mut Vec<String>,
        failed: &mut Option<Failure>,
        taken: &Arc<AtomicBool>,
    ) -> Outcome {
        let _in_flight = self.goheap.begin(reading.key);
        let pid = c.ns_pid;
        self.note_memory(pid, reading.key);
        let percent = format!("{:.1}", reading.percent());
        let endpoint = match self.go_heap {
            GoHeapMode::Memory => None,
            _ => self.endpoints.find(reading.key, &reading.comm, false).await,
        };
        let mut outcome = Outcome::NoProfile;
        let fetch_start = Instant::now();
        if let Some(addr) = endpoint {
            let download = What::Download(addr);
            match self
                .store(c, reading, download, "endpoint", fetch_start, taken)
                .await
            {
                Ok(key) => {
                    keys.extend(key);
                    outcome = Outcome::Stored;
                }
                Err(f) => {
                    warn!(
                        pid,
                        comm = reading.comm,
                        percent,
                        "endpoint capture failed: {:#}",
                        f.error
                    );
                    *failed = Some(f);
                    outcome = Outcome::Failed;
                }
            }
        }
        if self.go_heap == GoHeapMode::Endpoint && outcome == Outcome::Stored {
            return outcome;
        }
        if self.go_heap == GoHeapMode::EndpointOnly {
            if outcome == Outcome::NoProfile {
                warn!(
                    pid,
                    comm = reading.comm,
                    percent,
                    "nothing captured: no pprof endpoint was found on the process's ports \
                     (MEMPROF_GO_HEAP=endpoint-only reads no process memory)"
                );
            }
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
                    "nothing captured: no pprof endpoint was found on the process's ports and its \
                     heap cannot be read from memory (not Go, or see its discovery line)"
                );
            }
            return outcome;
        };
        let read_start = Instant::now();
        let bounds = self.read_bounds;
        let permit = Arc::clone(&self.reads).acquire_owned().await;
        let read_done = Arc::clone(taken);
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            goheap::read_profile(pid, &go, bounds, || {
                read_done.store(true, Ordering::Relaxed)
            })
        })
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
                let stored = self.store(c, reading, What::Taken(p), "memory", read_start, taken);
                keys.extend(stored.await.ok().flatten());
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

    /// Delivers one profile (taken already, or downloaded now) and logs it; its key once
    /// stored (not while it waits in the spool).
    async fn store(
        &self,
        c: &Candidate,
        reading: &Reading,
        what: What,
        source: &'static str,
        fetch_start: Instant,
        taken: &AtomicBool,
    ) -> Result<Option<String>, Failure> {
        let (detector, level) = self.labels(c, reading);
        let s = Stored {
            proc: reading.key,
            pid: c.ns_pid,
            comm: &reading.comm,
            level,
            source,
            detector: &detector,
            started: fetch_start,
        };
        let d = match what {
            What::Taken(profile) => {
                let fetched = fetch_start.elapsed();
                let (key, delivered) = self.deliver(s, &profile).await;
                let bytes = profile.bytes.len() as u64;
                Downloaded {
                    key,
                    delivered,
                    bytes,
                    fetched,
                }
            }
            What::Download(addr) => self.download(s, addr, taken).await?,
        };
        let ms = |from: Instant, to: Instant| {
            format!(
                "{:.2}",
                to.saturating_duration_since(from).as_secs_f64() * 1e3
            )
        };
        if !d.delivered {
            return Ok(None);
        }
        info!(
            pid = c.ns_pid,
            comm = reading.comm,
            who = self.who_of(&reading.identity),
            rss = reading.rss,
            limit = reading.limit,
            limit_source = ?reading.limit_source,
            percent = format!("{:.1}", reading.percent()),
            bytes = d.bytes,
            key = d.key,
            source,
            detector = detector.as_str(),
            detect_to_stored_ms = ms(c.detected, Instant::now()),
            decide_ms = ms(c.detected, reading.at),
            assess_ms = ms(c.detected, fetch_start),
            fetch_ms = format!("{:.2}", d.fetched.as_secs_f64() * 1e3),
            "profile stored"
        );
        Ok(Some(d.key))
    }
}

/// A profile to store: taken already (read from memory), or to be downloaded from an endpoint
/// straight into the spool.
enum What {
    Taken(Profile),
    Download(SocketAddr),
}
