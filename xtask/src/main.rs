//! Project tasks: `cargo xtask <setup|run|test|bench|vm-test>`.
//!
//! `run` and `test` install whatever is missing first (see `setup`), so on a fresh machine
//! they are the only two commands needed.
mod bench;
mod bench_container;
mod bench_fetch;
mod bench_kill;
mod bench_large;
mod bench_shared;
mod setup;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

  setup [--build-only]  install what building (and testing) needs; idempotent
  run [-- ARGS]      build memprof (release) and run it with ARGS
  test [-- ARGS]     set up, then run every test (ARGS go to cargo test); under CI also vm-test
  bench              page-fault overhead and detection-to-stored latency, all modes side by side
  vm-test            run the BPF and end-to-end tests on Debian's 6.1 kernel (cgroup v2) in a VM";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((cmd, rest)) => (
            cmd.as_str(),
            rest.iter()
                .skip_while(|a| *a == "--")
                .cloned()
                .collect::<Vec<_>>(),
        ),
        None => ("help", Vec::new()),
    };
    let result = match cmd {
        "setup" if rest.iter().any(|a| a == "--build-only") => setup::build_prerequisites(),
        "setup" => setup::all(),
        "run" => run(&rest),
        "test" => test(&rest),
        "bench" => bench::run(&rest),
        "vm-test" => vm::run(),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.env("PATH", setup::path_with_cargo_bin());
    cmd
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn build_release() -> Result<std::path::PathBuf> {
    sh(cargo()
        .args(["build", "--release", "-p", "memprof"])
        .current_dir(workspace_root()))?;
    Ok(workspace_root().join("target/release/memprof"))
}

fn run(args: &[String]) -> Result<()> {
    setup::build_prerequisites()?;
    let bin = build_release()?;
    let status = Command::new(&bin)
        .args(args)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

fn test(args: &[String]) -> Result<()> {
    setup::all()?;
    sh(cargo()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(workspace_root()))?;
    // One test at a time: the end-to-end tests race real services against the OOM killer and
    // measure the kernel's counters, which other tests' load would disturb.
    sh(cargo()
        .args(["test", "--workspace", "--"])
        .args(["--test-threads", "1"])
        .args(args)
        .current_dir(workspace_root()))?;
    if std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var_os("MEMPROF_VM_TEST").is_some()
    {
        vm::run()
    } else {
        eprintln!("xtask: the 6.1-kernel VM stage runs under CI=true or MEMPROF_VM_TEST=1 (or: cargo xtask vm-test)");
        Ok(())
    }
}
