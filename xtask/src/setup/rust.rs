//! The pinned nightly the kernel programs build with, its `rust-src`, and `bpf-linker`.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result};

use super::{output, step, works};
use crate::{cargo, sh};

/// The nightly the kernel programs are built with, pinned in memprof-ebpf/rust-toolchain.toml
/// (memprof's build script reads the same file).
pub fn nightly() -> &'static str {
    include_str!("../../../memprof-ebpf/rust-toolchain.toml")
        .lines()
        .find_map(|l| l.strip_prefix("channel = \"")?.strip_suffix('"'))
        .expect("a channel in memprof-ebpf/rust-toolchain.toml")
}

fn nightly_sysroot() -> Result<PathBuf> {
    let nightly = nightly();
    if !works("rustup", &["run", nightly, "rustc", "--version"]) {
        step(&format!(
            "installing the pinned nightly toolchain {nightly}"
        ));
        sh(Command::new("rustup").args(["toolchain", "install", nightly, "--profile", "minimal"]))?;
    }
    Ok(PathBuf::from(
        output(Command::new("rustup").args(["run", nightly, "rustc", "--print", "sysroot"]))?
            .trim(),
    ))
}

pub(super) fn rust_src() -> Result<()> {
    if nightly_sysroot()?
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        return Ok(());
    }
    step("adding rust-src to the nightly toolchain");
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", nightly()]))
}

/// The bpf-linker the kernel programs are built with: another version emits other code, which
/// the verifier may judge (and charge for) differently.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// bpf-linker has no prebuilt download for this toolchain, so it is built against the LLVM
/// shared library that ships inside the nightly toolchain (same LLVM as the nightly rustc).
pub(super) fn bpf_linker() -> Result<()> {
    // It finds the nightly's libLLVM only when run through the nightly (as aya-build does).
    let installed =
        output(Command::new("rustup").args(["run", nightly(), "bpf-linker", "--version"]));
    if installed.is_ok_and(|v| v.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let version = output(Command::new("rustup").args(["run", nightly(), "rustc", "-vV"]))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("nightly rustc does not report its LLVM version")?
        .to_string();
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so"))
        })
        .context("no libLLVM.so in the nightly toolchain")?;
    let prefix = crate::workspace_root().join("target/llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)?;
    step(&format!(
        "building bpf-linker against the nightly's LLVM {major}"
    ));
    sh(cargo()
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix))
}
