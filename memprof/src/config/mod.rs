//! Environment and flags → a validated `Config`. Every error names the variable and its flag.
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::assess::scope::Scope;

/// Which detector feeds the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DetectorChoice {
    /// tp_btf, then the classic tracepoint, then polling, whichever loads first.
    Auto,
    /// BTF tracepoint only (fail if it cannot load).
    Btf,
    /// Classic `kmem/rss_stat` tracepoint only (fail if it cannot load).
    Classic,
    /// procfs polling every WATCH_TIME ms, no BPF.
    Poll,
}

/// Where Go heap profiles come from at the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GoHeapMode {
    /// The process's pprof endpoint; read from its memory when it has none or it fails.
    Endpoint,
    /// Only from the process's memory (no HTTP).
    Memory,
    /// Both, stored side by side (the memory read as `heap-memory`).
    Both,
}

/// Raw command line / environment. Numbers arrive as strings so that validation can name the
/// variable in a single line instead of clap's multi-line usage error.
#[derive(Parser, Debug)]
#[command(
    name = "memprof",
    version,
    about = "Captures a process's heap profile before the OOM killer does its work"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Capture when a process's RSS reaches this percentage (1-100) of its memory limit; a
    /// list (80,90,95) captures once at each level.
    #[arg(long, env = "MEMORY_CRITICAL_PERCENTAGE", default_value = "80")]
    pub memory_critical_percentage: String,
    /// For processes without a memory limit: capture at these sizes (`1.5GiB`, `800Mi`,
    /// `2G`; a list captures once at each) instead of a percentage of the node's memory.
    #[arg(long, env = "MEMORY_CRITICAL_BYTES")]
    pub memory_critical_bytes: Option<String>,
    /// Poll interval in milliseconds when no BPF detector is available.
    #[arg(long, env = "WATCH_TIME", default_value = "500")]
    pub watch_time: String,
    /// S3 bucket for profiles; without it profiles are written to --local-dir.
    #[arg(long, env = "BUCKET")]
    pub bucket: Option<String>,
    /// AWS region of the bucket (required with BUCKET).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// First path segment of every object key.
    #[arg(long, env = "MEMPROF_KEY_PREFIX", default_value = "memprof")]
    pub key_prefix: String,
    /// Directory for profiles when no BUCKET is set.
    #[arg(
        long,
        env = "MEMPROF_LOCAL_DIR",
        default_value = "/var/lib/memprof/profiles"
    )]
    pub local_dir: PathBuf,
    /// Profiles wait here until they are stored; leftovers are retried on start-up.
    #[arg(
        long,
        env = "MEMPROF_SPOOL_DIR",
        default_value = "/var/lib/memprof/spool"
    )]
    pub spool_dir: PathBuf,
    /// Detector to use.
    #[arg(long, env = "MEMPROF_DETECTOR", value_enum, default_value = "auto")]
    pub detector: DetectorChoice,
    /// Safety-net procfs scan interval in milliseconds while a BPF detector is active.
    #[arg(long, env = "MEMPROF_SAFETY_NET_MS", default_value = "10000")]
    pub safety_net_ms: String,
    /// Minimum seconds between two profiles of the same process.
    #[arg(long, env = "MEMPROF_COOLDOWN_SECS", default_value = "300")]
    pub cooldown_secs: String,
    /// The port tried first for a process's pprof endpoint (in its own network namespace).
    #[arg(long, env = "PPROF_PORT", default_value = "6060")]
    pub pprof_port: String,
    /// Only these ports (comma-separated) are tried for pprof endpoints; by default every
    /// port the process listens on is probed.
    #[arg(long, env = "MEMPROF_PPROF_PORTS")]
    pub pprof_ports: Option<String>,
    /// The kubelet's pod log tree, for the namespace, pod and container of each process.
    #[arg(long, env = "MEMPROF_PODS_DIR", default_value = "/var/log/pods")]
    pub pods_dir: PathBuf,
    /// Path of the heap profile on that endpoint.
    #[arg(long, env = "PPROF_PATH", default_value = "/debug/pprof/heap")]
    pub pprof_path: String,
    /// Give up on a profile download after this many milliseconds.
    #[arg(long, env = "MEMPROF_CAPTURE_TIMEOUT_MS", default_value = "10000")]
    pub capture_timeout_ms: String,
    /// Refuse profiles larger than this many bytes.
    #[arg(long, env = "MEMPROF_CAPTURE_MAX_BYTES", default_value = "67108864")]
    pub capture_max_bytes: String,
    /// Where Go heap profiles come from at the threshold. The at-kill profile is always read
    /// by the kernel.
    #[arg(long, env = "MEMPROF_GO_HEAP", value_enum, default_value = "endpoint")]
    pub go_heap: GoHeapMode,
    /// At most this many captures per minute, whatever the processes (1-10000).
    #[arg(long, env = "MEMPROF_MAX_CAPTURES_PER_MINUTE", default_value = "30")]
    pub max_captures_per_minute: String,
    /// Watch only processes with these command names (comma-separated).
    #[arg(long, env = "MEMPROF_INCLUDE_COMM")]
    pub include_comm: Option<String>,
    /// Never watch processes with these command names (comma-separated).
    #[arg(long, env = "MEMPROF_EXCLUDE_COMM")]
    pub exclude_comm: Option<String>,
    /// Watch only processes whose cgroup path contains one of these (comma-separated).
    #[arg(long, env = "MEMPROF_INCLUDE_CGROUP")]
    pub include_cgroup: Option<String>,
    /// Never watch processes whose cgroup path contains one of these (comma-separated).
    #[arg(long, env = "MEMPROF_EXCLUDE_CGROUP")]
    pub exclude_cgroup: Option<String>,
    /// Processes the kernel follows at once (its map's capacity); others are seen by the
    /// safety-net poll only.
    #[arg(long, env = "MEMPROF_MAX_PROCS", default_value = "16384")]
    pub max_procs: String,
}

