//! The OOM record: for every OOM kill of a watched process, one small JSON object stored
//! through the same spool and sink as the profiles (`…_pid-<PID>_oom.record.json`) — who died,
//! what it and its container used, and the keys of every profile memprof stored for it. "Did
//! we capture before it died?" is answered in one place; a kill with nothing before it is
//! logged as such, the number this project exists to drive to zero.
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use super::{accounting::Accounting, grew::Grower, Capturer, Profile, PENDING_WAIT};
use crate::{assess::ProcKey, cgroup::charge::Charge};

/// How long the record waits, after the captures in flight (`PENDING_WAIT`), for the at-kill
/// profile of a Go victim.
const AT_KILL_WAIT: Duration = Duration::from_secs(15);

/// What the daemon knows at the moment the kernel reports the kill.
pub struct Kill {
    pub key: ProcKey,
    pub host_pid: Option<u32>,
    /// The container's working set (usage − inactive file) read at the report.
    pub working_set: Option<u64>,
    pub oom_score_adj: Option<i32>,
    pub time: chrono::DateTime<chrono::Utc>,
    /// The container's charge read at the report.
    pub charge: Option<Charge>,
    /// The victim's anonymous memory at the kill, as the OOM killer counted it.
    pub victim_anon: Option<u64>,
}

impl Kill {
    /// The facts that must be read right away: the victim and its cgroup are going.
    pub fn now(
        key: ProcKey,
        host_pid: Option<u32>,
        working_set: Option<u64>,
        charge: Option<Charge>,
    ) -> Self {
        let adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", key.pid));
        Self {
            key,
            host_pid,
            working_set,
            oom_score_adj: adj.ok().and_then(|a| a.trim().parse().ok()),
            time: chrono::Utc::now(),
            charge,
            victim_anon: None,
        }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    pid: u32,
    host_pid: Option<u32>,
    comm: &'a str,
    cmdline: &'a [String],
    namespace: Option<&'a str>,
    pod: Option<&'a str>,
    container: Option<&'a str>,
    cgroup: &'a str,
    limit_bytes: u64,
    limit_source: String,
    /// RSS at memprof's last reading of the process.
    rss_bytes: u64,
    working_set_bytes: Option<u64>,
    oom_score_adj: Option<i32>,
    killed_at: String,
    /// Threshold profiles first, in the order they were stored, then the at-kill profile.
    profiles: &'a [String],
    /// Snapshots stored in place of a profile (see `snapshot`).
    snapshots: &'a [String],
    profiled_before_kill: bool,
    /// Where the memory went at the kill (the Go runtime's parts as the kernel read them).
    memory_accounting: Option<Accounting>,
    /// The functions whose in-use bytes grew most from the first profile to the last.
    grew: Vec<Grower>,
    memprof_version: &'static str,
}

impl Capturer {
    /// Waits for the victim's profiles, then stores its record.
    pub async fn record_oom(&self, kill: Kill) {
        let started = Instant::now();
        let Some(seen) = self.seen.get(kill.key) else {
            return;
        };
        let mut profiles = self
            .goheap
            .stored_after_pending(kill.key, PENDING_WAIT)
            .await;
        let at_kill = |keys: &[String]| keys.iter().any(|k| k.contains("_oom.heap."));
        // A Go victim the kernel walks gets its at-kill profile a moment later. (The registry
        // forgets a dead process's keys after a sweep or two: merge, never replace.)
        if self.goheap.by_pid(kill.key.pid).is_some() {
            let deadline = Instant::now() + AT_KILL_WAIT;
            while !at_kill(&profiles) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = self
                    .goheap
                    .stored_after_pending(kill.key, Duration::ZERO)
                    .await;
                for k in now {
                    if !profiles.contains(&k) {
                        profiles.push(k);
                    }
                }
            }
        }
        // Snapshots stored where no profile could be taken are evidence, not profiles.
        let (snapshots, profiles): (Vec<String>, Vec<String>) = profiles
            .into_iter()
            .partition(|k| k.ends_with(".snapshot.txt"));
        let before = profiles.iter().any(|k| !k.contains("_oom."));
        crate::metrics::oom_kill(before);
        let id = &seen.identity;
        // The at-kill walk's statistics arrived with its profile (waited for above).
        let accounting = self.kill_accounting(kill.key, true);
        let split = accounting.as_ref().map(Accounting::phrase);
        let grew = self.grew_of(kill.key);
        let grew_most = grew.first().map(Grower::phrase);
        let record = Record {
            pid: kill.key.pid,
            host_pid: kill.host_pid,
            comm: &seen.comm,
            cmdline: &seen.cmdline,
            namespace: id.namespace.as_deref(),
            pod: id.pod.as_deref(),
            container: id.container.as_deref(),
            cgroup: &seen.cgroup,
            limit_bytes: seen.limit,
            limit_source: format!("{:?}", seen.limit_source),
            rss_bytes: seen.rss,
            working_set_bytes: kill.working_set.or(seen.working_set),
            oom_score_adj: kill.oom_score_adj,
            killed_at: kill
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            profiles: &profiles,
            snapshots: &snapshots,
            profiled_before_kill: before,
            memory_accounting: accounting.clone(),
            grew,
            memprof_version: env!("CARGO_PKG_VERSION"),
        };
        let bytes = match serde_json::to_vec_pretty(&record) {
            Ok(b) => b,
            Err(e) => {
                warn!(pid = kill.key.pid, "OOM record not written: {e}");
                return;
            }
        };
        if !before {
            warn!(
                pid = kill.key.pid,
                comm = seen.comm,
                who = self.who_of(id),
                rss = seen.rss,
                limit = seen.limit,
                "OOM kill with no profile before it"
            );
        }
        let profile = Profile {
            kind: "record",
            extension: "json",
            bytes,
        };
        let stored = self.store_kill_evidence(kill.key, &seen.comm, "record", &profile, started);
        if let Some(key) = stored.await {
            info!(
                pid = kill.key.pid,
                who = self.who_of(id),
                key,
                profiles = profiles.len(),
                profiled_before_kill = before,
                memory = split.as_deref().unwrap_or("not read"),
                grew_most = grew_most.as_deref().unwrap_or("-"),
                "OOM record stored"
            );
        }
    }
}
