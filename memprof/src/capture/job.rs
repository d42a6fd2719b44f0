//! One capture, start to finish: check that the process serves a profile, fetch it, name it
//! and hand it to delivery; log one line saying what happened, and tell the policy.
use std::time::Instant;

use tracing::{info, warn};

use super::{listener, pprof::Pprof};
use crate::{
    assess::{policy::Outcome, Reading},
    deliver::{
        key::{object_key, KeyParts, Place},
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
}

impl Capturer {
    pub async fn capture(&self, c: &Candidate, reading: &Reading) -> Outcome {
        let pid = c.ns_pid;
        let percent = format!("{:.1}", reading.percent());
        if !listener::listens_on(pid, self.pprof.port()) {
            warn!(
                pid,
                comm = reading.comm,
                percent,
                port = self.pprof.port(),
                "over the threshold, but the process serves no pprof endpoint; nothing captured"
            );
            return Outcome::NoProfile;
        }
        let fetch_start = Instant::now();
        let profile = match self.pprof.capture().await {
            Ok(p) => p,
            Err(e) => {
                warn!(pid, comm = reading.comm, percent, "capture failed: {e:#}");
                return Outcome::Failed;
            }
        };
        let key = object_key(&KeyParts {
            prefix: &self.key_prefix,
            place: &self.place,
            comm: &reading.comm,
            pid,
            percent: reading.percent(),
            kind: profile.kind,
            extension: profile.extension,
            time: chrono::Utc::now(),
        });
        let detector = match c.source {
            Source::Kernel { .. } => "ebpf",
            Source::Retry => "retry",
            _ => "poll",
        };
        let store_start = Instant::now();
        let ms = |from: Instant, to: Instant| format!("{:.2}", (to - from).as_secs_f64() * 1e3);
        match self.deliverer.deliver(&key, &profile.bytes).await {
            Ok(()) => info!(
                pid,
                comm = reading.comm,
                rss = reading.rss,
                limit = reading.limit,
                limit_source = ?reading.limit_source,
                percent,
                bytes = profile.bytes.len(),
                key,
                detector,
                detect_to_stored_ms = ms(c.detected, Instant::now()),
                assess_ms = ms(c.detected, fetch_start),
                fetch_ms = ms(fetch_start, store_start),
                store_ms = ms(store_start, Instant::now()),
                "profile stored"
            ),
            // The spool keeps it and the retry loop delivers it: the capture itself is done.
            Err(e) => warn!(
                pid,
                key, "profile kept in the spool, delivery failed: {e:#}"
            ),
        }
        Outcome::Stored
    }
}
