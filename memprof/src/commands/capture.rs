//! `memprof capture --pid N`: one profile of one process now, through the same discovery,
//! capture and delivery as the daemon; the key goes to stdout, the log to stderr.
use std::time::Instant;

use anyhow::{bail, Result};

use crate::{
    assess::Assessor,
    capture::Capturer,
    config::Config,
    daemon,
    detect::{Candidate, Source},
};

pub async fn run(cfg: &Config, pid: u32) -> Result<()> {
    let mut assessor = Assessor::new(Some(cfg.pods_dir.clone()))?;
    let Some(reading) = assessor.read(pid) else {
        bail!("no process with PID {pid} that has memory of its own (as this memprof sees PIDs)");
    };
    let capturer = Capturer::new(cfg, None, daemon::wire::deliverer(cfg).await?);
    // Asked for by name: captured whatever the scope says.
    let _ = capturer.saw(&reading, &cfg.scope, || assessor.cgroup_of(&reading.key));
    // Interactive: probing the ports of a Go program is worth the wait (whether it is Go
    // decides that, as in the daemon).
    capturer.discover_now(reading.key, &reading.comm).await?;
    let candidate = Candidate {
        ns_pid: pid,
        kernel: None,
        detected: Instant::now(),
        source: Source::Manual,
        listed: None,
    };
    let captured = capturer.capture(&candidate, &reading).await;
    if captured.keys.is_empty() {
        bail!(
            "no profile stored for PID {pid} ({}); the lines above say why — a profile kept \
             in the spool is delivered by the daemon",
            reading.comm
        );
    }
    for key in captured.keys {
        println!("{key}");
    }
    Ok(())
}
