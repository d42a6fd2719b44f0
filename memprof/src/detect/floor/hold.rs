//! When `rss_stat` goes on its hook and off: on at once when a watched cgroup passes its half
//! mark (or cannot be watched), off only once every one has stayed below it for the hold time,
//! so that a service hovering at its mark does not switch the program on and off (each switch
//! costs the kernel a tracepoint registration; each new attachment a burst of first sightings).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

/// Where a watched cgroup (or a process without one) stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Its usage is at or past `mark`, half the lowest level of a process in it.
    Near { usage: u64, mark: u64 },
    /// Below the mark: every process in it is far from its level.
    Far,
    /// Nothing tells when it nears its level; why. Holds `rss_stat` on.
    Blind(String),
    /// No longer watched.
    Gone,
}

/// The gate's state: what holds `rss_stat` on, and since when nothing does.
pub struct Hold {
    hold: Duration,
    holding: HashMap<String, Reach>,
    on: bool,
    clear_since: Instant,
}

impl Hold {
    /// `rss_stat` starts on its hook: the processes are not known yet.
    pub fn new(hold: Duration, now: Instant) -> Self {
        Self {
            hold,
            holding: HashMap::new(),
            on: true,
            clear_since: now,
        }
    }

    /// Takes `source`'s report; whether `rss_stat` must go on now.
    pub fn report(&mut self, source: &str, reach: Reach, now: Instant) -> bool {
        match reach {
            Reach::Far | Reach::Gone => {
                if self.holding.remove(source).is_some() && self.holding.is_empty() {
                    self.clear_since = now;
                }
                false
            }
            holds => {
                self.holding.insert(source.to_string(), holds);
                !std::mem::replace(&mut self.on, true)
            }
        }
    }

    /// When `rss_stat` goes off unless something nears its level first.
    pub fn off_at(&self) -> Option<Instant> {
        (self.on && self.holding.is_empty()).then(|| self.clear_since + self.hold)
    }

    pub fn turn_off(&mut self) {
        self.on = false;
    }
}

/// Runs the gate on the watchers' reports, telling the kernel's side through `rss`, until the
/// watchers' handle is dropped.
pub async fn run(
    hold: Duration,
    mut reports: mpsc::UnboundedReceiver<(String, Reach)>,
    rss: watch::Sender<bool>,
) {
    let mut gate = Hold::new(hold, Instant::now());
    loop {
        let off = crate::sys::sleep_until(gate.off_at());
        tokio::select! {
            report = reports.recv() => {
                let Some((source, reach)) = report else { return };
                debug!(source, ?reach, "rss_stat gate: a watched cgroup's standing changed");
                if gate.report(&source, reach.clone(), Instant::now()) {
                    match reach {
                        Reach::Near { usage, mark } => info!(
                            cgroup = source,
                            usage,
                            half_level = mark,
                            "rss_stat attached: a watched cgroup's usage passed half the lowest level of its processes"
                        ),
                        _ => info!(source, ?reach, "rss_stat attached: a watched process cannot be followed by its cgroup"),
                    }
                    let _ = rss.send(true);
                }
            }
            () = off => {
                gate.turn_off();
                info!(
                    hold_ms = hold.as_millis() as u64,
                    "rss_stat detached: every watched cgroup's usage is below half the lowest level of its processes"
                );
                let _ = rss.send(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(10);
    const NEAR: Reach = Reach::Near { usage: 5, mark: 4 };

    #[test]
    fn off_only_after_everything_stayed_below_for_the_hold() {
        let t0 = Instant::now();
        let mut g = Hold::new(HOLD, t0);
        assert_eq!(
            g.off_at(),
            Some(t0 + HOLD),
            "on at start, off after the hold"
        );
        assert!(!g.report("a", NEAR, t0), "already on");
        assert_eq!(g.off_at(), None);
        let t1 = t0 + Duration::from_secs(3);
        g.report("a", Reach::Far, t1);
        assert_eq!(
            g.off_at(),
            Some(t1 + HOLD),
            "the hold starts when the last one falls"
        );
        g.turn_off();
        assert_eq!(g.off_at(), None);
        assert!(g.report("b", NEAR, t1), "on again at once");
    }

    #[test]
    fn a_blind_cgroup_holds_it_on_until_gone() {
        let t0 = Instant::now();
        let mut g = Hold::new(HOLD, t0);
        g.turn_off();
        assert!(g.report("pid 7", Reach::Blind("no cgroup".into()), t0));
        g.report("a", NEAR, t0);
        g.report("a", Reach::Far, t0);
        assert_eq!(g.off_at(), None, "the blind one still holds");
        let t1 = t0 + Duration::from_secs(1);
        g.report("pid 7", Reach::Gone, t1);
        assert_eq!(g.off_at(), Some(t1 + HOLD));
        g.report("c", Reach::Far, t1 + HOLD);
        assert_eq!(g.off_at(), Some(t1 + HOLD), "a far report changes nothing");
    }
}
