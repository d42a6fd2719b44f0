//! The images the test runs, none from a registry: memprof's as users build it (`cargo xtask
//! image`), the pause program and the service (testapps/leaky) as static Go programs, each in a
//! scratch image of its own.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use super::{
    podman::{PodGuard, Podman},
    APP_IMAGE, PAUSE_IMAGE,
};
use crate::common::workspace_root;

/// The pod's PID 1, as Kubernetes' pause: holds the namespaces, reaps what is orphaned to it,
/// ends on SIGTERM or SIGINT.
const PAUSE_GO: &str = r#"package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
"#;

impl Podman {
    /// An image `tag` FROM scratch holding the one static program `bin`, its entrypoint.
    fn program_image(&self, tag: &str, bin: &Path, dir: &Path) {
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(bin, dir.join(&name)).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM scratch\nCOPY {name} /{name}\nENTRYPOINT [\"/{name}\"]\n"),
        )
        .unwrap();
        self.run(&["build", "--quiet", "--tag", tag, &dir.display().to_string()]);
    }
}

/// `go build` of `dir` with cgo off (a static binary, as a scratch image needs) into `out`.
fn go_static(dir: &Path, out: &Path) {
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(out)
        .arg(".")
        .current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("running go build");
    assert!(status.success(), "go build in {} failed", dir.display());
}

/// memprof's image built by `cargo xtask image --profile dev`, as users build theirs; its tag.
fn memprof_image() -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["xtask", "image", "--profile", "dev"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo xtask image");
    assert!(out.status.success(), "cargo xtask image failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("localhost/memprof:"))
        .unwrap_or_else(|| panic!("no tag printed by cargo xtask image: {stdout}"))
        .to_string()
}

/// Builds the images: memprof's, then the pause program's and the service's; its tag and the
/// guard that removes them (and the pod).
pub(super) fn build<'a>(
    podman: &'a Podman,
    work: &Path,
    started: Instant,
) -> (String, PodGuard<'a>) {
    let memprof_image = memprof_image();
    let built_memprof = started.elapsed();
    let pause_src = work.join("pause-src");
    std::fs::create_dir_all(&pause_src).unwrap();
    std::fs::write(pause_src.join("main.go"), PAUSE_GO).unwrap();
    std::fs::write(pause_src.join("go.mod"), "module pause\n\ngo 1.19\n").unwrap();
    go_static(&pause_src, &work.join("bin/pause"));
    go_static(
        &workspace_root().join("testapps/leaky"),
        &work.join("bin/leaky"),
    );
    let guard = PodGuard {
        podman,
        images: vec![
            PAUSE_IMAGE.to_string(),
            APP_IMAGE.to_string(),
            memprof_image.clone(),
        ],
    };
    podman.program_image(PAUSE_IMAGE, &work.join("bin/pause"), &work.join("pause"));
    podman.program_image(APP_IMAGE, &work.join("bin/leaky"), &work.join("leaky"));
    println!(
        "image: {memprof_image} built in {built_memprof:?}, {} MB; all images {:?}",
        podman
            .run(&["image", "inspect", "--format", "{{.Size}}", &memprof_image])
            .parse::<u64>()
            .unwrap_or(0)
            / 1_000_000,
        started.elapsed()
    );
    (memprof_image, guard)
}
