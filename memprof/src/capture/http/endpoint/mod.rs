//! Finds each process's pprof endpoint before it is needed: the TCP ports the process itself
//! listens on, in its own network namespace, tried for a heap profile — `PPROF_PORT` first
//! (taken as it is when the process listens there, as memprof always did), then the others
//! (or only `MEMPROF_PPROF_PORTS`), each probed once with a GET that must answer a gzip body.
//! Only Go programs' ports are probed unless the ports are listed: a node's databases and
//! caches are not sent HTTP requests they cannot answer.
//! A fresh process usually binds its ports after memprof first sees it, so discovery is
//! repeated with growing pauses, and on every sweep while nothing is found, unless nothing
//! changed since (`settled`). The capture path only looks the result up.
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tracing::{debug, info, warn};

use super::{
    listener,
    pprof::{NotServed, Pprof},
};
use crate::assess::ProcKey;
use crate::capture::goheap::registry::Registry;

/// How long a port has to answer a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Sweep rounds at once.
const SWEEPING_AT_ONCE: usize = 8;
/// Ports probed per process in one round (a process may listen on thousands): the next round
/// goes on with the ones not yet refused.
const PROBES_PER_ROUND: usize = 8;
/// Pauses between discoveries of a process that has no endpoint yet (then: every sweep).
const SCHEDULE_MS: [u64; 7] = [0, 200, 500, 1000, 2000, 4000, 8000];

#[derive(Default)]
struct Known {
    comm: String,
    /// Whether a failure to list its sockets, or ports left unprobed, were logged (once per
    /// program).
    warned: bool,
    told: bool,
    /// Which discovery schedule is current: a new program (exec) starts a new one, and the
    /// older one stops.
    schedule: u64,
    addr: Option<SocketAddr>,
    /// Addresses probed that answered with no profile (not probed again).
    refused: HashSet<SocketAddr>,
    /// A probing round runs for this process: another one waits for the next round.
    probing: bool,
    /// Its namespace's listeners when a round last looked at everything and found nothing
    /// (see `settled`).
    settled: Option<settled::Settled>,
}

/// What is known of each process's endpoint.
#[derive(Clone)]
pub struct Endpoints {
    pprof: Arc<Pprof>,
    /// With `MEMPROF_PPROF_PORTS`: only these ports are considered.
    only: Option<Vec<u16>>,
    /// Which processes are Go (probes go to those only).
    go: Registry,
    known: Arc<Mutex<HashMap<ProcKey, Known>>>,
    /// One permit per sweep round under way.
    sweeping: Arc<tokio::sync::Semaphore>,
}

impl Endpoints {
    pub fn new(pprof: Arc<Pprof>, only: Option<Vec<u16>>, go: Registry) -> Self {
        Self {
            pprof,
            only,
            go,
            known: Arc::default(),
            sweeping: Arc::new(tokio::sync::Semaphore::new(SWEEPING_AT_ONCE)),
        }
    }

    pub fn pprof(&self) -> &Pprof {
        &self.pprof
    }

    /// The endpoint found for the process, if any.
    pub fn get(&self, key: ProcKey) -> Option<SocketAddr> {
        self.lock().get(&key).and_then(|k| k.addr)
    }

    /// Discovers in the background on the schedule, until found or the process is gone. A
    /// second call for the process (it ran exec: a new program) starts over.
    pub fn discover(&self, key: ProcKey, comm: String) {
        let schedule = {
            let mut known = self.lock();
            let previous = known.remove(&key).map_or(0, |k| k.schedule);
            let fresh = Known {
                comm: comm.clone(),
                schedule: previous + 1,
                ..Known::default()
            };
            known.insert(key, fresh);
            previous + 1
        };
        let this = self.clone();
        tokio::spawn(async move {
            for ms in SCHEDULE_MS {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let current = this
                    .lock()
                    .get(&key)
                    .is_some_and(|k| k.schedule == schedule);
                if !current || !crate::assess::alive(key) {
                    return;
                }
                if this.find(key, &comm, true).await.is_some() {
                    return;
                }
            }
        });
    }

    /// One discovery: lists the process's listeners and tries the candidates; with `probe`
    /// false (the capture path) only the preferred port, which needs no probe.
    pub async fn find(&self, key: ProcKey, comm: &str, probe: bool) -> Option<SocketAddr> {
        self.find_round(key, comm, probe).await.0
    }

