//! The Go processes memprof discovered, shared by the daemon (which discovers them at first
//! sight and forgets them after they exit), the captures that read them, and the at-kill
//! assembler, which needs them after they died: an entry outlives its process by one sweep that lists the processes.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use memprof_common::GoTarget;
use tracing::{debug, info};

use super::{
    discover::{discover_with, Discovery, GoProc},
    share::{Shares, Ticket},
};
use crate::{assess::ProcKey, kernel::GoTargets};

/// Device and inode of the program a process runs: `exec` keeps the PID and start time but
/// changes the program, so what discovery found holds only for this.
pub(super) type ExeId = (u64, u64);

pub(super) fn exe_id(pid: u32) -> Option<ExeId> {
    crate::sys::files::identity(std::path::Path::new(&format!("/proc/{pid}/exe"))).ok()
}

/// A program settled as having no readable heap, and whether it is Go all the same (a release
/// or build memprof cannot read).
type Settled = (Option<ExeId>, bool);

struct Entry {
    go: Arc<GoProc>,
    exe: Option<ExeId>,
    comm: String,
    /// Seen dead by a sweep; removed by the next one.
    dead: bool,
    /// Its part of its group's share of the kernel's map, when registered there.
    _share: Option<Ticket>,
}

/// A discovered process, for a capture.
pub struct Found {
    pub key: ProcKey,
    pub go: Arc<GoProc>,
    pub comm: String,
}

#[derive(Clone, Default)]
pub struct Registry {
    entries: Arc<Mutex<HashMap<ProcKey, Entry>>>,
    /// Processes (and the program they ran) discovery is done with that have no readable Go
    /// heap.
    settled: Arc<Mutex<HashMap<ProcKey, Settled>>>,
    /// Keys of the profiles stored per process, oldest first (any process: kept apart from
    /// the discovery's result, which a new program replaces).
    pub(super) stored: Arc<Mutex<HashMap<ProcKey, Vec<String>>>>,
    /// Captures in flight per process: the at-kill profile waits for them, to name them.
    pub(super) pending: Arc<Mutex<HashMap<ProcKey, usize>>>,
    /// One discovery per process at a time, so a capture and the background discovery of the
    /// same process do not both run it; other processes' discoveries go on beside it.
    discovering: Arc<Mutex<HashMap<ProcKey, Arc<Mutex<()>>>>>,
    kernel: Option<GoTargets>,
    /// `MEMPROF_GO_ENABLE_PROFILING`: turn heap profiling on where the linker turned it off.
    enable_profiling: bool,
    /// `MEMPROF_GO_HEAP=endpoint-only`: discovery tells Go from not Go and reads no memory.
    endpoint_only: bool,
    shares: Shares,
}

impl Registry {
    pub fn new(kernel: Option<GoTargets>) -> Self {
        Self {
            kernel,
            ..Self::default()
        }
    }

    /// Reads no process's memory, not even to check what discovery found (`endpoint-only`).
    pub fn endpoint_only(mut self, on: bool) -> Self {
        self.endpoint_only = on;
        self
    }

    /// Turns heap profiling on in Go programs that have it off, at first sight (`enable`).
    pub fn enabling_profiling(mut self, on: bool) -> Self {
        self.enable_profiling = on;
        self
    }

