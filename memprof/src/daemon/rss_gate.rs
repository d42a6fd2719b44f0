//! The `rss_stat` gate in the loop: each watched process's memory cgroup is watched against
//! half the process's lowest level (`detect::floor`), from its first reading on; a process
//! that runs exec is read at once, so that a new container's cgroup is watched (and the
//! process discovered) before it can grow, also while `rss_stat` is detached and the kernel
//! reports no first sighting.
use super::LoopState;
use crate::assess::{LimitSource, Reading};

impl LoopState {
    /// Watches the cgroup of a watched process against half its lowest level.
    pub(super) fn note_floor(&mut self, reading: &Reading) {
        let level = self.first_level(reading);
        let Some(floor) = &mut self.floor else {
            return;
        };
        let key = reading.key;
        let path = self.assessor.cgroup_path(&key);
        floor.note(key, &path, self.assessor.views(&key), level);
    }

    /// The process's first level, as its reading stands.
    pub(super) fn first_level(&self, reading: &Reading) -> u64 {
        let unlimited = reading.limit_source != LimitSource::Cgroup;
        self.policy.lowest_level(reading.limit, unlimited)
    }

    /// A process ran exec (a new program, maybe in a new container): if it is watched, its
    /// cgroup is watched from now on, and whether it is Go and where its endpoint is is found
    /// out now, as at a first sighting, not only once `rss_stat` is back and the process may
    /// already be near its level.
    pub(super) fn exec_seen(&mut self, pid: u32) {
        if self.floor.is_none() || pid == 0 || pid == std::process::id() {
            return;
        }
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
