//! A node-wide (per memprof) cap on captures per minute, beside the per-process cooldown: a
//! node where many processes cross at once (a bad deploy, a noisy neighbour) must not spend its
//! last memory and bandwidth on a dump storm. Within it each tenant (a container; a pod when
//! memprof watches a node) may take a third of the minute's captures at most, so one pod's fork
//! storm — each child sharing its parent's pages, each crossing at once — degrades only itself.
//! A capture over a cap is not lost: the policy retries it with backoff while the process stays
//! above.
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
/// A tenant's share of the minute's captures: one part in this many.
const TENANT_SHARE: usize = 3;

/// The rule that held a capture back.
pub const GLOBAL_RULE: &str = "MEMPROF_MAX_CAPTURES_PER_MINUTE";
pub const TENANT_RULE: &str = "a tenant's third of MEMPROF_MAX_CAPTURES_PER_MINUTE";

pub struct RateLimit {
    per_minute: usize,
    /// Captures in the last minute, and whose.
    recent: VecDeque<(Instant, String)>,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute as usize,
            recent: VecDeque::new(),
        }
    }

    pub fn per_minute(&self) -> usize {
        self.per_minute
    }

    /// How many captures a minute one tenant may take.
    pub fn per_tenant(&self) -> usize {
        self.per_minute.div_ceil(TENANT_SHARE)
    }

    /// Whether `tenant` may start a capture at `now` (counted if so); otherwise the rule that
    /// holds it.
    pub fn allow(&mut self, now: Instant, tenant: &str) -> Result<(), &'static str> {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.per_minute {
            return Err(GLOBAL_RULE);
        }
        if self.recent.iter().filter(|(_, t)| t == tenant).count() >= self.per_tenant() {
            return Err(TENANT_RULE);
        }
        self.recent.push_back((now, tenant.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_a_sliding_minute() {
        let mut r = RateLimit::new(2);
        let t = Instant::now();
        // A tenant each: only the global cap is at work here.
        let allow = |r: &mut RateLimit, s: u64| {
            let at = t + Duration::from_secs(s);
            r.allow(at, &format!("tenant at {s} s, call {}", r.recent.len()))
                .is_ok()
        };
        assert!(allow(&mut r, 0));
        assert!(allow(&mut r, 1));
        assert!(!allow(&mut r, 2));
        assert!(!allow(&mut r, 59));
        assert!(allow(&mut r, 60));
        assert!(!allow(&mut r, 60));
        assert!(allow(&mut r, 61));
    }

    #[test]
    fn one_tenant_takes_a_third_and_leaves_the_rest_to_others() {
        let mut r = RateLimit::new(30);
        let t = Instant::now();
        let taken = (0..30).filter(|_| r.allow(t, "storm").is_ok()).count();
        assert_eq!(taken, 10);
        assert_eq!(r.allow(t, "storm"), Err(TENANT_RULE));
        for tenant in ["a", "b"] {
            for _ in 0..10 {
                assert_eq!(r.allow(t, tenant), Ok(()));
            }
        }
        assert_eq!(r.allow(t, "c"), Err(GLOBAL_RULE));
    }
}
