//! The pod, laid out as the kubelet lays one out: the infra ("pause") container holding its
//! namespaces, memprof's container from the image with the sidecar manifest's capabilities,
//! and the service's container; each with its memory limit, the pod with their sum.
use std::{path::Path, time::Duration};

use super::{manifest::sidecar_capabilities, podman::Podman, APP_IMAGE, PAUSE_IMAGE, POD};
use crate::common::wait_for_line;

/// Creates the pod, its cgroup limited to `app_mib` + `memprof_mib`.
pub(super) fn create(podman: &Podman, app_mib: u64, memprof_mib: u64) {
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
}

/// Runs memprof from `memprof_image` in the pod, its profiles in `profiles`, and waits until it
/// has started with its kernel programs loaded; the container's name.
pub(super) fn start_memprof(
    podman: &Podman,
    memprof_image: &str,
    profiles: &Path,
    memprof_mib: u64,
) -> String {
    let caps = sidecar_capabilities();
    let memprof = format!("{POD}-memprof");
    let volume = format!("{}:/var/lib/memprof", profiles.display());
    run_in_pod(
        podman,
        &memprof,
        memprof_mib,
        &[
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
            memprof_image,
        ],
    );
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
    memprof
}

/// Runs the service in the pod, leaking at `rate` until its `app_mib` limit; the container's
/// name.
pub(super) fn start_app(podman: &Podman, app_mib: u64, rate: &str) -> String {
    let app = format!("{POD}-app");
    run_in_pod(podman, &app, app_mib, &[APP_IMAGE, "-rate", rate]);
    app
}

/// Starts container `name` of the pod, detached, with `mib` of memory and no swap beyond it
/// (as a pod's memory limit); `rest` is the rest of `podman run`'s arguments.
fn run_in_pod(podman: &Podman, name: &str, mib: u64, rest: &[&str]) {
    let limit = format!("{mib}m");
    let mut args = vec![
        "run",
        "--detach",
        "--pod",
        POD,
        "--name",
        name,
        "--memory",
        &limit,
        "--memory-swap",
        &limit,
    ];
    args.extend_from_slice(rest);
    podman.run(&args);
}
