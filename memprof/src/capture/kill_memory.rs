//! The memory accounting of an OOM kill, gathered from two events that arrive in either order
//! — the kill reported (the container's charge, read at once) and the kernel's walk of a Go
//! victim (the runtime's statistics) — and kept apart from `seen`, whose entry for the dead
//! process a sweep may remove before the OOM record is written.
use std::collections::HashMap;

use super::{
    accounting::{account, kill_charge, Accounting},
    goheap::memstats::GoMemory,
    oom_record::Kill,
    Capturer,
};
use crate::{assess::ProcKey, cgroup::charge::Charge};

/// Kills whose accounting is kept at once (the record takes its own).
const KILLS_MAX: usize = 1024;

#[derive(Default)]
pub struct KillMemory(HashMap<ProcKey, (Option<Charge>, Option<GoMemory>)>);

impl Capturer {
    /// The kill as reported: the charge to account it with.
    pub fn note_kill(&self, kill: &Kill) {
        let seen = self.seen.get(kill.key);
        let before = seen.as_ref().and_then(|p| p.accounting).map(|a| a.0);
        let limit = seen.map_or(0, |p| p.limit);
        let charge = kill_charge(kill.charge, kill.victim_anon, before, limit);
        self.with_kills(|k| k.entry(kill.key).or_default().0 = charge);
    }

    /// The Go runtime's statistics as the kernel's walk read them at the kill.
    pub(super) fn note_kill_go(&self, key: ProcKey, go: Option<GoMemory>) {
        self.with_kills(|k| k.entry(key).or_default().1 = go);
    }

    /// The kill's accounting, when its charge was read; `take`: forget it (the OOM record).
    pub(super) fn kill_accounting(&self, key: ProcKey, take: bool) -> Option<Accounting> {
        let (charge, go) = self.with_kills(|k| match take {
            true => k.remove(&key),
            false => k.get(&key).copied(),
        })?;
        Some(account(&charge?, go.as_ref()))
    }

    fn with_kills<T>(
        &self,
        f: impl FnOnce(&mut HashMap<ProcKey, (Option<Charge>, Option<GoMemory>)>) -> T,
    ) -> T {
        let mut kills = self.kills.lock().expect("kills");
        if kills.0.len() >= KILLS_MAX {
            kills.0.clear();
        }
        f(&mut kills.0)
    }
}
