//! memprof's image, as users build it (`cargo xtask image`: the Dockerfile, FROM scratch),
//! run by a real container runtime (podman with runc) as a sidecar in a pod laid out as the
//! kubelet lays one out: an infra ("pause") container holding the pod's PID, network and IPC
//! namespaces, the Go service in a container of its own, and memprof from the image with the
//! sidecar manifest's capabilities and nothing more (`--cap-drop ALL`), seccomp unconfined,
//! tracefs mounted, a host directory for its profiles; each container with its own memory
//! limit and the pod with their sum. The service leaks until the OOM killer ends it: its heap
//! profile must be stored while it lived, and memprof's container must be left alone.
//!
//! No registry is reached: the pause program (Go, static) and the service (testapps/leaky,
//! static) are built here into scratch images too. The image's binary is built with the `dev`
//! profile (a release build with its link-time optimisation takes many minutes); the Dockerfile
//! and the staging are those of a release image.
use std::{
    fs::File,
    io::{ErrorKind, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{
    find_file, have, is_root, pprof_top, require, sidecar::scaled, target_dir, wait_for,
    wait_for_line, workspace_root, MemCgroup,
};

const POD: &str = "memprof-test-image";
const PAUSE_IMAGE: &str = "localhost/memprof-test-pause:latest";
const APP_IMAGE: &str = "localhost/memprof-test-leaky:latest";
const MIB: u64 = 1 << 20;

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

/// podman as the test drives it: its own containers.conf (runc, cgroupfs, the ulimits this
/// machine allows: podman's defaults are refused).
struct Podman {
    conf: PathBuf,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &self.conf);
        cmd
    }

    /// Runs podman with `args`; its stdout, trimmed. Panics with stderr when it fails.
    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("running podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// As `run`, its failure ignored (clean-up).
    fn try_run(&self, args: &[&str]) {
        let _ = self
            .cmd()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn inspect(&self, container: &str, format: &str) -> String {
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
    fn logs(&self, container: &str) -> String {
        let out = self
            .cmd()
            .args(["logs", container])
            .output()
            .expect("running podman logs");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

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

/// The pod and the images made for it, removed on drop (also when the test panics).
struct PodGuard<'a> {
    podman: &'a Podman,
    images: Vec<String>,
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

/// The capabilities the sidecar manifest adds, as podman spells them (`BPF,PERFMON,…`): from
/// `deploy/overlays/sidecar/` where the manifests are a kustomize base with overlays, else
/// `deploy/sidecar/`; `add: [A, B]` or a block list.
fn sidecar_capabilities() -> String {
    for dir in ["deploy/overlays/sidecar", "deploy/sidecar"] {
        let Ok(entries) = std::fs::read_dir(workspace_root().join(dir)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let yaml = std::fs::read_to_string(&file).unwrap();
            if let Some(caps) = capabilities_added(&yaml) {
                return caps.join(",");
            }
        }
    }
    panic!("no `capabilities: add:` in deploy/overlays/sidecar or deploy/sidecar");
}

/// The list under the first `capabilities:` … `add:` of a manifest.
fn capabilities_added(yaml: &str) -> Option<Vec<String>> {
    let mut lines = yaml
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .skip_while(|l| l.trim() != "capabilities:")
        .skip(1)
        .skip_while(|l| !l.trim_start().starts_with("add:"));
    let add = lines.next()?.trim_start().strip_prefix("add:")?.trim();
    let caps: Vec<String> = match add.strip_prefix('[') {
        Some(flow) => flow
            .trim_end_matches(']')
            .split(',')
            .map(|c| c.trim().to_string())
            .collect(),
        None => lines
            .map_while(|l| l.trim().strip_prefix("- ").map(|c| c.trim().to_string()))
            .collect(),
    };
    Some(caps.into_iter().filter(|c| !c.is_empty()).collect())
}

/// The kernel's log from now on (`/dev/kmsg`), where it records each OOM kill with the
/// victim's cgroup.
struct Kmsg(File);

impl Kmsg {
    fn open() -> Self {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .expect("/dev/kmsg");
        f.seek(SeekFrom::End(0)).unwrap();
        Kmsg(f)
    }

    /// The records written since the last call.
    fn read(&mut self) -> Vec<String> {
        let mut records = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => records.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Records overwritten before they were read (EPIPE): read on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => panic!("reading /dev/kmsg: {e}"),
            }
        }
        records
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

#[test]
fn the_image_profiles_a_pod_service_before_its_oom_kill() {
    if !require(is_root(), "root (containers, BPF)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
        || !require(
            have("podman") && have("runc"),
            "podman and runc (cargo xtask setup)",
        )
        || !require(have("go"), "Go")
        || !require(
            Path::new("/sys/kernel/tracing/events").is_dir(),
            "tracefs at /sys/kernel/tracing",
        )
    {
        return;
    }
    let started = Instant::now();
    let work = target_dir().join("image-test");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
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
    let podman = Podman { conf };
    // A run that crashed may have left its pod.
    podman.try_run(&["pod", "rm", "--force", "--time", "0", POD]);

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
    let _guard = PodGuard {
        podman: &podman,
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

    let (app_mib, rate) = scaled(256, 50);
    let memprof_mib = 128;
    // As the kubelet does for a pod whose every container has a limit: the pod's cgroup is
    // limited to their sum. The infra container holds the PID (shareProcessNamespace), network
    // and IPC namespaces; the network is the pod's own loopback only.
    podman.run(&[
        "pod",
        "create",
        "--name",
        POD,
        "--infra-image",
        PAUSE_IMAGE,
        "--share",
        "pid,net,ipc,uts",
        "--network",
        "none",
        "--memory",
        &format!("{}m", app_mib + memprof_mib),
    ]);
    let profiles = work.join("var-lib-memprof");
    std::fs::create_dir_all(&profiles).unwrap();
    let caps = sidecar_capabilities();
    let memprof = format!("{POD}-memprof");
    let volume = format!("{}:/var/lib/memprof", profiles.display());
    let limit = format!("{memprof_mib}m");
    podman.run(&[
        "run",
        "--detach",
        "--pod",
        POD,
        "--name",
        &memprof,
        "--memory",
        &limit,
        "--memory-swap",
        &limit,
        // The manifest's runAsUser: 0 (capabilities count for uid 0 only; no ambient ones).
        "--user",
        "0",
        "--cap-drop",
        "ALL",
        "--cap-add",
        &caps,
        "--security-opt",
        "seccomp=unconfined",
        "--volume",
        "/sys/kernel/tracing:/sys/kernel/tracing",
        "--volume",
        &volume,
        "--env",
        &format!("POD_NAME={POD}"),
        "--env",
        "POD_NAMESPACE=memprof-test",
        "--env",
        "MEMORY_CRITICAL_PERCENTAGE=80",
        "--env",
        "RUST_LOG=memprof=debug",
        &memprof_image,
    ]);
    let start_line = wait_for_line(
        "memprof started",
        Duration::from_secs(60),
        || podman.logs(&memprof),
        |l| l.contains("memprof started"),
    );
    println!("image: {start_line}");
    assert!(
        start_line.contains("detector=\"ebpf"),
        "memprof in the image did not load its kernel programs:\n{}",
        podman.logs(&memprof)
    );
    let memprof_effective = podman.inspect(&memprof, "{{.EffectiveCaps}}");
    println!("image: memprof runs with {memprof_effective} (manifest: {caps})");

    let mut kmsg = Kmsg::open();
    let app = format!("{POD}-app");
    let limit = format!("{app_mib}m");
    podman.run(&[
        "run",
        "--detach",
        "--pod",
        POD,
        "--name",
        &app,
        "--memory",
        &limit,
        "--memory-swap",
        &limit,
        APP_IMAGE,
        "-rate",
        &rate,
    ]);
    let app_started = Instant::now();
    let app_id = podman.inspect(&app, "{{.Id}}");
    let host_pid: u32 = podman.inspect(&app, "{{.State.Pid}}").parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    // The PID the pod (and memprof in it) sees: the last of NSpid's.
    let pid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .expect("NSpid");
    let alive = || {
        std::fs::read_to_string(format!("/proc/{host_pid}/comm")).is_ok_and(|c| c.trim() == "leaky")
    };

    // The heap profile, stored while the service still lived.
    let mut stored_alive = None;
    while alive() && app_started.elapsed() < Duration::from_secs(120) {
        if let Some(p) = find_file(
            &profiles.join("profiles"),
            &format!("_pid-{pid}_"),
            ".heap.pb.gz",
        ) {
            stored_alive = alive().then_some(p);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let stored_after = app_started.elapsed();
    let Some(profile) = stored_alive else {
        panic!(
            "no heap profile of the service (pid {pid} in the pod) while it lived:\n{}",
            podman.logs(&memprof)
        );
    };

    // Then its OOM kill: the container ends with SIGKILL and the kernel's record names it.
    wait_for(
        "the service's container to end",
        Duration::from_secs(120),
        || podman.inspect(&app, "{{.State.Status}}") == "exited",
    );
    let killed_after = app_started.elapsed();
    assert_eq!(podman.inspect(&app, "{{.State.ExitCode}}"), "137");
    let mut records = Vec::new();
    let victim = format!(",task=leaky,pid={host_pid},");
    wait_for(
        "the kernel's OOM-kill record",
        Duration::from_secs(10),
        || {
            records.extend(kmsg.read());
            records
                .iter()
                .any(|r| r.contains("oom-kill:") && r.contains(&app_id) && r.contains(&victim))
        },
    );
    let memprof_id = podman.inspect(&memprof, "{{.Id}}");
    assert!(
        !records
            .iter()
            .any(|r| r.contains("oom-kill:") && r.contains(&format!("libpod-{memprof_id}"))),
        "an OOM kill in memprof's container"
    );
    wait_for_line(
        "the OOM killer's choice",
        Duration::from_secs(10),
        || podman.logs(&memprof),
        |l| l.contains(&format!("OOM killer chose process pid={pid}")),
    );
    println!(
        "image: profile {} stored {stored_after:?} after the service started, OOM kill by \
         {killed_after:?}",
        profile.file_name().unwrap().to_string_lossy()
    );
    let top = pprof_top(&std::fs::read(&profile).unwrap());
    assert!(
        top.contains("main.leakyRetain"),
        "the profile does not name the leak:\n{top}"
    );

    // memprof's container lives on, never OOM-killed, and ends cleanly on SIGTERM.
    assert_eq!(
        podman.inspect(&memprof, "{{.State.Running}} {{.State.OOMKilled}}"),
        "true false",
        "{}",
        podman.logs(&memprof)
    );
    let memprof_pid = podman.inspect(&memprof, "{{.State.Pid}}");
    if let Some(peak) = memcg_file(&memprof_pid, "memory.max_usage_in_bytes") {
        println!("image: memprof's container peaked at {} MiB", peak / MIB);
    }
    if let Some(kills) = memcg_oom_kills(&memprof_pid) {
        assert_eq!(kills, 0, "OOM kills in memprof's container");
    }
    podman.run(&["stop", "--time", "10", &memprof]);
    assert_eq!(
        podman.inspect(&memprof, "{{.State.ExitCode}}"),
        "0",
        "memprof should exit 0 on SIGTERM:\n{}",
        podman.logs(&memprof)
    );
    println!("image: the whole test took {:?}", started.elapsed());
}

/// The v1 memory cgroup directory of host process `pid`.
fn memcg_dir(pid: &str) -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })?;
    Some(Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
}

fn memcg_file(pid: &str, file: &str) -> Option<u64> {
    std::fs::read_to_string(memcg_dir(pid)?.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The `oom_kill` count of `pid`'s v1 memory cgroup.
fn memcg_oom_kills(pid: &str) -> Option<u64> {
    std::fs::read_to_string(memcg_dir(pid)?.join("memory.oom_control"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

#[test]
fn capabilities_are_read_from_either_manifest_layout() {
    let flow = "securityContext:\n  capabilities:\n    drop: [ALL]\n    add: [BPF, PERFMON]  # x\n";
    assert_eq!(capabilities_added(flow).unwrap(), ["BPF", "PERFMON"]);
    let block =
        "capabilities:\n  add:\n    - BPF\n    - SYS_ADMIN # why\n  drop:\n    - ALL\nvolumes:\n";
    assert_eq!(capabilities_added(block).unwrap(), ["BPF", "SYS_ADMIN"]);
    assert!(!sidecar_capabilities().is_empty());
}
