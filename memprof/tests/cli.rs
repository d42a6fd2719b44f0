//! The command line as users meet it: bad configuration exits 2 with one line naming the
//! variable; --help lists every option; logs as text or JSON carry the same fields.
use std::process::Command;

use crate::common::Memprof;

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

/// Every long flag and environment variable that `--help` (the daemon's and each command's)
/// names, as written in a help text. Run with no environment, so that no value is shown.
fn options_in_help() -> Vec<String> {
    let mut names = Vec::new();
    let commands: [&[&str]; 5] = [
        &["--help"],
        &["capture", "--help"],
        &["top", "--help"],
        &["doctor", "--help"],
        &["report", "--help"],
    ];
    for args in commands {
        let out = Command::new(env!("CARGO_BIN_EXE_memprof"))
            .env_clear()
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = stdout
            .split(|c: char| c.is_whitespace() || c == '[' || c == ',')
            .collect();
        for (i, word) in words.iter().enumerate() {
            if *word == "env:" {
                let env = words.get(i + 1).copied().unwrap_or_default();
                names.push(env.trim_end_matches(['=', ']']).to_string());
            } else if word.starts_with("--") && word.len() > 2 {
                let flag = word.split(['=', '<', '.', ')', ';']).next().unwrap_or(word);
                names.push(flag.to_string());
            }
        }
    }
    names.retain(|n| !n.is_empty() && n != "--help" && n != "--version");
    names.sort();
    names.dedup();
    names
}

/// The names in the option columns of docs/configuration.md's tables: the first column of the
/// options table, the flag column of the commands table.
fn options_in_page(page: &str) -> Vec<String> {
    let mut names = Vec::new();
    for row in page.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').collect();
        let column = match cells.get(1) {
            Some(c) if c.contains("`memprof ") => cells.get(2),
            c => c,
        };
        let column = column.copied().unwrap_or_default();
        names.extend(column.split('`').skip(1).step_by(2).map(str::to_string));
    }
    names
}

#[test]
fn the_configuration_page_documents_every_option_of_help() {
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let page = std::fs::read_to_string(page).unwrap();
    let help = options_in_help();
    let documented = options_in_page(&page);
    assert!(
        help.len() > 20,
        "too few options read from --help: {help:?}"
    );
    let missing: Vec<_> = help.iter().filter(|h| !documented.contains(h)).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md's tables lack {missing:?}"
    );
    // And the page documents nothing --help lacks (`RUST_LOG` is the log library's own).
    let unknown: Vec<_> = documented
        .iter()
        .filter(|d| *d != "RUST_LOG" && !help.contains(d))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md names {unknown:?}, which --help does not"
    );
}

/// The daemon's start line in both formats: the same fields, as `key=value` in text and as keys
/// of one JSON object per line; every line of the JSON log is JSON.
#[test]
fn json_logs_carry_the_fields_text_logs_do() {
    let fields = ["detector", "poll_every_ms", "max_procs", "destination"];
    let dir = tempfile::tempdir().unwrap();
    let run = |format: &str| -> String {
        let env = [
            ("MEMPROF_LOG_FORMAT", format.to_string()),
            ("MEMPROF_DETECTOR", "poll".to_string()),
        ];
        let m = Memprof::spawn_at(dir.path(), &[], &[], &env);
        let (code, out) = m.stop();
        assert_eq!(code, Some(0), "{out}");
        out
    };
    let text = run("text");
    let line = text
        .lines()
        .find(|l| l.contains("memprof started"))
        .unwrap();
    let json = run("json");
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = objects
        .iter()
        .find(|o| o["message"] == "memprof started")
        .unwrap_or_else(|| panic!("no start line:\n{json}"));
    assert_eq!(started["level"], "INFO", "{started}");
    // Each field holds what the text line shows (a string there quoted, or as it printed).
    for f in fields {
        let value = match &started[f] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => panic!("{f} missing: {started}"),
            other => other.to_string(),
        };
        assert!(
            line.contains(&format!(" {f}={value:?}")) || line.contains(&format!(" {f}={value}")),
            "{f}={value} not in: {line}"
        );
    }
    println!("text: {line}\njson: {started}");
}
