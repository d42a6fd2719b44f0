//! Detect, per container: the container's working set nearing its limit. One task per
//! container reads the working set (usage minus inactive file pages) when the kernel says the
//! cgroup changed, and on a timer as a safety net; readings near the level go to the daemon,
//! which decides (`assess::container`).
//!
//! The kernel's notifications (see `notify`): cgroup v1 usage thresholds wake memprof the
//! moment usage crosses the level; usage includes page cache, so a container full of cache
//! stays above it while its working set may be far below, and is then read on a timer until
//! usage falls. cgroup v2 has no usage threshold: `memory.events` and a PSI trigger wake
//! memprof when the cgroup reclaims or stalls at its limit, and the working set is read every
//! WATCH_TIME ms besides. Where the cgroup files cannot be written (runc and containerd mount
//! them read-only in unprivileged containers), only `memory.events` or the timer remain.
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::info;

use crate::{
    cgroup::{self, View},
    config::ContainerDetector,
};

/// Also the `rss_stat` gate's (`detect::floor`).
pub(super) mod notify;

/// The poll interval while the working set is within twice the hysteresis of the level.
const NEAR: Duration = Duration::from_millis(100);
/// The poll interval while usage is above the level (page cache) but the working set is not
/// near it.
const CACHE_FULL: Duration = Duration::from_secs(1);
/// The safety-net interval where a usage threshold notifies (cgroup v1).
const NOTIFIED_SAFETY_NET: Duration = Duration::from_secs(10);
/// Where the threshold counts on inactive file pages that may be reclaimed or activated
/// before the working set reaches the level (then usage never reaches the threshold): the
/// interval at which it is checked and moved.
const OFFSET_RECHECK: Duration = Duration::from_secs(1);

/// What a container's watcher reports.
#[derive(Clone, Debug)]
pub enum ContainerEvent {
    Reading(ContainerReading),
    /// The container can no longer be read through the watcher's views (the process they
    /// belong to exited or changed its mounts, or the cgroup is gone); the watcher ended.
    Lost {
        path: String,
        why: String,
    },
}

/// The working set of one container, read because of `via`.
#[derive(Clone, Debug)]
pub struct ContainerReading {
    pub path: String,
    pub working_set: u64,
    pub limit: u64,
    pub detected: Instant,
    /// What woke memprof: `eventfd`, `memory.events`, `psi` or `poll`.
    pub via: &'static str,
}

#[derive(Clone)]
pub struct WatchConfig {
    pub pct: u8,
    /// How far (points of the limit) below the level the working set must fall before a
    /// crossing re-arms: the policy's hysteresis, so that readings near it are reported.
    pub hysteresis_pct: u64,
    pub mode: ContainerDetector,
    /// WATCH_TIME: the poll interval without a usage threshold.
    pub poll: Duration,
}

/// Watches the container at `path` (through `views`) until the task is aborted or the cgroup
/// is gone.
pub fn spawn(
    path: String,
    views: Vec<View>,
    cfg: WatchConfig,
    tx: mpsc::Sender<ContainerEvent>,
) -> tokio::task::AbortHandle {
    tokio::spawn(watch(path, views, cfg, tx)).abort_handle()
}

async fn watch(path: String, views: Vec<View>, cfg: WatchConfig, tx: mpsc::Sender<ContainerEvent>) {
    let why = watch_until_lost(&path, views, cfg, &tx).await;
    let _ = tx.send(ContainerEvent::Lost { path, why }).await;
}

/// Watches until the container cannot be read; why not.
async fn watch_until_lost(
    path: &str,
    views: Vec<View>,
    cfg: WatchConfig,
    tx: &mpsc::Sender<ContainerEvent>,
) -> String {
    let mut notifier = notify::Notifier::none();
    // The level and usage threshold notifications are armed at.
    let mut armed: Option<(u64, u64)> = None;
    let mut near_before = false;
    let mut via = "poll";
    loop {
        let detected = Instant::now();
        let limit = match cgroup::limit(&views) {
            Ok(Some(limit)) => limit,
            Ok(None) => {
                // Unlimited now (it may be resized): nothing to compare with.
                tokio::time::sleep(cfg.poll.max(NOTIFIED_SAFETY_NET)).await;
                continue;
            }
            Err(e) => return e.to_string(),
        };
        let level = (limit as u128 * cfg.pct as u128).div_ceil(100) as u64;
        let margin = (limit as u128 * cfg.hysteresis_pct as u128 / 100) as u64;
        let (Some(usage), Some(working_set)) = (cgroup::usage(&views), cgroup::working_set(&views))
        else {
            return "its usage cannot be read".into();
        };
        // The usage threshold sits where the working set would reach the level with the
        // inactive file pages as they are now; it moves when they change by a point of the
        // limit (and on v2, without thresholds, only when the limit changes).
        let threshold = level.saturating_add(usage.saturating_sub(working_set));
        let moved = |at: u64| at.abs_diff(threshold) > limit / 100;
        let rearm = match armed {
            None => true,
            Some((at_level, _)) if at_level != level => true,
            Some((_, at)) => notifier.thresholds() && moved(at),
        };
        let mut crossed_while_arming = false;
        if cfg.mode == ContainerDetector::Auto && rearm {
            notifier = notify::Notifier::arm(&views, threshold);
            // The kernel notifies crossings after the threshold is registered: one between the
            // reading above and now would never be told. Look again at once if so.
            crossed_while_arming =
                notifier.thresholds() && cgroup::usage(&views).is_some_and(|u| u >= threshold);
            if armed.is_none_or(|(at_level, _)| at_level != level) {
                info!(
                    path,
                    limit,
                    level,
                    notified_by = notifier.describe(),
                    "watching container"
                );
            }
            armed = Some((level, threshold));
        } else if armed.is_none() {
            info!(
                path,
                limit,
                level,
                notified_by = "poll",
                "watching container"
            );
            armed = Some((level, threshold));
        }
        // Near: the daemon needs these readings to capture, and the first one after to re-arm.
        let near = working_set.saturating_add(margin) >= level;
        if near || near_before {
            let r = ContainerReading {
                path: path.to_string(),
                working_set,
                limit,
                detected,
                via,
            };
            if tx.send(ContainerEvent::Reading(r)).await.is_err() {
                return "memprof is stopping".into();
            }
        }
        near_before = near;
        let every = if working_set.saturating_add(2 * margin) >= level {
            NEAR
        } else if usage >= level {
            CACHE_FULL
        } else if notifier.thresholds() && usage.saturating_sub(working_set) > limit / 100 {
            OFFSET_RECHECK
        } else if notifier.thresholds() {
            NOTIFIED_SAFETY_NET
        } else {
            cfg.poll
        };
        let every = if cfg.mode == ContainerDetector::Poll {
            cfg.poll
        } else {
            every
        };
        via = if crossed_while_arming {
            "poll"
        } else {
            tokio::select! {
                v = notifier.wait() => v,
                _ = tokio::time::sleep(every) => "poll",
            }
        };
    }
}
