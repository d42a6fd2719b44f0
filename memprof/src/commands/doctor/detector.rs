//! Which detector the daemon would run: its kernel programs loaded and attached through
//! `detect::start`, as the daemon does, then unloaded again; and whether the kernel's listing
//! of processes, which keeps the safety net's idle cost low, lists what /proc lists.
use std::collections::HashSet;

use anyhow::Result;
use tokio::sync::mpsc;

use super::{capabilities, Check};
use crate::{
    config::{Config, DetectorChoice},
    detect,
    kernel::Listing,
    sys::pidns,
};

/// The detector's check, and the listing's (none when no eBPF detector loaded).
pub(super) async fn check(cfg: &Config) -> Vec<Check> {
    // `auto` tries the BTF tracepoint, then the classic one, and only logs why each failed;
    // tried one at a time, each failure comes back as an error to report.
    let choices = match cfg.detector {
        DetectorChoice::Auto => vec![DetectorChoice::Btf, DetectorChoice::Classic],
        DetectorChoice::Poll => {
            return vec![Check::fail(
                "detector",
                "poll fallback because MEMPROF_DETECTOR=poll asks for it",
                "unset MEMPROF_DETECTOR (auto takes the best detector that loads)",
            )];
        }
        one => vec![one],
    };
    let mut why = Vec::new();
    for choice in choices {
        match load(cfg, choice).await {
            Ok((name, listing)) => {
                let detector = Check::ok(
                    "detector",
                    format!("eBPF detector: {name}; loaded, attached and unloaded again"),
                );
                return vec![detector, listing];
            }
            Err(e) => why.push(format!("{e:#}")),
        }
    }
    let missing = capabilities::bpf_missing();
    let fix = if missing.is_empty() {
        "the reasons given say what the kernel refused; docs/detection.md says what each \
         detector needs"
            .to_string()
    } else {
        format!(
            "grant the capabilities {} (SYS_ADMIN stands in for both, and before 5.8 is the \
             only way)",
            missing.join(" and ")
        )
    };
    vec![Check::fail(
        "detector",
        format!("poll fallback because {}", why.join("; ")),
        fix,
    )]
}

/// Whether the kernel's listing lists the processes /proc lists (listed before and after it,
/// so that processes starting or ending meanwhile are not counted against it).
fn listing_check(listing: Option<Listing>) -> Check {
    const WHAT: &str = "listing";
    const FIX: &str = "memprof works without it; its safety net then lists /proc and reads \
                       two files of each process, at a higher idle cost";
    let Some(listing) = listing else {
        return Check::warn(WHAT, "the kernel's listing of processes did not load", FIX);
    };
    let before: HashSet<u32> = pidns::listed().into_iter().collect();
    let listed = match listing.list() {
        Ok(listed) => listed,
        Err(e) => return Check::warn(WHAT, format!("the kernel's listing failed: {e}"), FIX),
    };
    let after: HashSet<u32> = pidns::listed().into_iter().collect();
    let kernel: HashSet<u32> = listed.iter().map(|p| p.ns_pid).collect();
    let mut missing: Vec<u32> = before
        .intersection(&after)
        .filter(|p| !kernel.contains(p))
        .copied()
        .collect();
    missing.sort_unstable();
    // /proc names the processes the safety net looks at: one the kernel leaves out is read
    // at its files, as without the listing.
    let detail = if missing.is_empty() {
        format!(
            "the kernel lists the {} processes /proc lists in this PID namespace",
            kernel.len()
        )
    } else {
        format!(
            "the kernel lists {} processes of this PID namespace; PIDs {missing:?}, which \
             /proc lists and it does not, are read at their files",
            kernel.len()
        )
    };
    Check::ok(WHAT, detail)
}

/// Starts `choice` as the daemon would and stops it again; its name and the listing's check,
/// or why it did not load.
async fn load(cfg: &Config, choice: DetectorChoice) -> Result<(String, Check)> {
    let mut cfg = cfg.clone();
    cfg.detector = choice;
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, _rx) = mpsc::channel(1);
        let started = {
            let _in = rt.enter();
            detect::start(&cfg, tx)
        };
        let started =
            started.map(|(handles, name)| (name, listing_check(handles.and_then(|h| h.listing))));
        // `detect::start` hands the programs to its ring-buffer reader, a task of this
        // runtime, never polled: dropping the runtime drops the task, and with it the
        // programs (detached, their maps freed).
        drop(rt);
        started
    })
    .await?
}
