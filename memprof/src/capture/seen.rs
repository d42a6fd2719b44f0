//! What memprof has seen of each process: who it is (for keys and log lines), its command
//! line (read at first sight: a process being OOM-killed has lost it by the time the kill is
//! reported) and its last reading — the facts the OOM record needs after the process is gone.
use std::{
    collections::HashMap,
    io::Read,
    sync::{Arc, Mutex},
};

use crate::{
    assess::{
        identity::Identity,
        scope::{Excluded, Scope},
        CgroupDir, LimitSource, ProcKey, Reading,
    },
    capture::goheap::memstats::GoMemory,
    cgroup::charge::Charge,
    deliver::metadata::CUT,
};

/// How much of a command line is kept (a process may pass megabytes of arguments, and is kept
/// per process and named in every spool header); the rest is cut, and the cut marked.
pub const CMDLINE_MAX: usize = 4 << 10;

#[derive(Clone, Debug)]
pub struct Proc {
    pub identity: Arc<Identity>,
    pub cmdline: Vec<String>,
    /// `/proc/PID/cgroup`'s memory (or unified) path.
    pub cgroup: String,
    /// That cgroup's verified directory, when found (for a snapshot's `memory.stat`).
    pub cgroup_dir: Option<CgroupDir>,
    pub comm: String,
    pub rss: u64,
    pub limit: u64,
    pub limit_source: LimitSource,
    /// The container's working set at the last look (see `Assessor::working_set`).
    pub working_set: Option<u64>,
    /// Where the memory went at the last capture (the charge and the Go runtime's statistics
    /// read together), for its profile's metadata and for a kill reported too late to read it.
    pub accounting: Option<(Charge, Option<GoMemory>)>,
    /// Whether memprof watches it (`Err`: the rule that leaves it out).
    pub scope: Result<(), Excluded>,
}

#[derive(Default)]
pub struct Seen {
    procs: Mutex<HashMap<ProcKey, Proc>>,
}

impl Seen {
    /// Records a reading; the first one of a process also reads its command line, takes its
    /// cgroup path and directory (`cgroup`, asked only then) and judges it against `scope`. Returns that
    /// verdict, and whether this was the first.
    pub fn saw(
        &self,
        r: &Reading,
        scope: &Scope,
        cgroup: impl FnOnce() -> (String, Option<CgroupDir>),
    ) -> (Result<(), Excluded>, bool) {
        let mut procs = self.lock();
        if let Some(p) = procs.get_mut(&r.key) {
            p.identity = Arc::clone(&r.identity);
            p.comm.clone_from(&r.comm);
            p.rss = r.rss;
            // A dying process's cgroup can no longer be read (its files go first): a limit
            // found before is kept rather than replaced by the node's MemTotal, so the OOM
            // record names the limit the process was killed at.
            if r.limit_source != LimitSource::Unresolved
                || p.limit_source == LimitSource::Unresolved
            {
                (p.limit, p.limit_source) = (r.limit, r.limit_source);
            }
            return (p.scope, false);
        }
        let cmdline = cmdline(r.key.pid);
        let (cgroup, cgroup_dir) = cgroup();
        let verdict = scope.admits(&r.comm, &cgroup);
        procs.insert(
            r.key,
            Proc {
                scope: verdict,
                identity: Arc::clone(&r.identity),
                cmdline,
                cgroup,
                cgroup_dir,
                comm: r.comm.clone(),
                rss: r.rss,
                limit: r.limit,
                limit_source: r.limit_source,
                working_set: None,
                accounting: None,
            },
        );
        (verdict, true)
    }

    /// Records the process's RSS as just read.
    pub fn rss(&self, key: ProcKey, bytes: u64) {
        if let Some(p) = self.lock().get_mut(&key) {
            p.rss = bytes;
        }
    }

    /// Records the container's working set as just read.
    pub fn working_set(&self, key: ProcKey, bytes: Option<u64>) {
        if let (Some(p), Some(b)) = (self.lock().get_mut(&key), bytes) {
            p.working_set = Some(b);
        }
    }

    /// Records what the memory accounting is made of, as just read at a capture (nothing of
    /// an earlier capture is kept).
    pub fn memory(&self, key: ProcKey, read: Option<(Charge, Option<GoMemory>)>) {
        if let Some(p) = self.lock().get_mut(&key) {
            p.accounting = read;
        }
    }

