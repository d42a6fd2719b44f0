//! When to capture: once per threshold crossing, never twice within the cooldown, and again
//! with backoff while a failed capture's process stays above.
//!
//! A process that stays above the threshold is captured once; it must fall below and cross
//! again to be captured again, and even then not before the cooldown has passed since its last
//! profile. This keeps a process hovering around its threshold from causing a dump storm. A
//! capture that fails (the endpoint timed out while the service thrashes near its limit —
//! exactly when the profile matters) does not use the crossing up: it is retried after
//! `RETRY_BACKOFF[n]` while the process stays above, up to `RETRY_BACKOFF.len()` times.
use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Waits before the retries of a failed capture (bounded: the process may simply not serve
/// a profile while it is this close to its limit).
pub const RETRY_BACKOFF: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(16),
];

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Capture now.
    Capture,
    /// Below the threshold: arm the kernel to report at this many bytes.
    Arm(u64),
    /// Above, but this crossing was already handled (or the cooldown holds).
    Hold(HoldReason),
}

#[derive(Debug, PartialEq, Eq)]
pub enum HoldReason {
    AlreadyCaptured,
    Cooldown,
    /// A capture of this process is running.
    InFlight,
    /// A failed capture waits for its retry.
    RetryPending,
}

/// What became of a capture the policy asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// Failed in a way worth retrying (timeout, HTTP error, delivery).
    Failed,
    /// Nothing to retry: the process serves no profile.
    NoProfile,
}

/// After `Outcome::Failed`: retry after this long, or give up on this crossing.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    After { attempt: usize, delay: Duration },
    GiveUp,
}

#[derive(Default)]
struct ProcPolicy {
    above: bool,
    in_flight: bool,
    last_capture: Option<Instant>,
    /// Failed attempts of this crossing, and when the next one is due.
    failures: usize,
    retry_due: Option<Instant>,
}

pub struct Policy<K> {
    threshold_pct: u8,
    cooldown: Duration,
    procs: HashMap<K, ProcPolicy>,
}

impl<K: Copy + Eq + Hash> Policy<K> {
    pub fn new(threshold_pct: u8, cooldown: Duration) -> Self {
        Self {
            threshold_pct,
            cooldown,
            procs: HashMap::new(),
        }
    }

    /// Records that process `key` uses `rss` of `limit` bytes at `now`, and decides.
    pub fn observe(&mut self, key: K, rss: u64, limit: u64, now: Instant) -> Decision {
        let level = (limit as u128 * self.threshold_pct as u128).div_ceil(100) as u64;
        let p = self.procs.entry(key).or_default();
        if rss < level {
            p.above = false;
            p.failures = 0;
            p.retry_due = None;
            return Decision::Arm(level);
        }
        if p.in_flight {
            return Decision::Hold(HoldReason::InFlight);
        }
        if p.above {
            return match p.retry_due {
                Some(due) if now >= due => {
                    p.retry_due = None;
                    p.in_flight = true;
                    Decision::Capture
                }
                Some(_) => Decision::Hold(HoldReason::RetryPending),
                None => Decision::Hold(HoldReason::AlreadyCaptured),
            };
        }
        p.above = true;
        if p.last_capture
            .is_some_and(|t| now.duration_since(t) < self.cooldown)
        {
            return Decision::Hold(HoldReason::Cooldown);
        }
        p.in_flight = true;
        Decision::Capture
    }

    /// A capture is stored: the cooldown starts now.
    pub fn stored(&mut self, key: K, now: Instant) {
        let p = self.procs.entry(key).or_default();
        p.in_flight = false;
        p.failures = 0;
        p.last_capture = Some(now);
    }

    /// A capture failed: when to retry, if at all.
    pub fn failed(&mut self, key: K, outcome: Outcome, now: Instant) -> Retry {
        let p = self.procs.entry(key).or_default();
        p.in_flight = false;
        if outcome == Outcome::NoProfile || p.failures >= RETRY_BACKOFF.len() {
            p.retry_due = None;
            return Retry::GiveUp;
        }
        let delay = RETRY_BACKOFF[p.failures];
        p.failures += 1;
        p.retry_due = Some(now + delay);
        Retry::After {
            attempt: p.failures,
            delay,
        }
    }

    /// Forgets one process (it ran exec: a new program starts afresh).
    pub fn forget(&mut self, key: &K) {
        self.procs.remove(key);
    }

