//! When to capture: once per level crossing, never twice at one level within the cooldown,
//! and again with backoff while a failed capture's process stays above.
//!
//! Levels are percentages of the limit, one or several (`80,90,95`): each crossing of the next
//! level up is captured once, so a slow leak leaves a series of profiles. A level is captured
//! again only after the process has fallen `HYSTERESIS_PCT` points of its limit below it (80 %
//! re-arms below 75 %), and then not before the cooldown has passed since that level's last
//! profile: a process hovering around a level does not cause a dump storm. A capture that
//! fails (the endpoint timed out while the service thrashes near its limit — exactly when the
//! profile matters) does not use the crossing up: it is retried after `RETRY_BACKOFF[n]` while
//! the process stays above, up to `RETRY_BACKOFF.len()` times; then the next level is due.
use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// How far (in points of the limit) a process must fall below a captured level for that level
/// to be captured again.
pub const HYSTERESIS_PCT: u64 = 5;

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

impl Outcome {
    /// As the metrics name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Failed => "failed",
            Outcome::NoProfile => "no_profile",
        }
    }
}

/// After `Outcome::Failed`: retry after this long, or give up on this crossing.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    After { attempt: usize, delay: Duration },
    GiveUp,
}

#[derive(Default)]
struct ProcPolicy {
    /// Index of the next level to capture (the ones below it are done until it falls).
    next: usize,
    /// The level a running capture is for.
    in_flight: Option<usize>,
    /// When each level was last stored (by level index).
    last_capture: HashMap<usize, Instant>,
    /// Failed attempts at the next level, and when the next one is due.
    failures: usize,
    retry_due: Option<Instant>,
}

pub struct Policy<K> {
    levels_pct: Vec<u8>,
    /// Absolute levels for processes without a limit (`MEMORY_CRITICAL_BYTES`), ascending.
    levels_bytes: Vec<u64>,
    cooldown: Duration,
    procs: HashMap<K, ProcPolicy>,
}

impl<K: Copy + Eq + Hash> Policy<K> {
    /// `levels_pct`: ascending, at least one.
    pub fn new(levels_pct: Vec<u8>, cooldown: Duration) -> Self {
        Self {
            levels_pct,
            levels_bytes: Vec::new(),
            cooldown,
            procs: HashMap::new(),
        }
    }

    /// With absolute levels for processes that have no limit.
    pub fn with_bytes(mut self, levels_bytes: Vec<u64>) -> Self {
        self.levels_bytes = levels_bytes;
        self
    }

    pub fn has_bytes(&self) -> bool {
        !self.levels_bytes.is_empty()
    }

    /// Whether a level of the process was captured (or is being captured) and the process has
    /// not fallen well below it since.
    pub fn profiled(&self, key: &K) -> bool {
        self.procs
            .get(key)
            .is_some_and(|p| p.next > 0 || p.in_flight.is_some())
    }

    /// The first level of a process with `limit` bytes (`unlimited`: the node's memory, where
    /// `MEMORY_CRITICAL_BYTES` applies when set), as `observe` and `observe_bytes` arm it.
    pub fn lowest_level(&self, limit: u64, unlimited: bool) -> u64 {
        match self.levels_bytes.first() {
            Some(&bytes) if unlimited => bytes,
            _ => (limit as u128 * self.levels_pct[0] as u128).div_ceil(100) as u64,
        }
    }

    /// Records that process `key` uses `rss` of `limit` bytes at `now`, and decides.
    pub fn observe(&mut self, key: K, rss: u64, limit: u64, now: Instant) -> Decision {
        let levels: Vec<u64> = self
            .levels_pct
            .iter()
            .map(|&pct| (limit as u128 * pct as u128).div_ceil(100) as u64)
            .collect();
        let margin = (limit as u128 * HYSTERESIS_PCT as u128 / 100) as u64;
        self.decide(key, rss, &levels, |_| margin, now)
    }

    /// As `observe`, against the absolute levels (a process without a limit); a level re-arms
    /// `HYSTERESIS_PCT` percent below itself.
    pub fn observe_bytes(&mut self, key: K, rss: u64, now: Instant) -> Decision {
        let levels = self.levels_bytes.clone();
        self.decide(key, rss, &levels, |l| l / 100 * HYSTERESIS_PCT, now)
    }

    fn decide(
        &mut self,
        key: K,
        rss: u64,
        levels: &[u64],
        margin: impl Fn(u64) -> u64,
        now: Instant,
    ) -> Decision {
        let p = self.procs.entry(key).or_default();
        // (A process whose limit appeared or went has the other list's position.)
        p.next = p.next.min(levels.len());
        // Levels the process has fallen well below are due again.
        while p.next > 0 && rss.saturating_add(margin(levels[p.next - 1])) < levels[p.next - 1] {
            p.next -= 1;
        }
        let Some(&level) = levels.get(p.next) else {
            return Decision::Hold(HoldReason::AlreadyCaptured);
        };
        if rss < level {
            p.failures = 0;
            p.retry_due = None;
            return Decision::Arm(level);
        }
        if p.in_flight.is_some() {
            return Decision::Hold(HoldReason::InFlight);
        }
        match p.retry_due {
            Some(due) if now >= due => {
                p.retry_due = None;
                p.in_flight = Some(p.next);
                return Decision::Capture;
            }
            Some(_) => return Decision::Hold(HoldReason::RetryPending),
            None => {}
        }
        let cooling = p
            .last_capture
            .get(&p.next)
            .is_some_and(|t| now.duration_since(*t) < self.cooldown);
        if cooling {
            // This crossing is not captured late: the level is done until the process falls.
            p.next += 1;
            return Decision::Hold(HoldReason::Cooldown);
        }
        p.in_flight = Some(p.next);
        Decision::Capture
    }

    /// A capture is stored: its level's cooldown starts now, and the next level is due.
    pub fn stored(&mut self, key: K, now: Instant) {
        let p = self.procs.entry(key).or_default();
        let level = p.in_flight.take().unwrap_or(p.next);
        p.failures = 0;
        p.last_capture.insert(level, now);
        p.next = p.next.max(level + 1);
    }

    /// A capture failed: when to retry, if at all (giving up makes the next level due).
    pub fn failed(&mut self, key: K, outcome: Outcome, now: Instant) -> Retry {
        let p = self.procs.entry(key).or_default();
        let level = p.in_flight.take().unwrap_or(p.next);
        if outcome == Outcome::NoProfile || p.failures >= RETRY_BACKOFF.len() {
            p.retry_due = None;
            p.failures = 0;
            p.next = p.next.max(level + 1);
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

    /// Whether the process was observed below its first level and nothing happened since: no
    /// level captured, no capture running, failed or due.
    pub fn untouched(&self, key: &K) -> bool {
        self.procs.get(key).is_some_and(|p| {
            p.next == 0 && p.in_flight.is_none() && p.failures == 0 && p.retry_due.is_none()
        })
    }

    /// Forgets processes (`gone`). After an exec (a new program starts afresh) one whose
    /// capture is under way is kept: the kernel's exec event can arrive after the new
    /// program's first reading started that capture, and a second would start beside it at
    /// the same crossing.
    pub fn forget(&mut self, gone: impl Fn(&K) -> bool, exec: bool) {
        self.procs
            .retain(|k, p| !gone(k) || (exec && p.in_flight.is_some()));
    }
}

#[cfg(test)]
mod tests;
