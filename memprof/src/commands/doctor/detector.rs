//! Which detector the daemon would run: its kernel programs loaded and attached through
//! `detect::start`, as the daemon does, then unloaded again.
use anyhow::Result;
use tokio::sync::mpsc;

use super::{capabilities, Check};
use crate::{
    config::{Config, DetectorChoice},
    detect,
};

pub(super) async fn check(cfg: &Config) -> Check {
    // `auto` tries the BTF tracepoint, then the classic one, and only logs why each failed;
    // tried one at a time, each failure comes back as an error to report.
    let choices = match cfg.detector {
        DetectorChoice::Auto => vec![DetectorChoice::Btf, DetectorChoice::Classic],
        DetectorChoice::Poll => {
            return Check::fail(
                "detector",
                "poll fallback because MEMPROF_DETECTOR=poll asks for it",
                "unset MEMPROF_DETECTOR (auto takes the best detector that loads)",
            );
        }
        one => vec![one],
    };
    let mut why = Vec::new();
    for choice in choices {
        match load(cfg, choice).await {
            Ok(name) => {
                return Check::ok(
                    "detector",
                    format!("eBPF detector: {name}; loaded, attached and unloaded again"),
                )
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
    Check::fail(
        "detector",
        format!("poll fallback because {}", why.join("; ")),
        fix,
    )
}

/// Starts `choice` as the daemon would and stops it again; its name, or why it did not load.
async fn load(cfg: &Config, choice: DetectorChoice) -> Result<String> {
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
        // `detect::start` hands the programs to its ring-buffer reader, a task of this
        // runtime, never polled: dropping the runtime drops the task, and with it the
        // programs (detached, their maps freed).
        drop(rt);
        started.map(|(_handles, name)| name)
    })
    .await?
}
