//! Environment and flags → a validated `Config`. Every error names the variable and its flag.
use std::{path::PathBuf, time::Duration};

use crate::assess::scope::Scope;

mod args;
mod choices;
mod delivery;
mod parse;
pub use args::{Args, Command, ReportArgs, ReportFormat};
pub use choices::{ContainerDetector, DetectorChoice, GoHeapMode, LogFormat, RssGate};
use parse::number;
pub use parse::size;

#[derive(Clone, Debug)]
pub enum Destination {
    S3 {
        bucket: String,
        region: String,
        encryption: Option<crate::deliver::sink::Encryption>,
    },
    Local(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Capture levels in percent of the limit, ascending (one: the seed's single threshold).
    pub levels_pct: Vec<u8>,
    /// Absolute levels for processes without a limit, ascending (empty: percentages of
    /// MemTotal).
    pub levels_bytes: Vec<u64>,
    /// The container trigger's level in percent of the limit (`None`: off).
    pub container_pct: Option<u8>,
    pub container_detector: ContainerDetector,
    pub watch_interval: Duration,
    pub safety_net_interval: Duration,
    pub rss_gate: RssGate,
    /// How long every watched cgroup stays below the half mark before rss_stat goes off.
    pub rss_gate_hold: Duration,
    pub cooldown: Duration,
    pub detector: DetectorChoice,
    pub destination: Destination,
    pub spool_dir: PathBuf,
    pub spool_limits: crate::deliver::bounds::Limits,
    /// How long a stopping memprof finishes captures and keeps uploading before it exits.
    pub shutdown_deadline: Duration,
    pub key_prefix: String,
    pub pprof_port: u16,
    pub pprof_ports: Option<Vec<u16>>,
    pub pprof_path: String,
    pub pods_dir: PathBuf,
    pub command: Option<Command>,
    pub capture_timeout: Duration,
    pub capture_max_bytes: u64,
    pub max_procs: u32,
    /// Bytes of the at-kill walk's ring buffer.
    pub at_kill_ring: u32,
    pub log_format: LogFormat,
    /// The metrics and health server's address; `None`: no server.
    pub listen: Option<std::net::SocketAddr>,
    /// Where shared kernel programs are pinned; `None` when sharing is off.
    pub bpffs: Option<PathBuf>,
    pub max_captures_per_minute: u32,
    pub scope: Scope,
    pub go_heap: GoHeapMode,
    pub go_enable_profiling: bool,
    pub webhooks: Vec<crate::deliver::webhook::Url>,
    pub webhook_profiles: bool,
}

/// A configuration problem, printed as one line; the process exits with code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    pub fn from_args(a: Args) -> Result<Self, ConfigError> {
        let destination = delivery::destination(&a)?;
        let spool_limits = delivery::spool_limits(&a)?;
        let shutdown_deadline = delivery::shutdown_deadline(&a)?;
        let webhooks = delivery::webhooks(&a)?;
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
        let container_pct = match a.memory_container_percentage.trim() {
            "0" | "off" => None,
            v => Some(number(
                v,
                "MEMORY_CONTAINER_PERCENTAGE",
                "memory-container-percentage",
                1u8,
                100,
                "percent (or 0/off)",
            )?),
        };
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
        let gate_hold_ms = number(
            &a.rss_gate_hold_ms,
            "MEMPROF_RSS_GATE_HOLD_MS",
            "rss-gate-hold-ms",
            0u64,
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
        if a.go_heap == GoHeapMode::EndpointOnly && a.go_enable_profiling {
            return Err(ConfigError(
                "MEMPROF_GO_ENABLE_PROFILING (--go-enable-profiling) writes into processes, and \
                 MEMPROF_GO_HEAP=endpoint-only promises not even to read them: choose one"
                    .into(),
            ));
        }
        if !a.pprof_path.starts_with('/') {
            return Err(ConfigError(format!(
                "invalid PPROF_PATH (--pprof-path): {:?} must start with '/'",
                a.pprof_path
            )));
        }
        Ok(Config {
            levels_pct,
            levels_bytes,
            container_pct,
            container_detector: a.container_detector,
            watch_interval: Duration::from_millis(watch_ms),
            safety_net_interval: Duration::from_millis(safety_ms),
            rss_gate: a.rss_gate,
            rss_gate_hold: Duration::from_millis(gate_hold_ms),
            cooldown: Duration::from_secs(cooldown),
            detector: a.detector,
            destination,
            spool_dir: a.spool_dir,
            spool_limits,
            shutdown_deadline,
            key_prefix: a.key_prefix.trim_matches('/').to_string(),
            pprof_port,
            pprof_ports,
            pprof_path: a.pprof_path,
            pods_dir: a.pods_dir,
            command: a.command,
            capture_timeout: Duration::from_millis(timeout_ms),
            capture_max_bytes,
            max_procs,
            at_kill_ring: parse::ring_bytes(&a.at_kill_ring)?,
            log_format: a.log_format,
            listen: parse::listen(&a.listen)?,
            bpffs: match a.bpffs.trim() {
                "off" => None,
                dir => Some(PathBuf::from(dir)),
            },
            max_captures_per_minute,
            scope,
            go_heap: a.go_heap,
            go_enable_profiling: a.go_enable_profiling,
            webhooks,
            webhook_profiles: a.webhook_profiles,
        })
    }
}

#[cfg(test)]
mod documented;
#[cfg(test)]
mod tests;
