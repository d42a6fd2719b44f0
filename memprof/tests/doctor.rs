//! `memprof doctor` as an engineer on a node runs it: all green with the eBPF detector and a
//! local directory or the S3 server; a bucket that does not exist; the poll fallback without
//! the BPF capabilities; `--pid` on the Go service in a memory cgroup of its own; the
//! kernel's listing of processes in a PID namespace of its own.
use std::path::Path;

use crate::common::{outage::prerequisites, *};

/// `memprof doctor ARGS` started through `wrapper` (e.g. `setpriv`), its spool and local
/// directory below `dir`: exit code, stdout, stderr.
fn doctor(
    dir: &Path,
    wrapper: &[&str],
    args: &[&str],
    env: &[(&str, String)],
) -> (Option<i32>, String, String) {
    let out = memprof_command(wrapper)
        .env_remove("BUCKET")
        .env_remove("AWS_REGION")
        .env_remove("MEMPROF_DETECTOR")
        .env_remove("MEMPROF_BPFFS")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(dir_args(dir))
        .arg("doctor")
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("memprof doctor {args:?}:\n{stdout}{stderr}");
    (out.status.code(), stdout, stderr)
}

/// The status of check `what` and its line (`  OK    what  detail`).
fn check<'a>(out: &'a str, what: &str) -> (&'a str, &'a str) {
    out.lines()
        .find(|l| {
            l.get(8..)
                .is_some_and(|r| r.starts_with(&format!("{what} ")))
        })
        .map(|l| (l[..8].trim(), l))
        .unwrap_or_else(|| panic!("no {what:?} check in:\n{out}"))
}

/// The check lines (not headings, fixes or the summary).
fn check_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| {
            ["  OK ", "  WARN ", "  FAIL "]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .collect()
}

/// The fix printed under check `what`.
fn fix_of<'a>(out: &'a str, what: &str) -> &'a str {
    let line = check(out, what).1;
    let mut lines = out.lines().skip_while(|l| *l != line).skip(1);
    lines
        .next()
        .and_then(|l| l.trim().strip_prefix("fix: "))
        .unwrap_or_else(|| panic!("no fix under {what:?} in:\n{out}"))
}

fn all_green(out: &str) {
    let lines = check_lines(out);
    assert!(lines.len() >= 10, "too few checks:\n{out}");
    for line in lines {
        assert!(line.starts_with("  OK "), "not OK: {line}\n{out}");
    }
    let detector = check(out, "detector").1;
    assert!(detector.contains("eBPF detector: ebpf "), "{detector}");
    assert!(
        out.contains("memprof would work here, with the eBPF detector"),
        "{out}"
    );
}

