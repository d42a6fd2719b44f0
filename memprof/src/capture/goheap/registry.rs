//! The Go processes memprof discovered, shared by the daemon (which discovers them at first
//! sight and forgets them after they exit), the captures that read them, and the at-kill
//! assembler, which needs them after they died: an entry outlives its process by one sweep.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    sync::{Arc, Mutex},
};

use memprof_common::GoTarget;
use tracing::{debug, info, warn};

use super::discover::{discover, Discovery, GoProc};
use crate::{assess::ProcKey, detect::ebpf::GoTargets};

/// Device and inode of the program a process runs: `exec` keeps the PID and start time but
/// changes the program, so what discovery found holds only for this.
type ExeId = (u64, u64);

fn exe_id(pid: u32) -> Option<ExeId> {
    let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((m.dev(), m.ino()))
}

struct Entry {
    go: Arc<GoProc>,
    exe: Option<ExeId>,
    comm: String,
    /// Keys of the profiles stored for the process, oldest first.
    stored: Vec<String>,
    /// Seen dead by a sweep; removed by the next one.
    dead: bool,
}

/// A discovered process, for a capture.
pub struct Found {
    pub key: ProcKey,
    pub go: Arc<GoProc>,
    pub comm: String,
    pub stored: Vec<String>,
}

#[derive(Clone, Default)]
pub struct Registry {
    entries: Arc<Mutex<HashMap<ProcKey, Entry>>>,
    /// Processes (and the program they ran) discovery is done with that have no readable Go
    /// heap.
    settled: Arc<Mutex<HashMap<ProcKey, Option<ExeId>>>>,
    /// One discovery at a time, so a capture and the background discovery of the same
    /// process do not both run it.
    discovering: Arc<Mutex<()>>,
    kernel: Option<GoTargets>,
}

impl Registry {
    pub fn new(kernel: Option<GoTargets>) -> Self {
        Self {
            kernel,
            ..Self::default()
        }
    }

    /// Decides in the background whether the process is Go and registers it (for the kernel's
    /// at-kill walk too). One line says what was found.
    pub fn discover(&self, key: ProcKey, comm: String) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.ensure(key, &comm));
    }

    /// The process's Go heap, discovered now if the background discovery has not run yet (a
    /// fast leak can cross its threshold first). Blocking.
    pub fn ensure(&self, key: ProcKey, comm: &str) -> Option<Arc<GoProc>> {
        let _one = self.discovering.lock().expect("discovery lock");
        let exe = exe_id(key.pid);
        if let Some(e) = self.entries.lock().expect("registry").get(&key) {
            if e.exe == exe {
                return Some(Arc::clone(&e.go));
            }
        }
        if self.settled.lock().expect("settled").get(&key) == Some(&exe) {
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
        let settle = || self.settled.lock().expect("settled").insert(key, exe);
        match discover(key.pid) {
            Ok(Discovery::Go(go)) => return Some(self.add(key, exe, comm.to_string(), go)),
            Ok(Discovery::NotGo) => {
                settle();
            }
            Ok(Discovery::Unreadable { version, reason }) => {
                info!(
                    pid = key.pid,
                    comm, version, "Go process without an endpoint-free heap profile: {reason}"
                );
                settle();
            }
            // Not settled: the next capture tries again.
            Err(e) => debug!(pid = key.pid, comm, "Go discovery failed: {e:#}"),
        }
        None
    }

    fn add(&self, key: ProcKey, exe: Option<ExeId>, comm: String, go: GoProc) -> Arc<GoProc> {
        let target = GoTarget {
            mbuckets: go.mbuckets,
            cycle: go.cycle,
            rate: go.rate,
            text_base: go.text_base,
            record_bytes: go.layout.record_bytes() as u32,
            _pad: 0,
        };
        let kernel = match &self.kernel {
            Some(k) => match k.register(key.pid, target) {
                Ok(()) => "registered",
                Err(e) => {
                    warn!(
                        pid = key.pid,
                        "the kernel cannot walk this heap at the kill: {e:#}"
                    );
                    "full"
                }
            },
            None => "unavailable",
        };
        if go.profiler_off {
            info!(
                pid = key.pid,
                comm,
                version = go.version,
                "Go heap profiling is off unless the program sets MemProfileRate itself; no \
                 endpoint-free profile is possible then: {}",
                super::PROFILING_OFF
            );
        }
        info!(
            pid = key.pid,
            comm,
            version = go.version,
            mbuckets = format_args!("{:#x}", go.mbuckets),
            at_kill = kernel,
            "Go heap readable from memory"
        );
        let go = Arc::new(go);
        let entry = Entry {
            go: Arc::clone(&go),
            exe,
            comm,
            stored: Vec::new(),
            dead: false,
        };
        self.entries.lock().expect("registry").insert(key, entry);
        go
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
            stored: e.stored.clone(),
        })
    }

    /// Remembers a stored profile, for the at-kill profile to name its predecessors.
    pub fn stored(&self, key: ProcKey, object_key: &str) {
        if let Some(e) = self.entries.lock().expect("registry").get_mut(&key) {
            e.stored.push(object_key.to_string());
        }
    }

    /// Forgets processes that were already dead at the previous sweep.
    pub fn sweep(&self, alive: impl Fn(&ProcKey) -> bool) {
        self.settled
            .lock()
            .expect("settled")
            .retain(|k, _| alive(k));
        let mut entries = self.entries.lock().expect("registry");
        entries.retain(|_, e| !e.dead);
        for (k, e) in entries.iter_mut() {
            e.dead = !alive(k);
        }
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
