//! When to capture: once per threshold crossing, never twice within the cooldown.
//!
//! A process that stays above the threshold is captured once; it must fall below and cross
//! again to be captured again, and even then not before the cooldown has passed since its last
//! profile. This keeps a process hovering around its threshold from causing a dump storm.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

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
}

#[derive(Default)]
struct ProcPolicy {
    above: bool,
    last_capture: Option<Instant>,
}

pub struct Policy {
    threshold_pct: u8,
    cooldown: Duration,
    procs: HashMap<u32, ProcPolicy>,
}

impl Policy {
    pub fn new(threshold_pct: u8, cooldown: Duration) -> Self {
        Self {
            threshold_pct,
            cooldown,
            procs: HashMap::new(),
        }
    }

    /// Records that `pid` uses `rss` of `limit` bytes at `now`, and decides.
    pub fn observe(&mut self, pid: u32, rss: u64, limit: u64, now: Instant) -> Decision {
        let level = (limit as u128 * self.threshold_pct as u128).div_ceil(100) as u64;
        let p = self.procs.entry(pid).or_default();
        if rss < level {
            p.above = false;
            return Decision::Arm(level);
        }
        if p.above {
            return Decision::Hold(HoldReason::AlreadyCaptured);
        }
        p.above = true;
        if p.last_capture
            .is_some_and(|t| now.duration_since(t) < self.cooldown)
        {
            return Decision::Hold(HoldReason::Cooldown);
        }
        p.last_capture = Some(now);
        Decision::Capture
    }

    /// Drops state of processes that no longer exist.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        self.procs.retain(|pid, _| alive(*pid));
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
            Decision::Hold(HoldReason::AlreadyCaptured)
        );
        assert_eq!(
            p.observe(1, 700 * MIB, 1000 * MIB, t),
            Decision::Arm(800 * MIB)
        );
        assert_eq!(p.observe(1, 850 * MIB, 1000 * MIB, t), Decision::Capture);
    }

    #[test]
    fn cooldown_holds_a_second_crossing() {
        let mut p = Policy::new(80, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t0), Decision::Capture);
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
        p.retain(|pid| pid != 1);
        assert_eq!(p.observe(1, 60, 100, t), Decision::Capture);
        assert_eq!(
            p.observe(2, 60, 100, t),
            Decision::Hold(HoldReason::AlreadyCaptured)
        );
    }
}