    /// Drops state of processes that no longer exist.
    pub fn retain(&mut self, alive: impl Fn(&K) -> bool) {
        self.procs.retain(|k, _| alive(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn below_arms_at_threshold() {
        let mut p = Policy::new(80, Duration::from_secs(60));
        assert_eq!(
            p.observe(1, 100 * MIB, 1000 * MIB, Instant::now()),
            Decision::Arm(800 * MIB)
        );
    }

    #[test]
    fn one_capture_per_crossing() {
        let mut p = Policy::new(80, Duration::ZERO);
        let t = Instant::now();
        assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t), Decision::Capture);
        assert_eq!(
            p.observe(1, 900 * MIB, 1000 * MIB, t),
            Decision::Hold(HoldReason::InFlight)
        );
        p.stored(1, t);
        assert_eq!(
            p.observe(1, 900 * MIB, 1000 * MIB, t),
            Decision::Hold(HoldReason::AlreadyCaptured)
        );
        assert_eq!(
            p.observe(1, 700 * MIB, 1000 * MIB, t),
            Decision::Arm(800 * MIB)
        );
        assert_eq!(p.observe(1, 850 * MIB, 1000 * MIB, t), Decision::Capture);
    }

    #[test]
    fn failed_capture_is_retried_with_backoff_while_above() {
        let mut p = Policy::new(80, Duration::from_secs(300));
        let t0 = Instant::now();
        assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t0), Decision::Capture);
        let mut t = t0;
        for (i, backoff) in RETRY_BACKOFF.iter().enumerate() {
            assert_eq!(
                p.failed(1, Outcome::Failed, t),
                Retry::After {
                    attempt: i + 1,
                    delay: *backoff
                }
            );
            assert_eq!(
                p.observe(1, 820 * MIB, 1000 * MIB, t),
                Decision::Hold(HoldReason::RetryPending)
            );
            t += *backoff;
            // The cooldown does not hold a retry: nothing was stored yet.
            assert_eq!(p.observe(1, 820 * MIB, 1000 * MIB, t), Decision::Capture);
        }
        assert_eq!(p.failed(1, Outcome::Failed, t), Retry::GiveUp);
        assert_eq!(
            p.observe(1, 820 * MIB, 1000 * MIB, t + Duration::from_secs(60)),
            Decision::Hold(HoldReason::AlreadyCaptured)
        );
        // Falling below resets the count; the next crossing is captured (no profile stored,
        // so no cooldown) and has its full retries again.
        assert!(matches!(
            p.observe(1, 10 * MIB, 1000 * MIB, t),
            Decision::Arm(_)
        ));
        assert_eq!(p.observe(1, 820 * MIB, 1000 * MIB, t), Decision::Capture);
        assert!(matches!(
            p.failed(1, Outcome::Failed, t),
            Retry::After { attempt: 1, .. }
        ));
    }

    #[test]
    fn a_process_without_a_profile_is_not_retried() {
        let mut p = Policy::new(80, Duration::ZERO);
        let t = Instant::now();
        assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t), Decision::Capture);
        assert_eq!(p.failed(1, Outcome::NoProfile, t), Retry::GiveUp);
        assert_eq!(
            p.observe(1, 810 * MIB, 1000 * MIB, t + Duration::from_secs(1)),
            Decision::Hold(HoldReason::AlreadyCaptured)
        );
    }

    #[test]
    fn cooldown_holds_a_second_crossing() {
        let mut p = Policy::new(80, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t0), Decision::Capture);
        p.stored(1, t0);
        assert!(matches!(
            p.observe(1, 10 * MIB, 1000 * MIB, t0),
            Decision::Arm(_)
        ));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            p.observe(1, 810 * MIB, 1000 * MIB, t1),
            Decision::Hold(HoldReason::Cooldown)
        );
        // The held crossing is not captured late; the next one after the cooldown is.
        assert_eq!(
            p.observe(1, 820 * MIB, 1000 * MIB, t0 + Duration::from_secs(61)),
            Decision::Hold(HoldReason::AlreadyCaptured)
        );
        assert!(matches!(
            p.observe(1, 10 * MIB, 1000 * MIB, t1),
            Decision::Arm(_)
        ));
        assert_eq!(
            p.observe(1, 810 * MIB, 1000 * MIB, t0 + Duration::from_secs(61)),
            Decision::Capture
        );
    }

    #[test]
    fn processes_are_independent_and_forgotten() {
        let mut p = Policy::new(50, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(p.observe(1, 60, 100, t), Decision::Capture);
        assert_eq!(p.observe(2, 60, 100, t), Decision::Capture);
        p.stored(1, t);
        p.stored(2, t);
        p.retain(|pid| *pid != 1);
        assert_eq!(p.observe(1, 60, 100, t), Decision::Capture);
        assert_eq!(
            p.observe(2, 60, 100, t),
            Decision::Hold(HoldReason::AlreadyCaptured)
        );
    }
}