    pub fn get(&self, key: ProcKey) -> Option<Proc> {
        self.lock().get(&key).cloned()
    }

    /// The newest process with this PID (events that name only a PID).
    pub fn newest(&self, pid: u32) -> Option<(ProcKey, Proc)> {
        let procs = self.lock();
        procs
            .iter()
            .filter(|(k, _)| k.pid == pid)
            .max_by_key(|(k, _)| k.start)
            .map(|(k, p)| (*k, p.clone()))
    }

    pub fn retain(&self, alive: impl Fn(&ProcKey) -> bool) {
        self.lock().retain(|k, _| alive(k));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProcKey, Proc>> {
        self.procs.lock().expect("seen")
    }
}

/// The process's arguments, at most `CMDLINE_MAX` bytes of them.
fn cmdline(pid: u32) -> Vec<String> {
    let mut raw = Vec::new();
    if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/cmdline")) {
        let _ = f.take(CMDLINE_MAX as u64 + 1).read_to_end(&mut raw);
    }
    split_cmdline(&raw)
}

/// NUL-terminated arguments (empty ones are arguments too); more than `CMDLINE_MAX` bytes are
/// cut, the last argument kept marked with `CUT`.
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let cut = raw.len() > CMDLINE_MAX;
    let raw = &raw[..raw.len().min(CMDLINE_MAX)];
    let args = match (cut, raw.strip_suffix(&[0])) {
        (false, Some(args)) => args,
        (false, None) => return Vec::new(),
        (true, _) => raw,
    };
    let mut out: Vec<String> = args
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if cut {
        if let Some(last) = out.last_mut() {
            last.push_str(CUT);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(limit: u64, limit_source: LimitSource) -> Reading {
        Reading {
            key: ProcKey { pid: 7, start: 1 },
            comm: "app".into(),
            rss: limit / 2,
            counters: [0; 4],
            limit,
            limit_source,
            identity: Arc::default(),
            at: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_dying_reading_keeps_the_limit_found_before() {
        let seen = Seen::default();
        let scope = Scope::default();
        let none = || (String::new(), None);
        let key = ProcKey { pid: 7, start: 1 };
        let _ = seen.saw(&reading(512 << 20, LimitSource::Cgroup), &scope, none);
        let _ = seen.saw(&reading(24 << 30, LimitSource::Unresolved), &scope, none);
        let p = seen.get(key).unwrap();
        assert_eq!((p.limit, p.limit_source), (512 << 20, LimitSource::Cgroup));
        // A resize, or a limit removed, is still taken.
        let _ = seen.saw(&reading(1 << 30, LimitSource::Unlimited), &scope, none);
        assert_eq!(seen.get(key).unwrap().limit_source, LimitSource::Unlimited);
    }

    #[test]
    fn an_unresolved_limit_is_replaced_once_found() {
        let seen = Seen::default();
        let scope = Scope::default();
        let none = || (String::new(), None);
        let _ = seen.saw(&reading(24 << 30, LimitSource::Unresolved), &scope, none);
        let _ = seen.saw(&reading(256 << 20, LimitSource::Cgroup), &scope, none);
        let p = seen.get(ProcKey { pid: 7, start: 1 }).unwrap();
        assert_eq!((p.limit, p.limit_source), (256 << 20, LimitSource::Cgroup));
    }

    #[test]
    fn command_lines_are_kept_to_a_bound_and_the_cut_marked() {
        assert_eq!(split_cmdline(b"a\0\0b\0"), ["a", "", "b"]);
        assert!(split_cmdline(b"").is_empty());
        let mut long = b"prog\0".to_vec();
        long.extend(std::iter::repeat_n(b'x', 6 << 20));
        long.push(0);
        let args = split_cmdline(&long[..CMDLINE_MAX + 1]);
        assert_eq!(args[0], "prog");
        assert!(args[1].ends_with(CUT), "{}", &args[1][args[1].len() - 20..]);
        assert_eq!(
            args.iter().map(String::len).sum::<usize>(),
            "prog".len() + CMDLINE_MAX - 5 + CUT.len()
        );
    }
}