    /// Decides in the background whether the process is Go and registers it (for the kernel's
    /// at-kill walk too). One line says what was found.
    pub fn discover(&self, key: ProcKey, comm: String) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // Registered first (the kernel's walk at the kill needs only addresses); the DWARF
            // is vetted after, so the first capture need not.
            if let Some(go) = this.ensure(key, &comm) {
                let _ = super::dwarf::vet(&go.exe);
            }
        });
    }

    /// The process's Go heap, discovered now if the background discovery has not run yet (a
    /// fast leak can cross its threshold first). Blocking.
    pub fn ensure(&self, key: ProcKey, comm: &str) -> Option<Arc<GoProc>> {
        let this_one = Arc::clone(
            self.discovering
                .lock()
                .expect("discovery locks")
                .entry(key)
                .or_default(),
        );
        let _one = this_one.lock().expect("discovery lock");
        let found = self.ensure_locked(key, comm);
        let mut locks = self.discovering.lock().expect("discovery locks");
        // The last one out removes the process's lock.
        if Arc::strong_count(&this_one) == 2 {
            locks.remove(&key);
        }
        found
    }

    fn ensure_locked(&self, key: ProcKey, comm: &str) -> Option<Arc<GoProc>> {
        let exe = exe_id(key.pid);
        if let Some(e) = self.entries.lock().expect("registry").get(&key) {
            if e.exe == exe {
                return Some(Arc::clone(&e.go));
            }
        }
        if self.settled.lock().expect("settled").get(&key).map(|s| s.0) == Some(exe) {
            return None;
        }
        // Whatever was found for another program of this process no longer holds.
        if self
            .entries
            .lock()
            .expect("registry")
            .remove(&key)
            .is_some()
        {
            if let Some(kernel) = &self.kernel {
                kernel.unregister(key.pid);
            }
        }
        let settle = |go| self.settled.lock().expect("settled").insert(key, (exe, go));
        let started = std::time::Instant::now();
        match discover_with(key.pid, !self.endpoint_only) {
            Ok(Discovery::Go(go)) => {
                return Some(self.add(key, exe, comm.to_string(), go, started.elapsed()))
            }
            Ok(Discovery::NotGo | Discovery::Denied) => {
                settle(false);
            }
            Ok(Discovery::Refused(why)) => {
                info!(pid = key.pid, comm, "executable not parsed: {why}");
                settle(false);
            }
            Ok(Discovery::Unreadable { version, reason }) => {
                info!(
                    pid = key.pid,
                    comm, version, "Go process without an endpoint-free heap profile: {reason}"
                );
                settle(true);
            }
            // Not settled: the next capture tries again.
            Err(e) => debug!(pid = key.pid, comm, "Go discovery failed: {e:#}"),
        }
        None
    }

    /// Registers a readable Go process; `took`: its discovery (the executable parsed, unless
    /// another process running it was discovered before).
    fn add(
        &self,
        key: ProcKey,
        exe: Option<ExeId>,
        comm: String,
        go: GoProc,
        took: std::time::Duration,
    ) -> Arc<GoProc> {
        let target = GoTarget {
            mbuckets: go.mbuckets,
            cycle: go.cycle,
            rate: go.rate,
            text_base: go.text_base,
            record_bytes: go.layout.record_bytes() as u32,
            stats_delta: go.stats.map_or(0, |s| s.delta_bytes),
            memstats: go.stats.map_or(0, |s| s.addr),
            stats_sys: go.stats.map_or(0, |s| s.sys_off),
            _pad: 0,
        };
        let (share, kernel) = self.shares.register(self.kernel.as_ref(), key.pid, target);
        if !self.endpoint_only {
            super::enable::when_off(key, exe, &comm, &go, self.enable_profiling);
        }
        info!(
            pid = key.pid,
            comm,
            version = go.version,
            mbuckets = format_args!("{:#x}", go.mbuckets),
            found_in = go.found_in(),
            took_ms = format_args!("{:.1}", took.as_secs_f64() * 1e3),
            at_kill = kernel,
            "Go heap readable from memory"
        );
        let go = Arc::new(go);
        let entry = Entry {
            go: Arc::clone(&go),
            exe,
            comm,
            dead: false,
            _share: share,
        };
        self.entries.lock().expect("registry").insert(key, entry);
        go
    }

    /// Whether the process runs a Go program (readable or not); `None` until its current
    /// program is discovered (what was found for the program before an exec says nothing).
    pub fn is_go(&self, key: ProcKey) -> Option<bool> {
        let exe = exe_id(key.pid);
        let entries = self.entries.lock().expect("registry");
        if entries.get(&key).is_some_and(|e| e.exe == exe) {
            return Some(true);
        }
        drop(entries);
        let settled = self.settled.lock().expect("settled");
        settled.get(&key).filter(|s| s.0 == exe).map(|s| s.1)
    }

    /// The newest process with this PID (the at-kill walk names PIDs only).
    pub fn by_pid(&self, pid: u32) -> Option<Found> {
        let entries = self.entries.lock().expect("registry");
        let (key, e) = entries
            .iter()
            .filter(|(k, _)| k.pid == pid)
            .max_by_key(|(k, _)| k.start)?;
        Some(Found {
            key: *key,
            go: Arc::clone(&e.go),
            comm: e.comm.clone(),
        })
    }

    /// Forgets processes that were already dead at the previous sweep.
    pub fn sweep(&self, alive: impl Fn(&ProcKey) -> bool) {
        self.settled
            .lock()
            .expect("settled")
            .retain(|k, _| alive(k));
        // Lock order: entries, then stored (as in `by_pid`).
        let mut entries = self.entries.lock().expect("registry");
        entries.retain(|_, e| !e.dead);
        for (k, e) in entries.iter_mut() {
            e.dead = !alive(k);
        }
        // A dead process's keys stay while its entry does: its at-kill profile names them.
        self.stored
            .lock()
            .expect("stored")
            .retain(|k, _| alive(k) || entries.contains_key(k));
        if let Some(kernel) = &self.kernel {
            let dead: Vec<u32> = entries
                .iter()
                .filter(|(_, e)| e.dead)
                .map(|(k, _)| k.pid)
                .collect();
            for pid in dead {
                // A live process that reused the PID keeps its registration.
                if !entries.iter().any(|(k, e)| k.pid == pid && !e.dead) {
                    kernel.unregister(pid);
                }
            }
        }
    }
}
