//! Installs what memprof's build and tests need, each step only when missing: the pinned
//! nightly with `rust-src` and `bpf-linker` built against its LLVM (`rust`: the BPF programs),
//! Go (`go`: the test services), and the tools the tests run (`tools`: pods, podman, chromium,
//! the Dockerfile's and the manifests' checkers); the S3 test server `s3s-fs` here.
mod go;
mod rust;
mod tools;

pub use go::{build_testapps, GO_CURRENT};
use go::{go, go_pypi};
use rust::{bpf_linker, rust_src};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};
use tools::{browser, hadolint, kube_tools, pod_tools};
pub use tools::{
    hadolint_bin, image_tools, kubectl_bin, kubernetes_validate_dir, kubernetes_validate_works,
    KUBERNETES_VALIDATE,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, sh};

const S3S_FS_VERSION: &str = "0.14.1";

/// `$CARGO_HOME/bin` first on PATH, where `cargo install` puts its binaries.
pub fn path_with_cargo_bin() -> String {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let bin = home.join("bin").display().to_string();
    let path = std::env::var("PATH").unwrap_or_default();
    if path.split(':').any(|p| p == bin) {
        return path;
    }
    format!("{bin}:{path}")
}

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .env("PATH", path_with_cargo_bin())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// What `cargo build` needs: the BPF programs are built by memprof's build script.
pub fn build_prerequisites() -> Result<()> {
    rust_src()?;
    bpf_linker()
}

pub fn all() -> Result<()> {
    build_prerequisites()?;
    go()?;
    go_pypi()?;
    pod_tools()?;
    image_tools()?;
    browser()?;
    hadolint()?;
    kube_tools()?;
    s3s_fs()
}

fn s3s_fs() -> Result<()> {
    if works("s3s-fs", &["--version"]) {
        return Ok(());
    }
    step("installing the S3 test server s3s-fs");
    sh(cargo().args([
        "install",
        "s3s-fs",
        "--locked",
        "--features",
        "binary",
        "--version",
        S3S_FS_VERSION,
    ]))
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return Ok(());
    }
    sh(Command::new("apt-get").arg("update"))?;
    if !install() {
        bail!("apt-get install {} failed", packages.join(" "));
    }
    Ok(())
}

pub fn step(what: &str) {
    eprintln!("xtask setup: {what}");
}
