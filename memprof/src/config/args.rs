//! The command line and environment as given: every option is a flag and a variable.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{ContainerDetector, DetectorChoice, GoHeapMode, LogFormat, RssGate};

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
    /// Capture the container's largest process when the container's working set (usage minus
    /// inactive file pages, as the kubelet counts it) reaches this percentage (1-100) of its
    /// limit; 0 or `off` turns the container trigger off.
    #[arg(long, env = "MEMORY_CONTAINER_PERCENTAGE", default_value = "90")]
    pub memory_container_percentage: String,
    /// How the container trigger notices: the kernel's notifications where the cgroup offers
    /// them (`auto`), or only reading the working set every WATCH_TIME ms (`poll`).
    #[arg(
        long,
        env = "MEMPROF_CONTAINER_DETECTOR",
        value_enum,
        default_value = "auto"
    )]
    pub container_detector: ContainerDetector,
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
    /// Most bytes of profiles the spool holds while they wait for the destination.
    #[arg(long, env = "MEMPROF_SPOOL_MAX_BYTES", default_value = "1Gi")]
    pub spool_max_bytes: String,
    /// Most profiles the spool holds.
    #[arg(long, env = "MEMPROF_SPOOL_MAX_OBJECTS", default_value = "1000")]
    pub spool_max_objects: String,
    /// Which profiles stay when the spool is full: the newest (the oldest are dropped) or the
    /// oldest (new ones are sent without spooling).
    #[arg(long, env = "MEMPROF_SPOOL_KEEP", value_enum, default_value = "newest")]
    pub spool_keep: crate::deliver::bounds::Keep,
    /// Server-side encryption of the objects in S3: AES256 or aws:kms.
    #[arg(long, env = "MEMPROF_S3_SSE")]
    pub s3_sse: Option<String>,
    /// The KMS key for aws:kms (the bucket's default key without it).
    #[arg(long, env = "MEMPROF_S3_SSE_KMS_KEY_ID")]
    pub s3_sse_kms_key_id: Option<String>,
    /// Webhooks (comma-separated) that get one JSON POST per OOM kill of a watched process: its
    /// record, with a Slack-compatible `text`. Retried from a spool of their own; the URLs are
    /// secrets and never logged (only scheme, host and port).
    #[arg(long, env = "MEMPROF_WEBHOOK_URL", hide_env_values = true, value_parser = secret)]
    pub webhook_url: Option<Secret>,
    /// Also POST to the webhooks for every stored profile.
    #[arg(
        long,
        env = "MEMPROF_WEBHOOK_PROFILES",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_profiles: bool,
    /// On SIGTERM/SIGINT, seconds to finish captures and keep uploading before exiting 0
    /// (keep it below the pod's terminationGracePeriodSeconds, 30 by default).
    #[arg(long, env = "MEMPROF_SHUTDOWN_SECS", default_value = "25")]
    pub shutdown_secs: String,
    /// Detector to use.
    #[arg(long, env = "MEMPROF_DETECTOR", value_enum, default_value = "auto")]
    pub detector: DetectorChoice,
    /// How log lines are written: `text`, or `json` (one object per line, the same fields).
    #[arg(long, env = "MEMPROF_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Address of the metrics and health server (`/metrics`, `/healthz`, `/readyz`):
    /// `:9400` listens on every address; empty turns it off.
    #[arg(long, env = "MEMPROF_LISTEN", default_value = ":9400")]
    pub listen: String,
    /// Safety-net procfs scan interval in milliseconds while a BPF detector is active.
    #[arg(long, env = "MEMPROF_SAFETY_NET_MS", default_value = "10000")]
    pub safety_net_ms: String,
    /// `auto`: take the kernel's rss_stat program off its hook (page faults then pay nothing
    /// for it) while every watched memory cgroup is below half its processes' lowest level;
    /// `off`: keep it on.
    #[arg(long, env = "MEMPROF_RSS_GATE", value_enum, default_value = "auto")]
    pub rss_gate: RssGate,
    /// Milliseconds every watched cgroup must stay below the half mark before rss_stat is
    /// taken off its hook.
    #[arg(long, env = "MEMPROF_RSS_GATE_HOLD_MS", default_value = "10000")]
    pub rss_gate_hold_ms: String,
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
    /// Where Go heap profiles come from at the threshold. The at-kill profile is read by the
    /// kernel, except with `endpoint-only`.
    #[arg(long, env = "MEMPROF_GO_HEAP", value_enum, default_value = "endpoint")]
    pub go_heap: GoHeapMode,
    /// Turn Go heap profiling on (`MemProfileRate` 0 → Go's default 512 KiB) in programs whose
    /// linker turned it off, by writing into the process when it is first seen. Off: such
    /// programs have no heap profile, and memprof says why.
    #[arg(
        long,
        env = "MEMPROF_GO_ENABLE_PROFILING",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub go_enable_profiling: bool,
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
    /// Processes the kernel follows at once (its map's capacity), one container (one pod for a
    /// sidecar) an eighth of them at most; others are seen by the safety-net poll only.
    #[arg(long, env = "MEMPROF_MAX_PROCS", default_value = "16384")]
    pub max_procs: String,
    /// Room for the kernel's walk of a Go heap at the OOM kill (a power of two from 64Ki to
    /// 256Mi). Buckets holding live memory go first; 1Mi holds about 5,000 stacks of 34 frames.
    /// Kernel memory charged to memprof's cgroup, mapped twice into its RSS.
    #[arg(long, env = "MEMPROF_AT_KILL_RING", default_value = "1Mi")]
    pub at_kill_ring: String,
    /// bpffs mount where memprof sidecars on one node share their kernel programs (pinned
    /// under `memprof/`), or `off` (the default) to load this instance's own. Whoever can
    /// reach the pins can reroute the shared maps: share only where the node's pods trust
    /// each other.
    #[arg(long, env = "MEMPROF_BPFFS", default_value = "off")]
    pub bpffs: String,
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
    /// Write one page (HTML, self-contained) or text about the incidents memprof stored: the
    /// timeline up to the kill, flame graphs of the last profile and of what changed since the
    /// first, what grew, the memory accounting, the record's facts and the object keys.
    Report(ReportArgs),
    /// Check what memprof needs on this node, one line each (OK, WARN, FAIL) with what to fix;
    /// exits 0 when the eBPF detector loads and the sink takes profiles, 1 otherwise.
    Doctor {
        /// Also check this process (as memprof sees PIDs): its limit, whether it is Go, its
        /// pprof endpoint, whether its heap can be read from memory.
        #[arg(long)]
        pid: Option<u32>,
    },
}

/// What `memprof report` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Text,
}

/// What `memprof report` is asked.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct ReportArgs {
    /// Where the objects are: a local directory, or s3://bucket/prefix (the daemon's
    /// credential chain; AWS_ENDPOINT_URL for an S3-compatible server).
    #[arg(long)]
    pub from: String,
    /// Only this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only this pod.
    #[arg(long)]
    pub pod: Option<String>,
    /// Only this process: a PID, or a container's or command's name.
    #[arg(long)]
    pub process: Option<String>,
    /// Only captures at or after this time (RFC 3339) or age (90m, 6h, 2d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only captures at or before this time or age.
    #[arg(long)]
    pub until: Option<String>,
    /// The page's file (default memprof-report.html).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// html: one self-contained page; text: the facts and top growers on the terminal.
    #[arg(long, value_enum, default_value = "html")]
    pub format: ReportFormat,
}

/// A value that must not be printed (webhook URLs carry tokens): `{:?}` shows its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes, not shown>", self.0.len())
    }
}

/// Never fails: clap's error would quote the value.
fn secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret(value.to_string()))
}
