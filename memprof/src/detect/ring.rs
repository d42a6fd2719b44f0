//! Detect, from the kernel: crossings of armed levels, OOM victims and execs, read from this
//! instance's ring buffer as the programs in `kernel` write them.
use anyhow::{anyhow, Result};
use memprof_common::{Event, EventKind};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
};

use super::{Candidate, Source};
use crate::kernel::{monotonic_from_ktime, Kernel, KernelProc};

/// Forwards ring-buffer events until the receiver goes away. Keeps `kernel` (and thereby the
/// attached programs) alive for as long as it runs, and puts `rss_stat` on its hook or takes
/// it off as `gate` says (`detect::floor`); on for good should the gate stop.
pub async fn forward(
    mut kernel: Kernel,
    tx: mpsc::Sender<Candidate>,
    mut gate: Option<watch::Receiver<bool>>,
) -> Result<()> {
    let ring = kernel.take_events_ring()?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged until the
    // AsyncFd (and the ring buffer inside it) is dropped.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("registering the ring buffer with tokio: {e}"))?;
    let mut reap = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        let mut guard = tokio::select! {
            guard = fd.readable_mut() => guard?,
            _ = reap.tick() => {
                kernel.reap_dead();
                continue;
            }
            on = switched(&mut gate) => {
                if on.is_none() {
                    gate = None;
                }
                kernel.switch_rss(on.unwrap_or(true));
                continue;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            let Some(event) = parse_event(&item) else {
                continue;
            };
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
        guard.clear_ready();
    }
}

/// The gate's next word: `None` once it has stopped; never while there is none.
async fn switched(gate: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    match gate {
        Some(rx) => rx.changed().await.ok().map(|()| *rx.borrow_and_update()),
        None => std::future::pending().await,
    }
}

fn parse_event(bytes: &[u8]) -> Option<Candidate> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: the kernel wrote an `Event`; read_unaligned copes with any alignment.
    let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let (source, kind) = match e.kind {
        k if k == EventKind::Crossed as u32 => (
            Source::Kernel {
                rss: e.rss,
                level: e.level,
            },
            "crossed",
        ),
        k if k == EventKind::OomVictim as u32 => (
            Source::OomVictim {
                rss: e.rss,
                anon: e.level,
            },
            "oom_victim",
        ),
        k if k == EventKind::Exec as u32 => (Source::Exec, "exec"),
        _ => return None,
    };
    crate::metrics::kernel_event(kind);
    Some(Candidate {
        ns_pid: e.ns_pid,
        kernel: Some(KernelProc {
            host_pid: e.host_pid,
            identity: e.identity,
        }),
        detected: monotonic_from_ktime(e.ktime_ns),
        source,
        listed: None,
    })
}
