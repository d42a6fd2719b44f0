//! `cargo xtask test`: every test binary runs, also after one has failed, and the VM stage
//! beside them; the run then fails with the list of what failed, so a newcomer sees every
//! problem at once. `--repeat N` runs the integration tests N times and prints each test's
//! pass count.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, setup, sh, vm, workspace_root};

/// A compiled test binary: `memprof::pod_policy`, `memprof (lib)`, …
pub struct Binary {
    pub name: String,
    /// An integration test (`tests/*.rs`), as opposed to a crate's unit tests.
    pub integration: bool,
    pub exe: PathBuf,
    /// Where cargo would run it: its package's directory.
    pub dir: PathBuf,
}

/// How each test of one binary ended, and whether the binary itself succeeded.
pub struct Outcome {
    pub tests: Vec<(String, bool)>,
    pub success: bool,
}

pub fn test(args: &[String]) -> Result<()> {
    let (repeat, args) = repeat_arg(args)?;
    setup::all()?;
    if let Some(n) = repeat {
        return repeat_integration(n, &args);
    }
    let mut failed: Vec<String> = Vec::new();
    // A check build embeds no kernel object (see memprof/build.rs): the programs are built
    // once, for the tests.
    if let Err(e) = sh(cargo()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env("MEMPROF_CHECK_ONLY", "1")
        .current_dir(workspace_root()))
    {
        failed.push(format!("clippy: {e:#}"));
    }
    failed.extend(crate::manifests::check());
    // The Dockerfile, linted (well under a second).
    if let Err(e) = sh(Command::new(setup::hadolint_bin())
        .arg("Dockerfile")
        .current_dir(workspace_root()))
    {
        failed.push(format!("hadolint: {e:#}"));
    }
    let bins = binaries()?;
    // The 6.1 guest runs its tests beside the host's: it has its own kernel, cgroups, network
    // and bpffs, and the host's tests mostly wait on leaks while the emulated guest computes
    // (the host's integration tests took 466 s beside it, 464 s alone).
    let vm = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var_os("MEMPROF_VM_TEST").is_some();
    let guest = match vm {
        true => Some(vm::start(false)),
        false => None,
    };
    // One test at a time: the end-to-end tests race real services against the OOM killer and
    // measure the kernel's counters, which other tests' load would disturb.
    for bin in bins {
        let outcome = match run(&bin, &args) {
            Ok(outcome) => outcome,
            Err(e) => {
                failed.push(format!("{}: {e:#}", bin.name));
                continue;
            }
        };
        let names: Vec<String> = outcome
            .tests
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(t, _)| format!("{}::{t}", bin.name))
            .collect();
        if names.is_empty() && !outcome.success {
            failed.push(format!("{} (the binary failed outside any test)", bin.name));
        }
        failed.extend(names);
    }
    if let Some(guest) = guest {
        eprintln!("\nxtask: the 6.1-kernel VM stage (run beside the host's tests)");
        match guest.and_then(vm::finish) {
            Ok(vm_failed) => failed.extend(vm_failed.into_iter().map(|t| format!("vm: {t}"))),
            Err(e) => failed.push(format!("vm: {e:#}")),
        }
    } else {
        eprintln!("xtask: the 6.1-kernel VM stage runs under CI=true or MEMPROF_VM_TEST=1 (or: cargo xtask vm-test)");
    }
    if failed.is_empty() {
        eprintln!("xtask: every test passed");
        return Ok(());
    }
    eprintln!("\nxtask: {} failed:", failed.len());
    for f in &failed {
        eprintln!("  {f}");
    }
    bail!("{} failed (listed above)", failed.len())
}

/// `--repeat N` out of the arguments (the rest go to the test binaries).
fn repeat_arg(args: &[String]) -> Result<(Option<u32>, Vec<String>)> {
    let mut rest = Vec::new();
    let mut repeat = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--repeat" {
            let n = it.next().context("--repeat needs a count")?;
            repeat = Some(n.parse().with_context(|| format!("--repeat {n:?}"))?);
        } else {
            rest.push(a.clone());
        }
    }
    Ok((repeat, rest))
}

