//! What follows a decision: arming the kernel at a level or starting a capture, and what a
//! finished capture means for the policy (the next level, a retry, or nothing).
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use super::{LoopState, Trigger};
use crate::{
    assess::{
        policy::{Decision, HoldReason, Outcome, Retry, RETRY_BACKOFF},
        ProcKey, Reading,
    },
    detect::{Candidate, Source},
};

impl LoopState {
    /// Carries out the policy's decision on a reading: arms the kernel, or starts a capture
    /// within the capture rate limit, or says why not.
    pub(super) fn decided(&mut self, c: Candidate, reading: Reading, decision: Decision) {
        let key = reading.key;
        match decision {
            Decision::Arm(level) => self.arm_level(key, level, &reading),
            Decision::Capture => match self.rate.allow(Instant::now(), &self.assessor.tenant(&key))
            {
                Err(rule) => {
                    crate::metrics::suppressed(rule);
                    warn!(
                        pid = key.pid,
                        comm = reading.comm,
                        rule,
                        per_minute = self.rate.per_minute(),
                        "capture suppressed by the capture rate limit"
                    );
                    self.finished(key, Outcome::Failed);
                }
                Ok(()) => {
                    crate::metrics::detection(c.source.detector(), "process");
                    let capturer = Arc::clone(&self.capturer);
                    self.captures.spawn(async move {
                        let outcome = capturer.capture(&c, &reading).await.outcome;
                        (Trigger::Process(key), outcome)
                    });
                }
            },
            Decision::Hold(HoldReason::Cooldown) => {
                crate::metrics::suppressed("MEMPROF_COOLDOWN_SECS");
                info!(
                    pid = key.pid,
                    comm = reading.comm,
                    rule = "MEMPROF_COOLDOWN_SECS",
                    "capture suppressed: this level was captured within the cooldown"
                )
            }
            Decision::Hold(reason) => debug!(pid = c.ns_pid, ?reason, "above threshold, holding"),
        }
    }

    pub(super) fn arm_level(&mut self, key: ProcKey, level: u64, reading: &Reading) {
        let record = self.table.get(&key);
        let (Some(arm), Some(k)) = (&self.arm, record.and_then(|r| r.kernel)) else {
            return;
        };
        if record.and_then(|r| r.armed) == Some(level) {
            return;
        }
        match arm.set(&k, level, reading.counters) {
            Ok(()) => {
                if let Some(r) = self.table.get_mut(&key) {
                    r.armed = Some(level);
                }
                debug!(
                    pid = key.pid,
                    host_pid = k.host_pid,
                    level,
                    rss = reading.rss,
                    "armed"
                );
            }
            Err(e) => {
                // Not armed, so not counted as armed: the kernel reports the process afresh
                // if it still runs, and the safety net assesses it meanwhile.
                debug!(pid = key.pid, host_pid = k.host_pid, "not armed: {e:#}");
                if let Some(r) = self.table.get_mut(&key) {
                    r.kernel = None;
                }
            }
        }
    }

    /// A capture task ended: tell the policy, and schedule a retry if it asks for one.
    pub(super) fn finished(&mut self, key: ProcKey, outcome: Outcome) {
        self.quiet_since.remove(&key);
        let now = Instant::now();
        if outcome == Outcome::Stored {
            self.policy.stored(key, now);
            // The next level (if any) is armed, or captured at once if already crossed.
            self.again(key, Duration::ZERO, Source::NextLevel);
            return;
        }
        let failed = outcome == Outcome::Failed;
        match self.policy.failed(key, outcome, now) {
            Retry::After { attempt, delay } => {
                warn!(
                    pid = key.pid,
                    attempt,
                    of = RETRY_BACKOFF.len(),
                    in_ms = delay.as_millis() as u64,
                    "retrying the capture while the process stays above its level"
                );
                self.again(key, delay, Source::Retry);
            }
            Retry::GiveUp => {
                if failed {
                    warn!(
                        pid = key.pid,
                        "no capture after {} retries; the next level (if any) is due",
                        RETRY_BACKOFF.len()
                    );
                }
                self.again(key, Duration::ZERO, Source::NextLevel);
            }
        }
    }

    /// Looks at the process again after `delay`, as `source`.
    fn again(&self, key: ProcKey, delay: Duration, source: Source) {
        let tx = self.retries.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let c = Candidate {
                ns_pid: key.pid,
                kernel: None,
                detected: Instant::now(),
                source,
                listed: None,
            };
            let _ = tx.send(c).await;
        });
    }
}
