//! SIGTERM/SIGINT: detection has stopped; captures in flight finish into the spool, and the
//! spool keeps going to the destination until the deadline (below the pod's grace period, so
//! the kubelet's SIGKILL never comes). What is left stays spooled for the next start.
use std::time::Duration;

use tokio::time::{timeout_at, Instant};
use tracing::{info, warn};

use super::LoopState;

pub(super) async fn finish(state: &mut LoopState, deadline: Duration) {
    let until = Instant::now() + deadline;
    info!(
        in_flight = state.captures.len(),
        deadline_s = deadline.as_secs(),
        "shutting down: finishing captures and uploads"
    );
    let captures = async { while state.captures.join_next().await.is_some() {} };
    if timeout_at(until, captures).await.is_err() {
        warn!("captures still running at the shutdown deadline are abandoned");
    }
    let deliverer = &state.deliverer;
    if timeout_at(until, deliverer.drain()).await.is_ok() {
        info!("every profile is stored; exiting");
        return;
    }
    match deliverer.waiting() {
        Ok(0) => info!("every profile is stored; exiting"),
        Ok(left) => warn!(
            left,
            "profiles not stored by the shutdown deadline stay in the spool and are sent on the next start"
        ),
        Err(e) => warn!("{e:#}"),
    }
}
