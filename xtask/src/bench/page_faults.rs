//! The page-fault loop (`fault_loop`: fresh anonymous memory, 300 MiB × 7) with no memprof and
//! beside memprof with each detector, in ABBA order: what every page fault on the node pays
//! for memprof, in the worst case of a process doing nothing but fault. The eBPF detector runs
//! twice: settled with its `rss_stat` gate off the hook (nothing here is near a level, as on a
//! quiet node) and with the gate off, as when some process nears its level.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use super::{fault_loop, median, started, stop, Results};

/// The page-fault loop's modes: memprof's name for the detector, and whether the rss_stat
/// gate may take the program off its hook (`btf` settles with it off: nothing here is near a
/// level; the others keep it on, as the gate's `off` does and as a near process would).
const MODES: [(&str, &str, bool); 5] = [
    ("none", "", false),
    ("btf, gated", "btf", true),
    ("btf, always on", "btf", false),
    ("classic, always on", "classic", false),
    ("poll", "poll", false),
];
fn memprof_command(bin: &Path, detector: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--detector", detector])
        .arg("--local-dir")
        .arg(dir.join("profiles"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// memprof with the rss_stat gate as `gated` says; a gated one is returned once it took the
/// program off its hook (after a short hold: the default 10 s only delays the measurement),
/// with whether it did within 30 s.
pub fn start_gated(bin: &Path, detector: &str, dir: &Path, gated: bool) -> Result<(Child, bool)> {
    let mut cmd = memprof_command(bin, detector, dir);
    if !gated {
        cmd.env("MEMPROF_RSS_GATE", "off");
        return Ok((started(cmd.spawn()?)?, false));
    }
    cmd.env("MEMPROF_RSS_GATE_HOLD_MS", "1000");
    let mut child = cmd.spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains("rss_stat detached") {
                let _ = tx.send(());
            }
        }
    });
    let detached = rx.recv_timeout(Duration::from_secs(30)).is_ok();
    Ok((child, detached))
}

pub fn run(bin: &Path, rounds: usize, results: &mut Results) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("memprof-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("page-fault loop (7 × 300 MiB fresh anonymous memory), {rounds} rounds, ABBA order");
    fault_loop(); // warm-up
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut detached: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..rounds {
        let mut order = MODES.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for (mode, detector, gated) in order {
            let memprof = match detector {
                "" => None,
                detector => {
                    let (child, off) = start_gated(bin, detector, &dir, gated)?;
                    *detached.entry(mode).or_default() += usize::from(off);
                    Some(child)
                }
            };
            let t = fault_loop();
            if let Some(m) = memprof {
                stop(m);
            }
            samples.entry(mode).or_default().push(t.as_secs_f64() * 1e3);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let base = median(&samples["none"]);
    for (mode, _, gated) in MODES {
        results.add("page faults", mode, "ms", &samples[mode], Some(base));
        if gated {
            let off = detached.get(mode).copied().unwrap_or(0);
            results.note(format!("rss_stat off its hook in {off} of {rounds} rounds"));
        }
    }
    results.print_group("page faults");
    Ok(())
}
