//! The sweep's discovery, for processes still without an endpoint. One whose last round looked
//! at everything (each listener tried to an answer, its program known to be Go or not) and
//! found nothing is settled: it is looked at again only once the listening sockets of its
//! network namespace change, since it can serve an endpoint only on one of those. So a sweep
//! reads each namespace's listeners once (a netlink dump of listeners only) instead of every
//! process's descriptors — beside thousands of idle processes, that listing every ten seconds
//! was most of memprof's idle CPU. A process that changes its network namespace without an
//! exec is not followed there; the capture path still lists its sockets when it is captured.
//! One whose namespace memprof may not read (a process that made itself non-dumpable) is
//! settled on that: its descriptors, listed by each sweep, were a steady share of idle CPU.
use std::collections::HashMap;

use super::Endpoints;
use crate::{
    assess::ProcKey,
    capture::http::{listener, netns::NetNs},
};

/// A network namespace and its listeners as `listener::namespace_listeners` sums them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Listeners {
    netns: NetNs,
    sum: u64,
}

/// What a settled process's namespace listened on (`None`: its namespace cannot be read).
pub(super) type Settled = Option<Listeners>;

impl Endpoints {
    /// Drops processes that are gone and discovers again for those still without an
    /// endpoint and not settled (only ports not refused before are probed).
    pub fn sweep(&self, alive: impl Fn(&ProcKey) -> bool) {
        // Names are cloned only for the processes looked at again: beside thousands of
        // settled ones, cloning every name each sweep was a share of memprof's idle CPU.
        let pending: Vec<(ProcKey, Option<Settled>)> = {
            let mut known = self.lock();
            known.retain(|k, _| alive(k));
            known
                .iter()
                .filter(|(_, k)| k.addr.is_none())
                .map(|(key, k)| (*key, k.settled))
                .collect()
        };
        if pending.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // Read before any process is looked at: a listener opened after is in the next
            // sweep's reading, so a process settled on this one is looked at again then.
            let places: Vec<(u32, Option<NetNs>)> = pending
                .iter()
                .map(|(key, settled)| (key.pid, settled.flatten().map(|s| s.netns)))
                .collect();
            let now = tokio::task::spawn_blocking(move || listeners_now(&places))
                .await
                .unwrap_or_default();
            for (key, settled) in pending {
                let listeners = now.get(&key.pid).copied();
                if settled == Some(listeners) {
                    continue;
                }
                let Some(comm) = this.lock().get(&key).map(|k| k.comm.clone()) else {
                    continue;
                };
                // One task each, a few at a time: a process whose ports hang delays only its
                // own discovery, and a node of many processes does not fill the blocking pool.
                let this = this.clone();
                tokio::spawn(async move {
                    let _turn = this.sweeping.acquire().await;
                    let (found, all) = this.find_round(key, &comm, true).await;
                    if let (None, Some(k)) = (found, this.lock().get_mut(&key)) {
                        k.settled = all.then_some(listeners);
                    }
                });
            }
        });
    }
}

/// Each process's network namespace (`known`, or read now) and its listeners now, read once
/// per namespace; a process whose namespace or listeners cannot be read is left out.
fn listeners_now(places: &[(u32, Option<NetNs>)]) -> HashMap<u32, Listeners> {
    let mut sums: HashMap<NetNs, Option<u64>> = HashMap::new();
    let mut out = HashMap::new();
    for &(pid, known) in places {
        let Some(netns) = known.or_else(|| NetNs::of(&pid.to_string()).ok()) else {
            continue;
        };
        let sum = *sums
            .entry(netns)
            .or_insert_with(|| listener::namespace_listeners(pid).ok());
        if let Some(sum) = sum {
            out.insert(pid, Listeners { netns, sum });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_of_one_namespace_share_one_reading() {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let now = listeners_now(&[(me, None), (parent, None), (u32::MAX - 1, None)]);
        assert!(now.contains_key(&me));
        assert!(
            !now.contains_key(&(u32::MAX - 1)),
            "a gone process is left out"
        );
        if let Some(p) = now.get(&parent).filter(|p| p.netns == now[&me].netns) {
            assert_eq!(p.sum, now[&me].sum);
        }
    }
}
