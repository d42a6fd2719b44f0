//! The Go processes memprof discovered, shared by the daemon (which discovers them at first
//! sight and forgets them after they exit), the captures that read them, and the at-kill
//! assembler, which needs them after they died: an entry outlives its process by one sweep.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use memprof_common::GoTarget;
use tracing::{debug, info, warn};

use super::discover::{discover, Discovery, GoProc};
use crate::{assess::ProcKey, detect::ebpf::GoTargets};

struct Entry {
    go: Arc<GoProc>,
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
    kernel: Option<GoTargets>,
}

impl Registry {
    pub fn new(kernel: Option<GoTargets>) -> Self {
        Self {
            entries: Arc::default(),
            kernel,
        }
    }

    /// Decides in the background whether the process is Go and registers it (for the kernel's
    /// at-kill walk too). One line says what was found.
    pub fn discover(&self, key: ProcKey, comm: String) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || match discover(key.pid) {
            Ok(Discovery::Go(go)) => this.add(key, comm, go),
            Ok(Discovery::NotGo) => {}
            Ok(Discovery::Unreadable { version, reason }) => info!(
                pid = key.pid,
                comm, version, "Go process without an endpoint-free heap profile: {reason}"
            ),
            Err(e) => debug!(pid = key.pid, comm, "Go discovery failed: {e:#}"),
        });
    }

    fn add(&self, key: ProcKey, comm: String, go: GoProc) {
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
        info!(
            pid = key.pid,
            comm,
            version = go.version,
            mbuckets = format_args!("{:#x}", go.mbuckets),
            at_kill = kernel,
            "Go heap readable from memory"
        );
        let entry = Entry {
            go: Arc::new(go),
            comm,
            stored: Vec::new(),
            dead: false,
        };
        self.entries.lock().expect("registry").insert(key, entry);
    }

    pub fn get(&self, key: ProcKey) -> Option<Arc<GoProc>> {
        let entries = self.entries.lock().expect("registry");
        entries.get(&key).map(|e| Arc::clone(&e.go))
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

    /// Forgets a PID's processes at once (it ran exec: another program now).
    pub fn forget_pid(&self, pid: u32) {
        self.entries
            .lock()
            .expect("registry")
            .retain(|k, _| k.pid != pid);
        if let Some(kernel) = &self.kernel {
            kernel.unregister(pid);
        }
    }

    /// Forgets processes that were already dead at the previous sweep.
    pub fn sweep(&self, alive: impl Fn(&ProcKey) -> bool) {
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
