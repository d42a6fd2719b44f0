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
//!
//! Here the test; the submodules hold its parts: `images` (the three images, built here),
//! `podman` (podman as the test drives it, the clean-up guard), `pod` (the pod and its
//! containers), `manifest` (the sidecar manifest's capabilities), `kernel` (OOM-kill records,
//! memory cgroups).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::common::{
    find_file, have, is_root, pprof_top, require, sidecar::scaled, target_dir, wait_for,
    wait_for_line, MemCgroup,
};

mod images;
mod kernel;
mod manifest;
mod pod;
mod podman;

use kernel::{memcg_file, memcg_oom_kills, Kmsg};
use manifest::{capabilities_added, sidecar_capabilities};
use podman::Podman;

const POD: &str = "memprof-test-image";
const PAUSE_IMAGE: &str = "localhost/memprof-test-pause:latest";
const APP_IMAGE: &str = "localhost/memprof-test-leaky:latest";
const MIB: u64 = 1 << 20;

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
    let podman = Podman::new(&work);
    // A run that crashed may have left its pod.
    podman.try_run(&["pod", "rm", "--force", "--time", "0", POD]);
    let (memprof_image, _guard) = images::build(&podman, &work, started);

    let (app_mib, rate) = scaled(256, 50);
    let memprof_mib = 128;
    pod::create(&podman, app_mib, memprof_mib);
    let profiles = work.join("var-lib-memprof");
    std::fs::create_dir_all(&profiles).unwrap();
    let memprof = pod::start_memprof(&podman, &memprof_image, &profiles, memprof_mib);

    let mut kmsg = Kmsg::open();
    let app = pod::start_app(&podman, app_mib, &rate);
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

#[test]
fn capabilities_are_read_from_either_manifest_layout() {
    let flow = "securityContext:\n  capabilities:\n    drop: [ALL]\n    add: [BPF, PERFMON]  # x\n";
    assert_eq!(capabilities_added(flow).unwrap(), ["BPF", "PERFMON"]);
    let block =
        "capabilities:\n  add:\n    - BPF\n    - SYS_ADMIN # why\n  drop:\n    - ALL\nvolumes:\n";
    assert_eq!(capabilities_added(block).unwrap(), ["BPF", "SYS_ADMIN"]);
    assert!(!sidecar_capabilities().is_empty());
}
