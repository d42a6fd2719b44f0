//! What the loop does with a candidate: route it by its source (a listed process passed over at
//! a glance, a kernel report disarming the process, an exec starting it afresh), then read the
//! process, note what the reading was judged against, and decide.
use std::time::Instant;

use tracing::{debug, info};

use super::LoopState;
use crate::{
    assess::{Forget, LimitSource},
    detect::{Candidate, Source},
};

impl LoopState {
    pub(super) fn handle(&mut self, c: Candidate) {
        tracing::trace!(?c, "candidate");
        self.stirred(c.ns_pid);
        match c.source {
            Source::OomVictim { anon, .. } => return self.oom_victim(&c, anon),
            Source::Known => return self.known_round(c.detected),
            Source::Poll => {
                self.begin_round(c.detected);
                if self.unchanged(c.ns_pid, c.detected, c.listed) {
                    return;
                }
            }
            Source::Kernel { .. } => self.disarmed(c.ns_pid),
            Source::Exec => {
                // A new program: its policy, level, kernel identity and who it is start afresh
                // (its mounts are final now). A PID the table never read is in no store (each
                // takes a process once it was read, and the table keeps a PID across its
                // execs until the sweep forgets it everywhere): a program started and gone
                // unread costs no pass over them.
                let known = self.table.newest(c.ns_pid).is_some();
                if known {
                    self.forget(Forget::Exec(c.ns_pid));
                }
                self.exec_seen(c.ns_pid, known);
                return;
            }
            _ => {}
        }
        self.assess(c);
    }

    /// Reads the process a candidate names, and decides.
    pub(super) fn assess(&mut self, c: Candidate) {
        if c.ns_pid == 0 || c.ns_pid == std::process::id() || !self.table.has_room_for(c.ns_pid) {
            return;
        }
        let round = (c.source == Source::Poll).then_some(c.detected);
        let Some(reading) = self.assessor.read_in(c.ns_pid, round) else {
            return;
        };
        let key = reading.key;
        self.table.read(key);
        let assessor = &self.assessor;
        let cgroup = || assessor.cgroup_of(&key);
        let (scope, first) = self.capturer.saw(&reading, &self.scope, cgroup);
        if let Err(rule) = scope {
            if first {
                info!(
                    pid = key.pid,
                    comm = reading.comm,
                    rule = rule.as_str(),
                    "not watched"
                );
            }
            return;
        }
        self.note_container(key);
        self.note_floor(&reading);
        let level = self.first_level(&reading);
        let placed = self.assessor.placed(&key);
        let Some(record) = self.table.record(key) else {
            return;
        };
        record.judged(&reading, level, placed, &self.round);
        if !std::mem::replace(&mut record.discovered, true) {
            self.capturer.discover(key, reading.comm.clone());
        }
        // Once per process, from the safety net's scan (so short-lived helpers such as exec
        // probes stay out of the log): what it is measured against, for operators to check.
        if c.source == Source::Poll && !std::mem::replace(&mut record.announced, true) {
            info!(
                pid = key.pid,
                comm = reading.comm,
                rss = reading.rss,
                limit = reading.limit,
                limit_source = ?reading.limit_source,
                who = self.capturer.who_of(&reading.identity),
                "watching process"
            );
        }
        if let Some(k) = c.kernel {
            if k.start_ticks().is_some_and(|start| start != key.start) {
                debug!(
                    pid = c.ns_pid,
                    "event for a process that has since exited; its PID is reused"
                );
                return;
            }
            // The kernel disarms a process when it reports it.
            (record.kernel, record.armed, record.reported) = (Some(k), None, true);
        }
        let unlimited = reading.limit_source != LimitSource::Cgroup;
        let decision = if unlimited && self.policy.has_bytes() {
            self.policy.observe_bytes(key, reading.rss, Instant::now())
        } else {
            self.policy
                .observe(key, reading.rss, reading.limit, Instant::now())
        };
        self.decided(c, reading, decision);
        // After the decision (a capture is already on its way): the container's working set,
        // for the OOM record should the process die.
        let working_set = self.assessor.working_set_in(&key, round);
        self.capturer.note_working_set(key, working_set);
    }
}
