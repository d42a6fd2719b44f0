//! When each spooled profile is tried again: exponential backoff with jitter per profile (so a
//! long outage does not hammer S3, and many memprof instances coming back together do not
//! retry in lockstep), indefinitely while memprof runs. A new profile is always tried at once;
//! only leftovers wait here.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// First wait after a failure, and the longest.
const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct Schedule {
    waiting: HashMap<String, Attempts>,
}

struct Attempts {
    failures: u32,
    next: Instant,
    /// A permanent error was logged for this profile (once per profile).
    told_permanent: bool,
}

/// What the caller logs after a failure.
pub struct Failed {
    pub failures: u32,
    pub retry_in: Duration,
    /// The first permanent error for this profile: log it loudly, once.
    pub first_permanent: bool,
}

impl Schedule {
    /// Whether `key` may be tried at `now` (never tried, or its wait is over).
    pub fn due(&self, key: &str, now: Instant) -> bool {
        self.waiting.get(key).is_none_or(|a| a.next <= now)
    }

    /// Records a failed attempt and schedules the next. Permanent errors (bad credentials, no
    /// such bucket) are retried too, at the longest wait: credentials get rotated and buckets
    /// created without memprof being restarted.
    pub fn failed(&mut self, key: &str, now: Instant, permanent: bool) -> Failed {
        let a = self.waiting.entry(key.to_string()).or_insert(Attempts {
            failures: 0,
            next: now,
            told_permanent: false,
        });
        a.failures += 1;
        let wait = if permanent {
            LONGEST
        } else {
            backoff(a.failures)
        };
        // Equal jitter: half the wait fixed, half random.
        let retry_in = wait / 2 + wait.mul_f64(fastrand::f64() / 2.0);
        a.next = now + retry_in;
        let first_permanent = permanent && !a.told_permanent;
        a.told_permanent |= permanent;
        Failed {
            failures: a.failures,
            retry_in,
            first_permanent,
        }
    }

    /// Forgets a profile that was stored or dropped.
    pub fn forget(&mut self, key: &str) {
        self.waiting.remove(key);
    }
}

/// The wait after `failures` consecutive failures: 1 s, 2 s, 4 s, … up to 5 min.
fn backoff(failures: u32) -> Duration {
    FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(LONGEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), LONGEST);
        assert_eq!(backoff(u32::MAX), LONGEST);
    }

    #[test]
    fn a_failed_profile_waits_with_jitter_then_is_due() {
        let mut s = Schedule::default();
        let now = Instant::now();
        assert!(s.due("k", now), "never tried: due at once");
        for _ in 0..3 {
            s.failed("k", now, false);
        }
        let f = s.failed("k", now, false);
        assert_eq!(f.failures, 4);
        assert!(f.retry_in >= Duration::from_secs(4) && f.retry_in <= Duration::from_secs(8));
        assert!(!s.due("k", now + Duration::from_secs(3)));
        assert!(s.due("k", now + Duration::from_secs(8)));
        assert!(s.due("other", now), "each profile has its own schedule");
        s.forget("k");
        assert!(s.due("k", now));
    }

    #[test]
    fn a_permanent_error_is_told_once_and_retried_slowly() {
        let mut s = Schedule::default();
        let now = Instant::now();
        let first = s.failed("k", now, true);
        assert!(first.first_permanent);
        assert!(first.retry_in >= LONGEST / 2);
        assert!(!s.failed("k", now, true).first_permanent);
    }
}