/// What to do instead of watching (the default).
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Take one heap profile of a process now, deliver it as the daemon would, print its key.
    Capture {
        /// The process (as memprof sees PIDs).
        #[arg(long)]
        pid: u32,
    },
    /// Show the processes memprof would watch, live: who, RSS, limit, percent, level, endpoint.
    Top {
        /// Refresh every this many milliseconds.
        #[arg(long, default_value = "2000")]
        interval_ms: u64,
        /// Stop after this many screens (0: until interrupted).
        #[arg(long, default_value = "0")]
        iterations: u64,
    },
}

#[derive(Clone, Debug)]
pub enum Destination {
    S3 { bucket: String, region: String },
    Local(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Capture levels in percent of the limit, ascending (one: the seed's single threshold).
    pub levels_pct: Vec<u8>,
    /// Absolute levels for processes without a limit, ascending (empty: percentages of
    /// MemTotal).
    pub levels_bytes: Vec<u64>,
    pub watch_interval: Duration,
    pub safety_net_interval: Duration,
    pub cooldown: Duration,
    pub detector: DetectorChoice,
    pub destination: Destination,
    pub spool_dir: PathBuf,
    pub key_prefix: String,
    pub pprof_port: u16,
    pub pprof_ports: Option<Vec<u16>>,
    pub pprof_path: String,
    pub pods_dir: PathBuf,
    pub command: Option<Command>,
    pub capture_timeout: Duration,
    pub capture_max_bytes: u64,
    pub max_procs: u32,
    pub max_captures_per_minute: u32,
    pub scope: Scope,
    pub go_heap: GoHeapMode,
}

/// A configuration problem, printed as one line; the process exits with code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    value: &str,
    var: &str,
    flag: &str,
    min: T,
    max: T,
    unit: &str,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError(format!(
            "invalid {var} (--{flag}): {value:?} is not a whole number of {unit} from {min} to {max}"
        ))),
    }
}

/// A size as Kubernetes writes quantities: a number with `Ki`/`Mi`/`Gi`/`Ti` (binary) or
/// `k`/`K`/`M`/`G`/`T` (decimal), optionally followed by `B`; bare numbers are bytes.
pub fn size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_suffix('B').unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| (n * factor as f64).round() as u64)
}

