//! Project tasks: `cargo xtask <setup|run|test|bench|vm-test|image|manifests>`.
//!
//! `run` and `test` install whatever is missing first (see `setup`), so on a fresh machine
//! they are the only two commands needed.
mod bench;
mod guest;
mod image;
mod manifests;
mod setup;
mod testrun;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

  setup [--build-only]  install what building (and testing) needs; idempotent
  run [-- ARGS]      build memprof (release) and run it with ARGS
  test [--repeat N] [-- ARGS]
                     set up, then run every test binary, also after a failure (ARGS go to
                     the test binaries), then list what failed; under CI vm-test beside.
                     --repeat N: the integration tests N times, and each test's pass count
  manifests          render deploy/overlays with kustomize and validate every object
  bench              page-fault overhead and detection-to-stored latency, all modes side by side
  vm-test            run the BPF and end-to-end tests on Debian's 6.1 kernel (cgroup v2) in a VM
  image [--profile P]
                     build the static binary and the FROM-scratch image with podman:
                     localhost/memprof:<version> and :latest (another profile: :<version>-P)";

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
        "test" => testrun::test(&rest),
        "bench" => bench::run(&rest),
        // The 6.1 guest's half of `bench` (see bench/programs.rs).
        "bench-guest" => bench::guest(&rest),
        "image" => image::run(&rest),
        "manifests" => manifests::command(),
        "vm-test" => vm::run().and_then(|failed| match failed.is_empty() {
            true => Ok(()),
            false => bail!("failed in the VM: {}", failed.join(", ")),
        }),
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
