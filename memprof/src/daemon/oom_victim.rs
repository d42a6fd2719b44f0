//! The OOM killer chose a process: said in the log at once, and, when memprof watches it, the
//! kill's record is started with what its cgroup holds now.
use std::sync::Arc;

use tracing::info;

use super::LoopState;
use crate::{capture::oom_record::Kill, detect::Candidate};

impl LoopState {
    /// `anon`: the victim's anonymous memory at the kill in bytes (0: the kernel did not say).
    pub(super) fn oom_victim(&mut self, c: &Candidate, anon: u64) {
        let host_pid = c.kernel.map(|k| k.host_pid);
        let who = self.capturer.who(c.ns_pid);
        info!(pid = c.ns_pid, host_pid, who, "OOM killer chose process");
        let watched = self.capturer.newest(c.ns_pid);
        if let Some((key, _)) = watched.filter(|(_, p)| p.scope.is_ok()) {
            // Read at once: the victim's memory leaves its cgroup as it exits.
            let charge = self.assessor.charge(&key);
            let mut kill = Kill::now(key, host_pid, self.assessor.working_set(&key), charge);
            kill.victim_anon = (anon > 0).then_some(anon);
            self.capturer.note_kill(&kill);
            let capturer = Arc::clone(&self.capturer);
            tokio::spawn(async move { capturer.record_oom(kill).await });
        }
    }
}