impl Config {
    pub fn from_args(a: Args) -> Result<Self, ConfigError> {
        let mut levels_pct = a
            .memory_critical_percentage
            .split(',')
            .map(|v| {
                number(
                    v,
                    "MEMORY_CRITICAL_PERCENTAGE",
                    "memory-critical-percentage",
                    1u8,
                    100,
                    "percent",
                )
            })
            .collect::<Result<Vec<u8>, _>>()?;
        levels_pct.sort_unstable();
        levels_pct.dedup();
        let mut levels_bytes = match a.memory_critical_bytes.as_deref().map(str::trim) {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|v| {
                    size(v).filter(|b| *b > 0).ok_or_else(|| {
                        ConfigError(format!(
                            "invalid MEMORY_CRITICAL_BYTES (--memory-critical-bytes): {v:?} is \
                             not a size such as 1.5GiB, 800Mi or 2G"
                        ))
                    })
                })
                .collect::<Result<Vec<u64>, _>>()?,
        };
        levels_bytes.sort_unstable();
        levels_bytes.dedup();
        let watch_ms = number(
            &a.watch_time,
            "WATCH_TIME",
            "watch-time",
            1u64,
            3_600_000,
            "milliseconds",
        )?;
        let safety_ms = number(
            &a.safety_net_ms,
            "MEMPROF_SAFETY_NET_MS",
            "safety-net-ms",
            1u64,
            86_400_000,
            "milliseconds",
        )?;
        let cooldown = number(
            &a.cooldown_secs,
            "MEMPROF_COOLDOWN_SECS",
            "cooldown-secs",
            0u64,
            86_400 * 7,
            "seconds",
        )?;
        let pprof_port = number(
            &a.pprof_port,
            "PPROF_PORT",
            "pprof-port",
            1u16,
            65535,
            "port",
        )?;
        let timeout_ms = number(
            &a.capture_timeout_ms,
            "MEMPROF_CAPTURE_TIMEOUT_MS",
            "capture-timeout-ms",
            1u64,
            600_000,
            "milliseconds",
        )?;
        let capture_max_bytes = number(
            &a.capture_max_bytes,
            "MEMPROF_CAPTURE_MAX_BYTES",
            "capture-max-bytes",
            1u64,
            u64::MAX,
            "bytes",
        )?;
        let max_procs = number(
            &a.max_procs,
            "MEMPROF_MAX_PROCS",
            "max-procs",
            1u32,
            1 << 22,
            "processes",
        )?;
        let max_captures_per_minute = number(
            &a.max_captures_per_minute,
            "MEMPROF_MAX_CAPTURES_PER_MINUTE",
            "max-captures-per-minute",
            1u32,
            10_000,
            "captures",
        )?;
        let names = |v: Option<String>| -> Vec<String> {
            v.unwrap_or_default()
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        };
        let scope = Scope {
            include_comm: names(a.include_comm),
            exclude_comm: names(a.exclude_comm),
            include_cgroup: names(a.include_cgroup),
            exclude_cgroup: names(a.exclude_cgroup),
        };
        let pprof_ports = match a.pprof_ports.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|p| number(p, "MEMPROF_PPROF_PORTS", "pprof-ports", 1u16, 65535, "port"))
                    .collect::<Result<Vec<u16>, _>>()?,
            ),
        };
        if !a.pprof_path.starts_with('/') {
            return Err(ConfigError(format!(
                "invalid PPROF_PATH (--pprof-path): {:?} must start with '/'",
                a.pprof_path
            )));
        }
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let destination = match (nonempty(a.bucket), nonempty(a.aws_region)) {
            (Some(bucket), Some(region)) => Destination::S3 { bucket, region },
            (Some(_), None) => {
                return Err(ConfigError(
                    "AWS_REGION (--aws-region) must be set when BUCKET is set".into(),
                ))
            }
            (None, _) => Destination::Local(a.local_dir),
        };
        Ok(Config {
            levels_pct,
            levels_bytes,
            watch_interval: Duration::from_millis(watch_ms),
            safety_net_interval: Duration::from_millis(safety_ms),
            cooldown: Duration::from_secs(cooldown),
            detector: a.detector,
            destination,
            spool_dir: a.spool_dir,
            key_prefix: a.key_prefix.trim_matches('/').to_string(),
            pprof_port,
            pprof_ports,
            pprof_path: a.pprof_path,
            pods_dir: a.pods_dir,
            command: a.command,
            capture_timeout: Duration::from_millis(timeout_ms),
            capture_max_bytes,
            max_procs,
            max_captures_per_minute,
            scope,
            go_heap: a.go_heap,
        })
    }
}

#[cfg(test)]
mod tests;
