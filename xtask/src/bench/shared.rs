//! What memprof sidecars cost the node: the page-fault loop of `bench.rs` with no memprof, one
//! sidecar, eight and 32 sidecars each with its own kernel programs (`MEMPROF_BPFFS=off`, as
//! without a bpffs mount), eight and 32 sharing one set through a bpffs, and the eight's set
//! once all were SIGKILLed (nothing holds its links: its programs must cost nothing); each
//! sidecar in its own PID namespace, as in that many pods. ABBA order. Beside each time, how
//! many `rss_stat` programs were on their hook during the loop (an idle sidecar's gate takes
//! its own off; a shared set's stays on), so a time can be read against what the kernel ran.
use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{fault_loop, median, started, Results};

/// Name, sidecars, whether they share, whether they are SIGKILLed before the loop.
const MODES: [(&str, usize, bool, bool); 7] = [
    ("none", 0, false, false),
    ("1 sidecar", 1, true, false),
    ("8 own", 8, false, false),
    ("8 shared", 8, true, false),
    ("8 killed", 8, true, true),
    ("32 own", 32, false, false),
    ("32 shared", 32, true, false),
];

const SETTLE: std::time::Duration = std::time::Duration::from_secs(4);

pub fn run(bin: &Path, rounds: usize, results: &mut Results) -> Result<()> {
    if rounds == 0 {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("memprof-bench-shared-{}", std::process::id()));
    let bpffs = dir.join("bpffs");
    std::fs::create_dir_all(&bpffs)?;
    let st = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&bpffs)
        .status()?;
    if !st.success() {
        bail!("mounting a bpffs at {}", bpffs.display());
    }
    println!(
        "\npage-fault loop with memprof sidecars (each in its own PID namespace), {rounds} rounds, ABBA"
    );
    let result = measure(bin, &dir, &bpffs, rounds);
    let _ = Command::new("umount").arg("-l").arg(&bpffs).status();
    let _ = std::fs::remove_dir_all(&dir);
    let (samples, programs) = result?;
    let base = median(&samples["none"]);
    for (mode, ..) in MODES {
        let p = &programs[mode];
        let (fewest, most) = (p.iter().min().unwrap_or(&0), p.iter().max().unwrap_or(&0));
        let progs = match fewest == most {
            true => fewest.to_string(),
            false => format!("{fewest}-{most}"),
        };
        results.add("sidecars", mode, "ms", &samples[mode], Some(base));
        results.note(format!("{progs} rss_stat programs on their hook"));
    }
    results.print_group("sidecars");
    Ok(())
}

fn measure(bin: &Path, dir: &Path, bpffs: &Path, rounds: usize) -> Result<Samples> {
    fault_loop(); // warm-up
    let before = rss_stat_programs();
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut programs: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for round in 0..rounds {
        let mut order = MODES.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for (mode, n, shared, killed) in order {
            let share = if shared {
                bpffs.display().to_string()
            } else {
                "off".into()
            };
            let mut sidecars = (0..n)
                .map(|i| sidecar(bin, &dir.join(format!("{i}")), &share))
                .collect::<Result<Vec<_>>>()?;
            // Let the daemons finish starting (first scans, S3 or directory checks), so the
            // loop measures what they cost the kernel's page faults, not their start.
            std::thread::sleep(SETTLE);
            if killed {
                sidecars.drain(..).for_each(|c| stop(c, libc::SIGKILL));
                std::thread::sleep(SETTLE);
            }
            let t = fault_loop();
            let loaded = rss_stat_programs().saturating_sub(before);
            sidecars.into_iter().for_each(|c| stop(c, libc::SIGTERM));
            samples.entry(mode).or_default().push(t.as_secs_f64() * 1e3);
            programs.entry(mode).or_default().push(loaded);
        }
    }
    Ok((samples, programs))
}

/// Each mode's loop times in ms, and its `rss_stat` programs loaded.
type Samples = (
    BTreeMap<&'static str, Vec<f64>>,
    BTreeMap<&'static str, Vec<usize>>,
);

/// `rss_stat` programs on their hook on the node (memprof's are named after their hook; one
/// its gate took off is loaded but has no link).
fn rss_stat_programs() -> usize {
    let programs: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some("rss_stat_btf"))
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| programs.contains(&l.program_id()))
        .count()
}

/// memprof as PID 1 of a new PID namespace, started once it says so.
fn sidecar(bin: &Path, dir: &Path, bpffs: &str) -> Result<Child> {
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(bin)
        .args(["--detector", "btf", "--local-dir"])
        .arg(dir.join("profiles"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .env("MEMPROF_BPFFS", bpffs)
        // The gate's hold shortened from 10 s: a sidecar idle in its pod takes its own
        // rss_stat program off the hook within SETTLE (a shared set's stays on).
        .env("MEMPROF_RSS_GATE_HOLD_MS", "1000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    started(child).context("a memprof sidecar")
}

/// `signal` to memprof (the child of `unshare`): SIGTERM leaves the shared set as a pod being
/// deleted does, SIGKILL as an OOM kill or a short grace period does; `unshare` ends with it.
fn stop(mut child: Child, signal: i32) {
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    if let Some(pid) = std::fs::read_to_string(children)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<i32>().ok())
    {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
    let _ = child.wait();
}