    /// As `find`, and whether the round looked at everything it could: every listener tried
    /// to an answer, the program known to be Go or not.
    async fn find_round(
        &self,
        key: ProcKey,
        comm: &str,
        probe: bool,
    ) -> (Option<SocketAddr>, bool) {
        {
            let mut known = self.lock();
            let entry = known.entry(key).or_default();
            if entry.addr.is_some() {
                return (entry.addr, true);
            }
            entry.comm = comm.to_string();
        }
        // One round per process at a time (discovery's schedule, the sweep, `memprof top`),
        // taken before its sockets are listed; a capture (no probes) needs none.
        let _round = match probe {
            true => match Round::begin(self, key) {
                Some(round) => Some(round),
                None => return (None, false),
            },
            false => None,
        };
        let pid = key.pid;
        let started = std::time::Instant::now();
        let Ok(listening) = tokio::task::spawn_blocking(move || listener::listening(pid)).await
        else {
            return (None, false);
        };
        let listening = match listening {
            Ok(l) => l,
            Err(e) => {
                // Usually a missing capability (SYS_ADMIN to enter another network namespace,
                // SYS_PTRACE for its /proc entries): worth one line per process.
                let first =
                    !std::mem::replace(&mut self.lock().entry(key).or_default().warned, true);
                if first {
                    warn!(pid, comm, "cannot list the process's listening sockets, so no pprof endpoint can be found: {e}");
                }
                return (None, false);
            }
        };
        let mut candidates = self.candidates(key, listening);
        // Undecided yet (the program's discovery runs beside this one): the next round probes.
        let go = self.go.is_go(key);
        let may_probe = probe && (self.only.is_some() || go == Some(true));
        // Once per program, and only when it is known not to be Go (the flag is taken only
        // then: an undecided round must not use it up).
        if probe
            && !may_probe
            && go == Some(false)
            && candidates.iter().any(|c| c.1)
            && !std::mem::replace(&mut self.lock().entry(key).or_default().told, true)
        {
            // A few ports, and how many: a process may listen on tens of thousands.
            let ports: Vec<u16> = candidates.iter().take(8).map(|c| c.0.port()).collect();
            let took_ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1e3);
            debug!(
                pid,
                ?ports,
                listening = candidates.len(),
                took_ms,
                comm,
                "not probing the ports of a program that is not Go (MEMPROF_PPROF_PORTS lists \
                 ports to probe whatever the program)"
            );
        }
        candidates.retain(|(_, needs_probe)| may_probe || !needs_probe);
        let mut all = go.is_some() || self.only.is_some();
        all &= !this_round(&mut candidates);
        for (addr, probe) in candidates {
            let verdict = if probe {
                self.pprof.probe(pid, addr, PROBE_TIMEOUT).await
            } else {
                Ok(())
            };
            let mut known = self.lock();
            let entry = known.entry(key).or_default();
            match verdict {
                Ok(()) => {
                    entry.addr = Some(addr);
                    drop(known);
                    let took_ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1e3);
                    info!(pid, comm, %addr, path = self.pprof.path(), probed = probe, took_ms, "pprof endpoint found");
                    return (Some(addr), true);
                }
                Err(e) => {
                    debug!(pid, %addr, "not a pprof endpoint: {e}");
                    // One that answered otherwise is not asked again; a slow one is, at the
                    // next round.
                    match e {
                        NotServed::Answer(_) => _ = entry.refused.insert(addr),
                        _ => all = false,
                    }
                }
            }
        }
        (None, all)
    }

    /// Addresses worth trying, the preferred port first (taken without a probe).
    fn candidates(&self, key: ProcKey, listening: Vec<SocketAddr>) -> Vec<(SocketAddr, bool)> {
        let known = self.lock();
        let refused = known.get(&key).map(|k| &k.refused);
        let preferred = self.pprof.port();
        let mut out: Vec<(SocketAddr, bool)> = listening
            .into_iter()
            .filter(|a| self.only.as_ref().is_none_or(|o| o.contains(&a.port())))
            .filter(|a| refused.is_none_or(|r| !r.contains(a)))
            .map(|a| (a, a.port() != preferred))
            .collect();
        out.sort_by_key(|(a, probe)| (*probe, a.port()));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProcKey, Known>> {
        self.known.lock().expect("endpoints lock")
    }
}

/// The candidates of one round: those needing no probe, and the first `PROBES_PER_ROUND` of
/// the others. Whether some were left for the next round.
fn this_round(candidates: &mut Vec<(SocketAddr, bool)>) -> bool {
    let (mut probes, before) = (0, candidates.len());
    candidates.retain(|(_, needs_probe)| {
        probes += usize::from(*needs_probe);
        !needs_probe || probes <= PROBES_PER_ROUND
    });
    candidates.len() < before
}

/// A probing round of one process, while it runs.
struct Round<'a> {
    endpoints: &'a Endpoints,
    key: ProcKey,
    /// The discovery (one per program the process ran) the round belongs to.
    schedule: u64,
}

impl<'a> Round<'a> {
    /// `None` when one runs already.
    fn begin(endpoints: &'a Endpoints, key: ProcKey) -> Option<Self> {
        let mut known = endpoints.lock();
        let entry = known.entry(key).or_default();
        let schedule = entry.schedule;
        (!std::mem::replace(&mut entry.probing, true)).then(|| Round {
            endpoints,
            key,
            schedule,
        })
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        // After an exec a new discovery owns the entry: its round is not this one's to end.
        if let Some(k) = self.endpoints.lock().get_mut(&self.key) {
            if k.schedule == self.schedule {
                k.probing = false;
            }
        }
    }
}

mod settled;
#[cfg(test)]
mod tests;
