//! What a measurement is stamped with: the date, the commit and the machine, so a figure
//! quoted later says where it came from.
use std::process::Command;

use crate::workspace_root;

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn date() -> String {
    output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
}

pub fn commit() -> String {
    output(
        Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(workspace_root()),
    )
}

/// CPU model, cores, memory, kernel and cgroup version, in one line.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / (1 << 20) as f64);
    let kernel = output(Command::new("uname").arg("-r"));
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        "cgroup v1 (hybrid)"
    } else {
        "cgroup v2"
    };
    format!("{model}, {cores} cores, {mem_gib:.0} GiB, kernel {kernel}, {cgroup}")
}
