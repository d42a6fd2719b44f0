//! The command line as users meet it: bad configuration exits 2 with one line naming the
//! variable; --help lists every option.
use std::process::Command;

fn memprof(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memprof"))
        .env_remove("BUCKET")
        .env_remove("AWS_REGION")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_values_exit_2_with_one_line_naming_the_variable() {
    for (env, var) in [
        (
            ("MEMORY_CRITICAL_PERCENTAGE", "0"),
            "MEMORY_CRITICAL_PERCENTAGE",
        ),
        (
            ("MEMORY_CRITICAL_PERCENTAGE", "101"),
            "MEMORY_CRITICAL_PERCENTAGE",
        ),
        (("WATCH_TIME", "soon"), "WATCH_TIME"),
        (("BUCKET", "profiles"), "AWS_REGION"),
    ] {
        let (code, _, stderr) = memprof(&[env], &[]);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(var), "{env:?}: {stderr}");
    }
}

#[test]
fn unknown_flag_exits_2_with_one_line() {
    let (code, _, stderr) = memprof(&[], &["--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn help_lists_every_option() {
    let (code, stdout, _) = memprof(&[], &["--help"]);
    assert_eq!(code, Some(0));
    for env in [
        "MEMORY_CRITICAL_PERCENTAGE",
        "WATCH_TIME",
        "BUCKET",
        "AWS_REGION",
        "MEMPROF_DETECTOR",
        "MEMPROF_COOLDOWN_SECS",
        "PPROF_PORT",
        "PPROF_PATH",
        "MEMPROF_SPOOL_DIR",
        "MEMPROF_PPROF_PORTS",
        "MEMPROF_PODS_DIR",
        "capture",
        "top",
    ] {
        assert!(
            stdout.contains(env),
            "--help does not mention {env}:\n{stdout}"
        );
    }
}
