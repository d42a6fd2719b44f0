//! Naming a captured profile and handing it to delivery: its object key, the metadata that
//! travels with it (who the process was, what it used, why it was captured), and one line in
//! the log while it waits in the spool.
use std::time::Instant;

use tracing::warn;

use super::{job::Capturer, Profile};
use crate::{
    assess::{identity::Identity, LimitSource, ProcKey, Reading},
    deliver::{
        key::{object_key, KeyParts, Level, Place},
        metadata::Metadata,
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
        let place = self.place_of(identity);
        let container = identity.container.as_deref().unwrap_or("-");
        format!("{}/{}/{container}", place.namespace, place.pod)
    }

    fn place_of(&self, identity: &Identity) -> Place {
        match (&identity.namespace, &identity.pod) {
            (Some(namespace), Some(pod)) => Place {
                namespace: namespace.clone(),
                pod: pod.clone(),
            },
            _ => self.place.clone(),
        }
    }

    /// Names the profile and delivers it: its key, and whether it is stored already (otherwise
    /// it waits in the spool, and the retry loop delivers it). The key is remembered for the
    /// process before delivery starts, so an OOM kill during a slow upload still names it.
    pub async fn deliver(&self, s: Stored<'_>, profile: &Profile) -> (String, bool) {
        let (key, meta) = self.name(&s, profile.kind, profile.extension);
        self.goheap.stored(s.proc, &key);
        match self.deliverer.deliver(&key, &meta, &profile.bytes).await {
            Ok(()) => (key, true),
            Err(e) => {
                s.not_stored_yet(&key, &e);
                (key, false)
            }
        }
    }

    /// The object key and metadata of a profile about to be delivered. (The caller remembers
    /// the key for the process once the profile exists: `goheap.stored`.)
    pub fn name(&self, s: &Stored<'_>, kind: &str, extension: &str) -> (String, Metadata) {
        let seen = self.seen.get(s.proc);
        let identity = seen
            .as_ref()
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        let place = self.place_of(&identity);
        let time = chrono::Utc::now();
        let key = object_key(&KeyParts {
            prefix: &self.key_prefix,
            place: &place,
            name: identity.container.as_deref().unwrap_or(s.comm),
            pid: s.pid,
            level: s.level,
            kind,
            extension,
            time,
        });
        let mut meta = Metadata::new();
        meta.set("pid", s.pid)
            .set("comm", s.comm)
            .set("trigger", s.level)
            .set("detector", s.detector)
            .set("source", s.source)
            .set("kind", kind)
            .set("namespace", &place.namespace)
            .set("pod", &place.pod)
            .set("container", identity.container.as_deref().unwrap_or("-"))
            .set("node", &self.node)
            .set(
                "captured-at",
                time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
            .set("memprof-version", env!("CARGO_PKG_VERSION"));
        if let Some(p) = &seen {
            meta.set("cmdline", p.cmdline.join(" "))
                .set("cgroup", &p.cgroup)
                .set("rss", p.rss)
                .set("limit", p.limit)
                .set("limit-source", format!("{:?}", p.limit_source))
                .set(
                    "percent",
                    format!("{:.1}", p.rss as f64 * 100.0 / p.limit.max(1) as f64),
                );
            if let Some(ws) = p.working_set {
                meta.set("working-set", ws);
            }
        }
        (key, meta)
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
