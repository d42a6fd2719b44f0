//! Handing a captured profile to delivery: the facts it is named by (`deliver::naming` makes
//! its key and metadata of them), and one line in the log while it waits in the spool.
use std::time::Instant;

use tracing::warn;

use super::{accounting::account, Capturer, Profile};
use crate::{
    assess::{identity::Identity, LimitSource, ProcKey, Reading},
    deliver::{
        key::Level,
        metadata::Metadata,
        naming::{Subject, Usage},
    },
    detect::{Candidate, Source},
};

/// Facts for naming and logging a profile.
pub struct Stored<'a> {
    /// The process, whose stored profiles the at-kill profile lists.
    pub proc: ProcKey,
    pub pid: u32,
    pub comm: &'a str,
    pub level: Level,
    /// Where the profile came from: `endpoint`, `memory`, `kernel`, `record`.
    pub source: &'static str,
    /// What noticed the process: `ebpf`, `poll`, `container-…`, `oom-kill`, ….
    pub detector: &'a str,
    pub started: Instant,
}

impl Capturer {
    /// Takes the labels a profile is named by: the detector, and the level (without a limit
    /// and with absolute levels, the key names the level crossed).
    pub(super) fn labels(&self, c: &Candidate, reading: &Reading) -> (String, Level) {
        let crossed = match reading.limit_source {
            LimitSource::Cgroup => None,
            _ => self
                .levels_bytes
                .iter()
                .rev()
                .find(|l| **l <= reading.rss)
                .or(self.levels_bytes.first()),
        };
        let level = crossed.map_or(Level::Percent(reading.percent()), |b| Level::Bytes(*b));
        match c.source {
            Source::Kernel { .. } => ("ebpf".to_string(), level),
            Source::Retry => ("retry".to_string(), level),
            Source::NextLevel => ("next-level".to_string(), level),
            Source::Manual => ("manual".to_string(), Level::Manual),
            Source::Container {
                percent_tenths,
                via,
            } => (
                format!("container-{via}"),
                Level::Container(percent_tenths as f64 / 10.0),
            ),
            _ => ("poll".to_string(), level),
        }
    }

    /// `namespace/pod/container` of the newest process with this PID, for log lines that
    /// know only the PID.
    pub fn who(&self, pid: u32) -> String {
        self.seen
            .newest(pid)
            .map_or_else(|| "-".into(), |(_, p)| self.who_of(&p.identity))
    }

    /// `namespace/pod/container` as the process's keys name it: its own names where known,
    /// otherwise the downward API's (or `host` and the node), `-` for an unknown container.
    pub fn who_of(&self, identity: &Identity) -> String {
        self.naming.who(
            identity.namespace.as_deref(),
            identity.pod.as_deref(),
            identity.container.as_deref(),
        )
    }

    /// Names the profile and delivers it: its key, and whether it is stored already (otherwise
    /// it waits in the spool, and the retry loop delivers it). The key is remembered for the
    /// process before delivery starts, so an OOM kill during a slow upload still names it.
    pub async fn deliver(&self, s: Stored<'_>, profile: &Profile) -> (String, bool) {
        let (key, meta) = self.name(&s, profile.kind, profile.extension);
        // Summarized before it is known as stored: the OOM record waits for the at-kill
        // profile's key and then compares it with the first.
        self.note_profile(s.proc, profile).await;
        self.goheap.stored(s.proc, &key);
        // Told before the upload is tried: a slow or failing destination must not delay it.
        if let Some(alerts) = &self.alerts {
            alerts.stored(&key, &meta, profile.kind, &profile.bytes);
        }
        match self.deliverer.deliver(&key, &meta, &profile.bytes).await {
            Ok(()) => (key, true),
            Err(e) => {
                s.not_stored_yet(&key, &e);
                (key, false)
            }
        }
    }

    /// Stores evidence of an OOM kill (the at-kill profile, the record), named at the `oom`
    /// level by the `oom-kill` detector; its key once stored (otherwise the spool has it, and
    /// a line says so).
    pub(super) async fn store_kill_evidence(
        &self,
        proc: ProcKey,
        comm: &str,
        source: &'static str,
        profile: &Profile,
        started: Instant,
    ) -> Option<String> {
        let stored = Stored {
            proc,
            pid: proc.pid,
            comm,
            level: Level::Oom,
            source,
            detector: "oom-kill",
            started,
        };
        let (key, delivered) = self.deliver(stored, profile).await;
        delivered.then_some(key)
    }

    /// The object key and metadata of a profile about to be delivered. (The caller remembers
    /// the key for the process once the profile exists: `goheap.stored`.)
    pub fn name(&self, s: &Stored<'_>, kind: &str, extension: &str) -> (String, Metadata) {
        let seen = self.seen.get(s.proc);
        let identity = seen
            .as_ref()
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        let subject = Subject {
            pid: s.pid,
            comm: s.comm,
            level: s.level,
            detector: s.detector,
            source: s.source,
            namespace: identity.namespace.as_deref(),
            pod: identity.pod.as_deref(),
            container: identity.container.as_deref(),
            usage: seen.as_ref().map(|p| Usage {
                cmdline: &p.cmdline,
                cgroup: &p.cgroup,
                rss: p.rss,
                limit: p.limit,
                limit_source: format!("{:?}", p.limit_source),
                working_set: p.working_set,
                // At the kill, the kill's (the runtime's memory as the kernel read it then).
                accounting: match s.level {
                    Level::Oom => self.kill_accounting(s.proc, false),
                    _ => p.accounting.map(|(c, go)| account(&c, go.as_ref())),
                }
                .map(|a| a.to_json()),
            }),
        };
        self.naming.name(&subject, kind, extension)
    }
}

impl Stored<'_> {
    /// The line for a profile that waits in the spool (or was lost: the error says which).
    pub fn not_stored_yet(&self, key: &str, e: &anyhow::Error) {
        warn!(
            pid = self.pid,
            key,
            source = self.source,
            took_ms = self.started.elapsed().as_millis() as u64,
            "profile not stored yet: {e:#}"
        );
    }
}
