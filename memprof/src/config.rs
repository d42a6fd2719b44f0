//! Environment and flags → a validated `Config`. Every error names the variable and its flag.
use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

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

/// Raw command line / environment. Numbers arrive as strings so that validation can name the
/// variable in a single line instead of clap's multi-line usage error.
#[derive(Parser, Debug)]
#[command(
    name = "memprof",
    version,
    about = "Captures a process's heap profile before the OOM killer does its work"
)]
pub struct Args {
    /// Alert when a process's RSS reaches this percentage (1-100) of its memory limit.
    #[arg(long, env = "MEMORY_CRITICAL_PERCENTAGE", default_value = "80")]
    pub memory_critical_percentage: String,
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
    /// Port of the process's pprof HTTP endpoint on 127.0.0.1.
    #[arg(long, env = "PPROF_PORT", default_value = "6060")]
    pub pprof_port: String,
    /// Path of the heap profile on that endpoint.
    #[arg(long, env = "PPROF_PATH", default_value = "/debug/pprof/heap")]
    pub pprof_path: String,
    /// Give up on a profile download after this many milliseconds.
    #[arg(long, env = "MEMPROF_CAPTURE_TIMEOUT_MS", default_value = "10000")]
    pub capture_timeout_ms: String,
    /// Refuse profiles larger than this many bytes.
    #[arg(long, env = "MEMPROF_CAPTURE_MAX_BYTES", default_value = "67108864")]
    pub capture_max_bytes: String,
}

#[derive(Clone, Debug)]
pub enum Destination {
    S3 { bucket: String, region: String },
    Local(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub threshold_pct: u8,
    pub watch_interval: Duration,
    pub safety_net_interval: Duration,
    pub cooldown: Duration,
    pub detector: DetectorChoice,
    pub destination: Destination,
    pub spool_dir: PathBuf,
    pub key_prefix: String,
    pub pprof_port: u16,
    pub pprof_path: String,
    pub capture_timeout: Duration,
    pub capture_max_bytes: u64,
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

impl Config {
    pub fn from_args(a: Args) -> Result<Self, ConfigError> {
        let threshold_pct = number(
            &a.memory_critical_percentage,
            "MEMORY_CRITICAL_PERCENTAGE",
            "memory-critical-percentage",
            1u8,
            100,
            "percent",
        )?;
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
            threshold_pct,
            watch_interval: Duration::from_millis(watch_ms),
            safety_net_interval: Duration::from_millis(safety_ms),
            cooldown: Duration::from_secs(cooldown),
            detector: a.detector,
            destination,
            spool_dir: a.spool_dir,
            key_prefix: a.key_prefix.trim_matches('/').to_string(),
            pprof_port,
            pprof_path: a.pprof_path,
            capture_timeout: Duration::from_millis(timeout_ms),
            capture_max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["memprof"];
        argv.extend_from_slice(args);
        Config::from_args(Args::try_parse_from(argv).expect("clap accepts strings"))
    }

    fn error(args: &[&str]) -> String {
        parse(args).unwrap_err().0
    }

    #[test]
    fn defaults_match_the_seed() {
        // The test environment must not leak seed variables into the defaults.
        for var in [
            "MEMORY_CRITICAL_PERCENTAGE",
            "WATCH_TIME",
            "BUCKET",
            "AWS_REGION",
        ] {
            if std::env::var_os(var).is_some() {
                return;
            }
        }
        let c = parse(&[]).unwrap();
        assert_eq!(c.threshold_pct, 80);
        assert_eq!(c.watch_interval, Duration::from_millis(500));
        assert!(matches!(c.destination, Destination::Local(_)));
        assert_eq!(c.pprof_port, 6060);
        assert_eq!(c.pprof_path, "/debug/pprof/heap");
    }

    #[test]
    fn percent_must_be_1_to_100() {
        for bad in ["0", "101", "-5", "eighty", "80.5", ""] {
            let e = error(&[&format!("--memory-critical-percentage={bad}")]);
            assert!(e.contains("MEMORY_CRITICAL_PERCENTAGE"), "{e}");
            assert!(!e.contains('\n'));
        }
        assert_eq!(
            parse(&["--memory-critical-percentage", "1"])
                .unwrap()
                .threshold_pct,
            1
        );
        assert_eq!(
            parse(&["--memory-critical-percentage", "100"])
                .unwrap()
                .threshold_pct,
            100
        );
    }

    #[test]
    fn watch_time_must_be_numeric() {
        assert!(error(&["--watch-time", "fast"]).contains("WATCH_TIME"));
        assert!(error(&["--watch-time", "0"]).contains("WATCH_TIME"));
        assert_eq!(
            parse(&["--watch-time", "250"]).unwrap().watch_interval,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn bucket_needs_region() {
        assert!(error(&["--bucket", "b", "--aws-region", ""]).contains("AWS_REGION"));
        match parse(&["--bucket", "b", "--aws-region", "eu-west-1"])
            .unwrap()
            .destination
        {
            Destination::S3 { bucket, region } => {
                assert_eq!((bucket.as_str(), region.as_str()), ("b", "eu-west-1"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_numbers_name_their_variable() {
        assert!(error(&["--pprof-port", "70000"]).contains("PPROF_PORT"));
        assert!(error(&["--cooldown-secs", "x"]).contains("MEMPROF_COOLDOWN_SECS"));
        assert!(error(&["--pprof-path", "debug"]).contains("PPROF_PATH"));
    }
}
