//! A node-wide (per memprof) cap on captures per minute, beside the per-process cooldown: a
//! node where many processes cross at once (a bad deploy, a noisy neighbour) must not spend its
//! last memory and bandwidth on a dump storm. A capture over the cap is not lost: the policy
//! retries it with backoff while the process stays above.
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);

pub struct RateLimit {
    per_minute: usize,
    recent: VecDeque<Instant>,
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

    /// Whether a capture may start at `now` (and counts it if so).
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.per_minute {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_a_sliding_minute() {
        let mut r = RateLimit::new(2);
        let t = Instant::now();
        assert!(r.allow(t));
        assert!(r.allow(t + Duration::from_secs(1)));
        assert!(!r.allow(t + Duration::from_secs(2)));
        assert!(!r.allow(t + Duration::from_secs(59)));
        assert!(r.allow(t + Duration::from_secs(60)));
        assert!(!r.allow(t + Duration::from_secs(60)));
        assert!(r.allow(t + Duration::from_secs(61)));
    }
}
