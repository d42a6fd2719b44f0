//! The `rss_stat` gate in the loop: each watched process's memory cgroup is watched against
//! half the process's lowest level (`detect::floor`), from its first reading on; a process
//! that runs exec is read at once, so that a new container's cgroup is watched (and the
//! process discovered) before it can grow, also while `rss_stat` is detached and the kernel
//! reports no first sighting. In a cgroup watched already, the read waits (`exec_settle`).
use std::time::Instant;

use super::LoopState;
use crate::assess::{self, LimitSource, Reading};

impl LoopState {
    /// Watches the cgroup of a watched process against half its lowest level.
    pub(super) fn note_floor(&mut self, reading: &Reading) {
        let level = self.first_level(reading);
        let Some(floor) = &mut self.floor else {
            return;
        };
        let key = reading.key;
        let (path, views) = (self.assessor.cgroup_path(&key), self.assessor.views(&key));
        // A process that exited while it was read has no cgroup left to find; taken for
        // blind, it would hold `rss_stat` on until the sweep forgot it.
        if views.is_none() && !assess::alive(key) {
            return;
        }
        floor.note(key, &path, views, level);
    }

    /// The process's first level, as its reading stands.
    pub(super) fn first_level(&self, reading: &Reading) -> u64 {
        let unlimited = reading.limit_source != LimitSource::Cgroup;
        self.policy.lowest_level(reading.limit, unlimited)
    }

    /// A process ran exec (a new program, maybe in a new container): if it is watched, its
    /// cgroup is watched from now on, and whether it is Go and where its endpoint is is found
    /// out when it is read, as at a first sighting, not only once `rss_stat` is back and the
    /// process may already be near its level.
    /// `known`: memprof had read the process before this exec (a wrapper's `exec app`): it
    /// is read at once, as is a process in a cgroup nobody watches yet (a new container's);
    /// any other waits (`exec_settle`).
    pub(super) fn exec_seen(&mut self, pid: u32, known: bool) {
        let Some(floor) = &self.floor else {
            return;
        };
        if pid == 0 || pid == std::process::id() {
            return;
        }
        let watched =
            !known && assess::memory_cgroup_now(pid).is_some_and(|path| floor.watches(&path));
        if watched && self.settling.defer(pid, Instant::now()) {
            return;
        }
        self.read_started(pid);
    }

    /// Reads the programs whose wait in a watched cgroup has ended, a turn's worth at a time:
    /// those still running, and not read since (the kernel's first sighting, while
    /// `rss_stat` is on its hook, reads a new program at once).
    pub(super) fn settled(&mut self) {
        for pid in self.settling.take_due(Instant::now(), super::DRAIN) {
            if self.table.newest(pid).is_none() {
                self.read_started(pid);
            }
        }
    }

    /// Reads a program that ran exec: its cgroup is watched, and it is discovered.
    fn read_started(&mut self, pid: u32) {
        if !self.table.has_room_for(pid) {
            return;
        }
        let Some(reading) = self.assessor.read(pid) else {
            return;
        };
        // The PID names this process again (an exec forgets it): the safety net's rounds that
        // list nothing look at it.
        self.table.read(reading.key);
        let assessor = &self.assessor;
        let cgroup = || assessor.cgroup_of(&reading.key);
        if self.capturer.saw(&reading, &self.scope, cgroup).0.is_err() {
            return;
        }
        self.note_floor(&reading);
        let Some(record) = self.table.record(reading.key) else {
            return;
        };
        if !std::mem::replace(&mut record.discovered, true) {
            self.capturer.discover(reading.key, reading.comm);
        }
    }
}
