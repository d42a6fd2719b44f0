//! podman as the test drives it (its own containers.conf), and the guard that removes the pod
//! and the images made for it.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::POD;

/// podman as the test drives it: its own containers.conf (runc, cgroupfs, the ulimits this
/// machine allows: podman's defaults are refused).
pub(super) struct Podman {
    conf: PathBuf,
    /// podman's working directory: conmon writes an `oom` file into it when a container is
    /// OOM-killed, which must not land in the repository.
    work: PathBuf,
}

impl Podman {
    /// podman with its containers.conf written in `work`.
    pub(super) fn new(work: &Path) -> Self {
        let conf = work.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\n\
             default_ulimits = [\"nofile=10000:10000\", \"nproc=32768:32768\"]\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        Podman {
            conf,
            work: work.to_path_buf(),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &self.conf)
            .current_dir(&self.work);
        cmd
    }

    /// Runs podman with `args`; its stdout, trimmed. Panics with stderr when it fails.
    pub(super) fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("running podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// As `run`, its failure ignored (clean-up).
    pub(super) fn try_run(&self, args: &[&str]) {
        let _ = self
            .cmd()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    pub(super) fn inspect(&self, container: &str, format: &str) -> String {
        self.run(&[
            "inspect",
            "--type",
            "container",
            "--format",
            format,
            container,
        ])
    }

    /// stdout and stderr of a container, as the kubelet keeps them.
    pub(super) fn logs(&self, container: &str) -> String {
        let out = self
            .cmd()
            .args(["logs", container])
            .output()
            .expect("running podman logs");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

/// The pod and the images made for it, removed on drop (also when the test panics).
pub(super) struct PodGuard<'a> {
    pub(super) podman: &'a Podman,
    pub(super) images: Vec<String>,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        self.podman
            .try_run(&["pod", "rm", "--force", "--time", "0", POD]);
        for image in &self.images {
            self.podman.try_run(&["rmi", "--force", image]);
        }
    }
}
