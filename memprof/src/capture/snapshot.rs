//! A generic snapshot, stored when a capture took no profile (no endpoint, an endpoint that
//! refused, hung, failed or answered something else, a heap that could not be read): what the
//! kernel says of the process and its container, and what the endpoint answered. An incident
//! always leaves evidence, readable with `cat`. Taken once per crossing, not on retries.
//!
//! The kernel's files are read the moment a capture is due (`Evidence`), beside the fetch:
//! what they say is the state at the crossing, whatever the endpoint does after (all but the
//! costly `smaps_rollup`, read when the snapshot is stored).
use std::{fmt::Write, time::Instant};

use super::{handover::Stored, http::pprof::Answer, Capturer, Profile};
use crate::{
    assess::{CgroupDir, Reading},
    detect::Candidate,
};

impl Capturer {
    /// Starts reading the kernel's files of the process now, beside the capture (on a
    /// blocking thread: they are small, but they are files).
    pub(super) fn evidence(&self, c: &Candidate, reading: &Reading) -> EvidenceRead {
        let (pid, comm) = (c.ns_pid, reading.comm.clone());
        let cgroup_dir = self.seen.get(reading.key).and_then(|p| p.cgroup_dir);
        let read = move || Evidence::read(pid, &comm, cgroup_dir.as_ref());
        EvidenceRead::Reading(pid, tokio::task::spawn_blocking(read))
    }

    /// Delivers the snapshot of `evidence`; its key once stored.
    pub(super) async fn store_snapshot(
        &self,
        c: &Candidate,
        reading: &Reading,
        evidence: &Evidence,
        why: &str,
        answer: Option<&Answer>,
    ) -> Option<String> {
        let started = Instant::now();
        let pid = c.ns_pid;
        let text = evidence.snapshot(why, answer);
        let profile = Profile {
            kind: "snapshot",
            extension: "txt",
            bytes: text.into_bytes(),
        };
        // Named as a profile of this capture would be (its level: percent, bytes, container).
        let (detector, level) = self.labels(c, reading);
        let (key, delivered) = self
            .deliver(
                Stored {
                    proc: reading.key,
                    pid,
                    comm: &reading.comm,
                    level,
                    source: "snapshot",
                    detector: &detector,
                    started,
                },
                &profile,
            )
            .await;
        tracing::info!(
            pid,
            comm = reading.comm,
            who = self.who_of(&reading.identity),
            bytes = profile.bytes.len(),
            key,
            spooled = !delivered,
            "snapshot stored in place of a profile"
        );
        delivered.then_some(key)
    }
}

/// Evidence being read, or read.
pub enum EvidenceRead {
    Reading(u32, tokio::task::JoinHandle<Evidence>),
    Read(Evidence),
}

impl EvidenceRead {
    /// The evidence, once read.
    pub async fn get(&mut self) -> &Evidence {
        if let Self::Reading(pid, handle) = self {
            let read = match handle.await {
                Ok(e) => e,
                Err(e) => Evidence {
                    pid: *pid,
                    head: format!("memprof snapshot of PID {pid}: reading it failed: {e}\n"),
                    stat: String::new(),
                },
            };
            *self = Self::Read(read);
        }
        match self {
            Self::Read(e) => e,
            Self::Reading(..) => unreachable!("read above"),
        }
    }
}

/// What the kernel says of a process and its container at one moment: one section per
/// source, each headed by where it was read. `/proc/PID/smaps_rollup` walks every page of the
/// process (5 ms for 400 MiB) and would slow the capture it runs beside: it is read when the
/// snapshot is stored; the rest when the capture is due.
pub struct Evidence {
    pid: u32,
    /// The first line, then `/proc/PID/status`.
    head: String,
    /// The cgroup's `memory.stat` section.
    stat: String,
}

impl Evidence {
    pub fn read(pid: u32, comm: &str, cgroup_dir: Option<&CgroupDir>) -> Self {
        let mut head = String::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // The process names itself (`PR_SET_NAME` takes any bytes): escaped, like all it names.
        let comm = comm.escape_debug();
        let _ = writeln!(head, "memprof snapshot of PID {pid} ({comm}) at {now}");
        section(&mut head, &format!("/proc/{pid}/status"));
        let mut stat = String::new();
        match cgroup_dir {
            // Read through the verified directory: nothing the process linked or mounted there.
            Some(dir) => {
                let _ = writeln!(stat, "\n== {}/memory.stat", dir.shown());
                match dir.read_text("memory.stat") {
                    Ok(text) => stat.push_str(&printable(&text)),
                    Err(e) => {
                        let _ = writeln!(stat, "(unreadable: {e})");
                    }
                }
            }
            None => {
                let _ = writeln!(
                    stat,
                    "\n== memory.stat\n(the process's memory cgroup was not found)"
                );
            }
        }
        Self { pid, head, stat }
    }

    /// The snapshot's text: the evidence, why no profile came, what the endpoint answered.
    pub fn snapshot(&self, why: &str, answer: Option<&Answer>) -> String {
        let (first, status) = self.head.split_once('\n').unwrap_or((&self.head, ""));
        let mut out = format!(
            "{first}\nno profile could be taken: {}\n",
            why.escape_debug()
        );
        out.push_str(status);
        section(&mut out, &format!("/proc/{}/smaps_rollup", self.pid));
        out.push_str(&self.stat);
        if let Some(a) = answer {
            let _ = writeln!(out, "\n== the endpoint's answer");
            let status = a.status.as_deref().unwrap_or("(no status line)");
            let status = status.escape_debug();
            let _ = writeln!(out, "status: {status}\nbody bytes received: {}", a.received);
            if !a.head.is_empty() {
                let _ = writeln!(
                    out,
                    "first {} bytes:\n{}",
                    a.head.len(),
                    a.head.escape_ascii()
                );
            }
        }
        out
    }
}

/// `text` with control characters other than newlines and tabs escaped: the kernel's files
/// show the names the process gave itself as they are.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn section(out: &mut String, path: &str) {
    let _ = writeln!(out, "\n== {path}");
    let read = std::fs::File::open(path).and_then(|f| crate::sys::files::read_bounded(f, 64 << 10));
    match read {
        Ok(text) => out.push_str(&printable(&String::from_utf8_lossy(&text))),
        Err(e) => {
            let _ = writeln!(out, "(unreadable: {e})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_source_and_shows_the_answer_escaped() {
        let answer = Answer {
            status: Some("200 OK".into()),
            head: b"<html>\x00oops".to_vec(),
            received: 1 << 20,
        };
        let pid = std::process::id();
        let text = Evidence::read(pid, "self", None).snapshot("HTTP 404", Some(&answer));
        assert!(
            text.contains("no profile could be taken: HTTP 404"),
            "{text}"
        );
        assert!(
            text.contains(&format!("== /proc/{pid}/status\nName:")),
            "{text}"
        );
        assert!(text.contains("VmRSS:"), "{text}");
        assert!(text.contains("memory cgroup was not found"), "{text}");
        assert!(text.contains("body bytes received: 1048576"), "{text}");
        assert!(text.contains("<html>\\x00oops"), "{text}");
    }
}
