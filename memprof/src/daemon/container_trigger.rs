//! The container trigger in the loop: containers are noted as their processes are first seen
//! (each gets a watcher), and a watcher's reading at the level captures the container's
//! largest process that serves a profile.
use std::{sync::Arc, time::Instant};

use tracing::{debug, info, warn};

use super::{LoopState, Trigger};
use crate::{
    assess::{
        container::{self, Decision, Member},
        policy::Outcome,
        ProcKey,
    },
    detect::{
        cgroup_watch::{spawn, ContainerEvent, ContainerReading},
        Candidate, Source,
    },
};

impl LoopState {
    /// Notes the process's container, and starts watching it if it is new.
    pub(super) fn note_container(&mut self, key: ProcKey) {
        let Some(containers) = &mut self.containers else {
            return;
        };
        let path = self.assessor.cgroup_path(&key);
        let Some(views) = self.assessor.views(&key).filter(|_| !path.is_empty()) else {
            return;
        };
        if containers.note(&path, views, key) {
            let (cfg, tx) = (self.watch_cfg.clone(), self.container_tx.clone());
            let watcher = spawn(path.clone(), views.to_vec(), cfg, tx);
            self.watchers.insert(path, watcher);
        }
    }

    pub(super) fn container_event(&mut self, e: ContainerEvent) {
        match e {
            ContainerEvent::Reading(r) => self.container_reading(r),
            ContainerEvent::Lost { path, why } => {
                debug!(cgroup = path, "container watcher lost its view: {why}");
                self.watchers.remove(&path);
                let Some(containers) = &mut self.containers else {
                    return;
                };
                containers.lost(&path);
                // Another process of the container (or the same one, relocated) lends its view.
                for key in containers.members(&path) {
                    self.quiet_since.remove(&key);
                    if self.assessor.read(key.pid).is_some_and(|r| r.key == key) {
                        self.note_container(key);
                    }
                }
            }
        }
    }

    fn container_reading(&mut self, r: ContainerReading) {
        let Some(containers) = &mut self.containers else {
            return;
        };
        let level_pct = containers.pct();
        let percent = match containers.observe(&r.path, r.working_set, r.limit, Instant::now()) {
            Decision::Below => return,
            Decision::Hold(rule) if rule == "MEMPROF_COOLDOWN_SECS" => {
                return info!(
                    cgroup = r.path,
                    rule, "container capture suppressed: captured within the cooldown"
                );
            }
            Decision::Hold(rule) => return debug!(cgroup = r.path, rule, "container held"),
            Decision::Capture { percent } => percent,
        };
        let members = self.members(&r.path);
        let Some(chosen) = container::choose(&members).cloned() else {
            self.container_done(&r.path, Outcome::Failed);
            return;
        };
        info!(
            cgroup = r.path,
            working_set = r.working_set,
            limit = r.limit,
            percent = format!("{percent:.1}"),
            level_pct,
            via = r.via,
            processes = container::describe(&members),
            chosen = chosen.key.pid,
            detect_ms = format!("{:.2}", r.detected.elapsed().as_secs_f64() * 1e3),
            "container reached its level"
        );
        if self.policy.profiled(&chosen.key) {
            info!(
                cgroup = r.path,
                pid = chosen.key.pid,
                rule = "already profiled at its own level",
                "container capture skipped: its largest process has a profile from this episode"
            );
            if let Some(c) = &mut self.containers {
                c.skipped(&r.path);
            }
            return;
        }
        if let Err(rule) = self
            .rate
            .allow(Instant::now(), &self.assessor.tenant(&chosen.key))
        {
            crate::metrics::suppressed(rule);
            warn!(
                cgroup = r.path,
                pid = chosen.key.pid,
                rule,
                per_minute = self.rate.per_minute(),
                "capture suppressed by the capture rate limit"
            );
            // The operator's cap: this crossing is dropped (not retried), as it was logged.
            self.container_done(&r.path, Outcome::NoProfile);
            return;
        }
        self.quiet_since.remove(&chosen.key);
        let Some(reading) = self.assessor.read(chosen.key.pid) else {
            self.container_done(&r.path, Outcome::Failed);
            return;
        };
        let c = Candidate {
            ns_pid: chosen.key.pid,
            kernel: None,
            detected: r.detected,
            source: Source::Container {
                percent_tenths: (percent * 10.0) as u32,
                via: r.via,
            },
            listed: None,
        };
        crate::metrics::detection(r.via, "container");
        let (capturer, path) = (Arc::clone(&self.capturer), r.path);
        self.captures.spawn(async move {
            let outcome = capturer.capture(&c, &reading).await.outcome;
            (Trigger::Container(path), outcome)
        });
    }

    /// A container capture ended. One that found nothing to capture (no process serves a
    /// profile) is not retried at this crossing.
    pub(super) fn container_done(&mut self, path: &str, outcome: Outcome) {
        if let Some(c) = &mut self.containers {
            match outcome {
                Outcome::NoProfile => c.skipped(path),
                _ => c.finished(path, outcome == Outcome::Stored, Instant::now()),
            }
        }
    }

    /// The container's live processes, read now.
    fn members(&mut self, path: &str) -> Vec<Member> {
        let keys = self.containers.as_ref().map(|c| c.members(path));
        let mut members = Vec::new();
        for key in keys.unwrap_or_default() {
            // A reading may locate its cgroup anew: the safety net looks at it again.
            self.quiet_since.remove(&key);
            let Some(r) = self.assessor.read(key.pid).filter(|r| r.key == key) else {
                continue;
            };
            let serves = self.capturer.serves_profile(key);
            members.push(Member {
                key,
                comm: r.comm,
                rss: r.rss,
                serves,
            });
        }
        members
    }
}
