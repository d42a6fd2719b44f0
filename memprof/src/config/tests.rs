//! Validation of the configuration: every bad value names its variable in one line.
use super::*;
use crate::deliver::sink::Encryption;
use clap::Parser;

pub(super) fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["memprof"];
    argv.extend_from_slice(args);
    Config::from_args(Args::try_parse_from(argv).expect("clap accepts strings"))
}

pub(super) fn error(args: &[&str]) -> String {
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
    assert_eq!(c.levels_pct, [80]);
    assert_eq!(c.watch_interval, Duration::from_millis(500));
    assert!(matches!(c.destination, Destination::Local(_)));
    assert_eq!(c.pprof_port, 6060);
    assert_eq!(c.pprof_path, "/debug/pprof/heap");
}

#[test]
fn percent_must_be_1_to_100() {
    for bad in [
        "0", "101", "-5", "eighty", "80.5", "", "80,", "80,,90", "80,101",
    ] {
        let e = error(&[&format!("--memory-critical-percentage={bad}")]);
        assert!(e.contains("MEMORY_CRITICAL_PERCENTAGE"), "{e}");
        assert!(!e.contains('\n'));
    }
    assert_eq!(
        parse(&["--memory-critical-percentage", "1"])
            .unwrap()
            .levels_pct,
        [1]
    );
    assert_eq!(
        parse(&["--memory-critical-percentage", "100"])
            .unwrap()
            .levels_pct,
        [100]
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
        Destination::S3 {
            bucket,
            region,
            encryption: None,
        } => {
            assert_eq!((bucket.as_str(), region.as_str()), ("b", "eu-west-1"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_side_encryption_is_aes256_or_kms_with_a_bucket() {
    let s3 = ["--bucket", "b", "--aws-region", "eu-west-1"];
    let encryption = |extra: &[&str]| match parse(&[&s3[..], extra].concat()).unwrap().destination {
        Destination::S3 { encryption, .. } => encryption,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        encryption(&["--s3-sse", "AES256"]),
        Some(Encryption::Aes256)
    );
    assert_eq!(
        encryption(&["--s3-sse", "aws:kms", "--s3-sse-kms-key-id", "alias/p"]),
        Some(Encryption::Kms {
            key_id: Some("alias/p".into())
        })
    );
    let e = error(&[&s3[..], &["--s3-sse", "aes"]].concat());
    assert!(e.contains("MEMPROF_S3_SSE") && e.contains("\"aes\""), "{e}");
    assert!(error(&[&s3[..], &["--s3-sse-kms-key-id", "k"]].concat()).contains("aws:kms"));
    assert!(error(&["--s3-sse", "AES256"]).contains("needs BUCKET"));
}

#[test]
fn shutdown_deadline_defaults_below_the_grace_period() {
    assert_eq!(
        parse(&[]).unwrap().shutdown_deadline,
        Duration::from_secs(25)
    );
    assert!(error(&["--shutdown-secs", "0"]).contains("MEMPROF_SHUTDOWN_SECS"));
}

#[test]
fn other_numbers_name_their_variable() {
    assert!(error(&["--pprof-port", "70000"]).contains("PPROF_PORT"));
    assert!(error(&["--cooldown-secs", "x"]).contains("MEMPROF_COOLDOWN_SECS"));
    assert!(error(&["--pprof-path", "debug"]).contains("PPROF_PATH"));
    assert!(error(&["--max-procs", "0"]).contains("MEMPROF_MAX_PROCS"));
}

#[test]
fn pprof_ports_are_a_list_of_ports() {
    assert_eq!(
        parse(&["--pprof-ports", "8080, 6060"]).unwrap().pprof_ports,
        Some(vec![8080, 6060])
    );
    assert_eq!(parse(&["--pprof-ports", ""]).unwrap().pprof_ports, None);
    let e = error(&["--pprof-ports", "8080,http"]);
    assert!(
        e.contains("MEMPROF_PPROF_PORTS") && e.contains("\"http\""),
        "{e}"
    );
}

#[test]
fn subcommands_take_their_arguments() {
    let c = parse(&[
        "--bucket",
        "b",
        "--aws-region",
        "r",
        "capture",
        "--pid",
        "42",
    ])
    .unwrap();
    assert_eq!(c.command, Some(Command::Capture { pid: 42 }));
    assert!(matches!(c.destination, Destination::S3 { .. }));
    let c = parse(&["top", "--iterations", "1"]).unwrap();
    assert!(matches!(
        c.command,
        Some(Command::Top { iterations: 1, .. })
    ));
}

#[test]
fn percentages_can_be_a_list_of_levels() {
    assert_eq!(
        parse(&["--memory-critical-percentage", "95, 80,90,80"])
            .unwrap()
            .levels_pct,
        [80, 90, 95]
    );
}

#[test]
fn scope_lists_and_the_capture_rate() {
    let c = parse(&[
        "--exclude-comm",
        "istio-proxy, envoy",
        "--include-cgroup",
        "kubepods",
        "--max-captures-per-minute",
        "5",
    ])
    .unwrap();
    assert_eq!(c.scope.exclude_comm, ["istio-proxy", "envoy"]);
    assert_eq!(c.scope.include_cgroup, ["kubepods"]);
    assert!(c.scope.include_comm.is_empty());
    assert_eq!(c.max_captures_per_minute, 5);
    let e = error(&["--max-captures-per-minute", "0"]);
    assert!(e.contains("MEMPROF_MAX_CAPTURES_PER_MINUTE"), "{e}");
}

#[test]
fn sizes_as_kubernetes_writes_them() {
    assert_eq!(size("1.5GiB"), Some(3 << 29));
    assert_eq!(size("800Mi"), Some(800 << 20));
    assert_eq!(size("2G"), Some(2_000_000_000));
    assert_eq!(size("4096"), Some(4096));
    assert_eq!(size("1.5 GiB"), None);
    assert_eq!(size("lots"), None);
    assert_eq!(
        parse(&["--memory-critical-bytes", "2Gi,1.5GiB"])
            .unwrap()
            .levels_bytes,
        [3 << 29, 2 << 30]
    );
    let e = error(&["--memory-critical-bytes", "1.5GB,x"]);
    assert!(
        e.contains("MEMORY_CRITICAL_BYTES") && e.contains("\"x\""),
        "{e}"
    );
}

#[test]
fn container_trigger_is_on_at_90_and_can_be_turned_off() {
    let cfg = parse(&[]).unwrap();
    assert_eq!(cfg.container_pct, Some(90));
    assert_eq!(cfg.container_detector, ContainerDetector::Auto);
    assert_eq!(
        parse(&["--memory-container-percentage", "off"])
            .unwrap()
            .container_pct,
        None
    );
    assert_eq!(
        parse(&["--memory-container-percentage", "0"])
            .unwrap()
            .container_pct,
        None
    );
    let cfg = parse(&[
        "--memory-container-percentage",
        "75",
        "--container-detector",
        "poll",
    ]);
    let cfg = cfg.unwrap();
    assert_eq!(
        (cfg.container_pct, cfg.container_detector),
        (Some(75), ContainerDetector::Poll)
    );
    assert!(error(&["--memory-container-percentage", "101"])
        .starts_with("invalid MEMORY_CONTAINER_PERCENTAGE (--memory-container-percentage)"));
}

#[test]
fn listen_takes_a_port_an_address_or_nothing() {
    let listen = |v: &str| parse(&["--listen", v]).map(|c| c.listen);
    assert_eq!(listen(":9400").unwrap(), Some("[::]:9400".parse().unwrap()));
    assert_eq!(
        listen("127.0.0.1:0").unwrap(),
        Some("127.0.0.1:0".parse().unwrap())
    );
    assert_eq!(listen("").unwrap(), None);
    let e = error(&["--listen", "9400"]);
    assert!(e.starts_with("invalid MEMPROF_LISTEN (--listen)"), "{e}");
}

#[test]
fn the_at_kill_ring_is_a_power_of_two_of_pages() {
    let ring = |v: &str| parse(&["--at-kill-ring", v]).map(|c| c.at_kill_ring);
    // The default is the size the kernel programs are built with.
    assert_eq!(
        parse(&[]).unwrap().at_kill_ring,
        memprof_common::HEAP_RING_BYTES
    );
    assert_eq!(ring("16Mi").unwrap(), 16 << 20);
    assert_eq!(ring("65536").unwrap(), 64 << 10);
    for bad in ["3Mi", "32Ki", "512Mi", "1M", "lots"] {
        let e = ring(bad).unwrap_err().0;
        assert!(
            e.starts_with("invalid MEMPROF_AT_KILL_RING (--at-kill-ring)"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn endpoint_only_reads_no_memory_and_so_writes_none() {
    let c = parse(&["--go-heap", "endpoint-only"]).unwrap();
    assert_eq!(c.go_heap, super::GoHeapMode::EndpointOnly);
    let e = error(&[
        "--go-heap",
        "endpoint-only",
        "--go-enable-profiling",
        "true",
    ]);
    assert!(e.contains("choose one"), "{e}");
}