/// Runs the integration tests `n` times over and prints every test's pass count.
fn repeat_integration(n: u32, args: &[String]) -> Result<()> {
    let bins: Vec<Binary> = binaries()?.into_iter().filter(|b| b.integration).collect();
    let mut passes: BTreeMap<String, u32> = BTreeMap::new();
    for round in 1..=n {
        eprintln!("xtask: round {round} of {n}");
        for bin in &bins {
            for (test, ok) in run(bin, args)?.tests {
                *passes.entry(format!("{}::{test}", bin.name)).or_default() += ok as u32;
            }
        }
    }
    let width = passes.keys().map(String::len).max().unwrap_or(4);
    println!("\n{:<width$}  passed", "test");
    for (test, p) in &passes {
        println!("{test:<width$}  {p}/{n}");
    }
    let flaky = passes.values().filter(|&&p| p < n).count();
    if flaky > 0 {
        bail!("{flaky} of {} tests did not pass every round", passes.len());
    }
    Ok(())
}

/// Builds every test binary of the workspace and lists them, unit tests first.
fn binaries() -> Result<Vec<Binary>> {
    let out = cargo()
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format",
            "json",
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("building the tests")?;
    if !out.status.success() {
        bail!("building the tests failed");
    }
    let mut bins = Vec::new();
    for line in out.stdout.lines() {
        let msg: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        if msg["profile"]["test"] != true {
            continue;
        }
        let kind = msg["target"]["kind"][0].as_str().unwrap_or_default();
        let target = msg["target"]["name"].as_str().unwrap_or_default();
        let manifest = PathBuf::from(msg["manifest_path"].as_str().unwrap_or_default());
        let package = manifest
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let integration = kind == "test";
        bins.push(Binary {
            name: match integration {
                true => format!("{package}::{target}"),
                false => format!("{package} ({kind})"),
            },
            integration,
            exe: PathBuf::from(exe),
            dir: manifest.parent().map(PathBuf::from).unwrap_or_default(),
        });
    }
    bins.sort_by(|a, b| (a.integration, &a.name).cmp(&(b.integration, &b.name)));
    Ok(bins)
}

/// Runs one test binary one test at a time, relaying its output, and reads off each test's end:
/// the tests it lists, less those its closing `failures:` list names (a line-by-line reading
/// could be cut by what a test's child processes print meanwhile).
pub fn run(bin: &Binary, args: &[String]) -> Result<Outcome> {
    eprintln!("\n     Running {} ({})", bin.name, bin.exe.display());
    let listed = Command::new(&bin.exe)
        .arg("--list")
        .args(args.iter().filter(|a| *a != "--nocapture"))
        .current_dir(&bin.dir)
        .output()
        .with_context(|| format!("listing the tests of {}", bin.exe.display()))?;
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test").map(str::to_string))
        .collect();
    let mut child = Command::new(&bin.exe)
        .args(["--test-threads", "1"])
        .args(args)
        .current_dir(&bin.dir)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.exe.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let end = relay(BufReader::new(stdout), &mut std::io::stdout())?;
    let success = child.wait()?.success();
    let tests = names
        .into_iter()
        .map(|t| {
            let ok = end.finished && !end.failed.contains(&t);
            (t, ok)
        })
        .collect();
    Ok(Outcome { tests, success })
}

/// What a test binary's output says about its end.
#[derive(Debug, Default, PartialEq)]
struct End {
    /// A `test result:` line: the binary ran every test it meant to.
    finished: bool,
    /// The names in the closing `failures:` list.
    failed: Vec<String>,
}

/// Copies libtest's output to `to` and reads its end off it.
fn relay(out: impl BufRead, to: &mut impl Write) -> Result<End> {
    let mut end = End::default();
    // In the closing list (`failures:` directly followed by indented names).
    let (mut after_header, mut listing) = (false, false);
    for line in out.lines() {
        let line = line?;
        writeln!(to, "{line}")?;
        if line.starts_with("test result: ") {
            end.finished = true;
        }
        if after_header && line.starts_with("    ") {
            listing = true;
            end.failed.clear();
        }
        if listing {
            match line.strip_prefix("    ") {
                Some(name) => end.failed.push(name.trim().to_string()),
                None => listing = false,
            }
        }
        after_header = line == "failures:";
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::{relay, End};

    #[test]
    fn the_closing_failure_list_is_read_not_the_failures_output() {
        let out = "running 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... FAILED\n\n\
                   failures:\n\n---- b stdout ----\n    indented output\n\n\
                   failures:\n    b\n    c\n\ntest result: FAILED. 1 passed; 2 failed\n";
        let end = relay(out.as_bytes(), &mut Vec::new()).unwrap();
        assert_eq!(
            end,
            End {
                finished: true,
                failed: vec!["b".into(), "c".into()]
            }
        );
    }

    #[test]
    fn a_binary_cut_short_has_not_finished() {
        let end = relay(
            "running 2 tests\ntest a ... ok\n".as_bytes(),
            &mut Vec::new(),
        )
        .unwrap();
        assert!(!end.finished && end.failed.is_empty());
    }
}