#[test]
fn all_green_with_a_local_directory_and_with_s3_and_a_missing_bucket_fails() {
    if prerequisites().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = doctor(dir.path(), &[], &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    all_green(&out);
    for what in ["local directory", "spool"] {
        assert!(
            check(&out, what).1.contains("memprof can create it"),
            "{out}"
        );
    }
    // The probe files, and the directories made for them, are gone again.
    for sub in ["spool", "profiles"] {
        assert!(!dir.path().join(sub).exists(), "doctor left {sub} behind");
    }

    let s3 = S3Server::start("doctor");
    let (code, out, _) = doctor(dir.path(), &[], &[], &s3.env());
    assert_eq!(code, Some(0), "{out}");
    all_green(&out);
    let bucket = check(&out, "S3 bucket").1;
    assert!(
        bucket.contains("s3://doctor in us-east-1: HeadBucket answered"),
        "{bucket}"
    );

    let mut env = s3.env();
    env[0] = ("BUCKET", "no-such-bucket".into());
    let (code, out, _) = doctor(dir.path(), &[], &[], &env);
    assert_eq!(code, Some(1), "{out}");
    let (status, line) = check(&out, "S3 bucket");
    assert_eq!(status, "FAIL", "{line}");
    assert!(line.contains("no such bucket (404)"), "{line}");
    assert!(
        fix_of(&out, "S3 bucket").contains("create the bucket"),
        "{out}"
    );
    assert_eq!(check(&out, "detector").0, "OK", "{out}");
}

#[test]
fn without_the_bpf_capabilities_the_poll_fallback_and_what_to_grant() {
    if prerequisites().is_none() || !require(have("setpriv"), "util-linux's setpriv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // SYS_ADMIN stands in for BPF and PERFMON: the eBPF detector still loads, the two are
    // warned about.
    let setpriv = |drop: &str| {
        [
            "setpriv",
            &format!("--bounding-set={drop}"),
            "--inh-caps=-all",
            "--",
        ]
        .map(String::from)
    };
    let wrapper = setpriv("-bpf,-perfmon");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let (code, out, _) = doctor(dir.path(), &wrapper, &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        let (status, line) = check(&out, cap);
        assert_eq!(status, "WARN", "{line}");
        assert!(line.contains("SYS_ADMIN stands in"), "{line}");
    }
    assert_eq!(check(&out, "detector").0, "OK", "{out}");

    let wrapper = setpriv("-bpf,-perfmon,-sys_admin");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let (code, out, _) = doctor(dir.path(), &wrapper, &[], &[]);
    assert_eq!(code, Some(1), "{out}");
    let (status, line) = check(&out, "detector");
    assert_eq!(status, "FAIL", "{line}");
    assert!(line.contains("poll fallback because "), "{line}");
    assert!(line.contains("Operation not permitted"), "{line}");
    let fix = fix_of(&out, "detector");
    assert!(
        fix.contains("grant the capabilities BPF and PERFMON"),
        "{fix}"
    );
    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        assert_eq!(check(&out, cap).0, "FAIL", "{out}");
        assert!(fix_of(&out, cap).contains(&cap[4..]), "{out}");
    }
    assert_eq!(check(&out, "CAP_SYS_ADMIN").0, "WARN", "{out}");
    assert!(out.contains("check(s) FAILED"), "{out}");
}

#[test]
fn pid_of_a_go_service_in_its_own_memory_cgroup() {
    let Some(go) = prerequisites() else {
        return;
    };
    let limit: u64 = 256 << 20;
    let cg = MemCgroup::new("memprof-doctor", limit);
    let dir = tempfile::tempdir().unwrap();
    // Its name (and so its comm and path) carries an escape sequence: printed escaped.
    let named = dir.path().join("leaky\u{1b}[2J");
    std::fs::copy(&go, &named).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut svc = cg.start(&named, &["-addr", &addr, "-rate", "1"]);
    let pid = svc.id().to_string();
    let (code, out, _) = doctor(dir.path(), &[], &["--pid", &pid], &[]);
    let _ = svc.kill();
    let _ = svc.wait();
    assert_eq!(code, Some(0), "{out}");
    all_green(&out);
    assert!(!out.contains('\u{1b}'), "{out}");
    let heading = format!("process {pid} (leaky\\u{{1b}}[2J)");
    assert!(out.contains(&heading), "no {heading:?} in:\n{out}");
    let limit_line = check(&out, "limit").1;
    let cgroup = cg.dir.file_name().unwrap().to_str().unwrap();
    assert!(
        limit_line.contains(&format!("{limit} bytes"))
            && limit_line.contains(" from its memory cgroup /")
            && limit_line.contains(cgroup),
        "{limit_line}"
    );
    let go_line = check(&out, "Go").1;
    assert!(
        go_line.contains("go1.") && go_line.contains("leaky\\u{1b}[2J"),
        "{go_line}"
    );
    let endpoint = check(&out, "endpoint").1;
    assert!(
        endpoint.contains(&format!("http://{addr}/debug/pprof/heap")),
        "{endpoint}"
    );
    let heap = check(&out, "heap in memory").1;
    assert!(
        heap.contains("readable: variables found in the symbol table, MemProfileRate 524288, bucket list readable"),
        "{heap}"
    );
}

/// In a PID namespace of its own (a sidecar's, in a pod), the kernel's listing names every
/// process by the PID it has there, PID 1 included, as /proc does.
#[test]
fn the_kernels_listing_lists_a_pid_namespace_as_its_proc_does() {
    if prerequisites().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        "sleep 60 & sleep 60 & exec \"$@\"",
        "sh",
    ];
    let (_, out, _) = doctor(dir.path(), &ns, &[], &[]);
    let (status, line) = check(&out, "listing");
    assert_eq!(status, "OK", "{out}");
    assert!(
        line.contains("the kernel lists the 3 processes /proc lists in this PID namespace"),
        "{line}"
    );
}
