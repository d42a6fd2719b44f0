//! memprof as a sidecar in a real pod layout (see `common::pod`): its own container with a
//! 128 MiB limit and a mount view showing only its own cgroup, the Go service in another
//! container, one PID and one network namespace for both, a real S3 server reached over the
//! pod's link. The limit must be the service's own, and two pods must stay apart.
use std::time::{Duration, Instant};

use crate::common::{pod::Pod, sidecar::*, *};

#[test]
fn sidecar_in_a_pod_profiles_against_the_service_limit() {
    let (limit_mib, rate) = scaled(512, 200);
    let Some(s) = setup("limit", 1, &[]) else {
        return;
    };
    let app = s.service("app", limit_mib * MIB, &["-rate", &rate]);
    let started = Instant::now();

    let key = s.next_key(&app, &[]);
    let stored_after = started.elapsed();
    app.wait_oom_kill();
    println!(
        "pod ({}): profile stored {stored_after:?} after start, OOM kill {:?} after start",
        if app.cgroup.v2 {
            "cgroup v2"
        } else {
            "cgroup v1"
        },
        started.elapsed()
    );

    let pct = percent_of(&key);
    assert!(
        (80..100).contains(&pct),
        "percentage {pct} in {key} is not the service's"
    );
    let line = s.memprof.stored_line(&key);
    println!("pod: {line}");
    assert!(
        line.contains(&format!("limit={}", limit_mib * MIB))
            && line.contains("limit_source=Cgroup"),
        "memprof measured against another limit than the service's {limit_mib} MiB: {line}"
    );
    let top = pprof_top(&s.client.get(&key));
    assert!(
        top.contains("main.leakyRetain"),
        "the profile does not name the leak:\n{top}"
    );
    s.memprof.wait_for_log(
        &format!("OOM killer chose process pid={}", app.pid),
        Duration::from_secs(10),
    );
    assert_eq!(
        s.memprof.stop(),
        Some(0),
        "memprof should exit 0 on SIGTERM"
    );
}

#[test]
fn two_sidecars_capture_only_their_own_pods() {
    if prerequisites().is_none() {
        return;
    }
    let (pod_a, pod_b) = (Pod::new("tenant-a", 2), Pod::new("tenant-b", 3));
    let (s3_a, s3_b) = (
        S3Server::start_on("profiles", &pod_a.host_addr()),
        S3Server::start_on("profiles", &pod_b.host_addr()),
    );
    // No bpffs where memprof looks: each sidecar loads its own programs, and says what it costs.
    let memprof_a = Sidecar::start(&pod_a, &s3_a, &[("MEMPROF_BPFFS", "/proc")]);
    let memprof_b = Sidecar::start(&pod_b, &s3_b, &[("MEMPROF_BPFFS", "/proc")]);
    memprof_a.wait_for_log(
        "kernel programs: own programs: /proc is not a bpffs mount",
        Duration::from_secs(1),
    );
    // PIDs far apart, so that a profile in the wrong bucket would show.
    pod_a.next_pids_from(1000);
    pod_b.next_pids_from(2000);
    let app_a = service(&pod_a, "app", 512 * MIB, &["-rate", "200"], None);
    let app_b = service(
        &pod_b,
        "app",
        512 * MIB,
        &["-rate", "200", "-delay", "5s"],
        None,
    );
    let (pid_a, pid_b) = (app_a.pid, app_b.pid);
    assert!(
        (1000..2000).contains(&pid_a) && pid_b >= 2000,
        "the services' PIDs {pid_a} and {pid_b} are not apart"
    );

    let key_a = wait_key(&s3_a.client(), pid_a, &app_a, &[], &|| memprof_a.output());
    assert!(
        s3_b.client().keys().is_empty(),
        "pod b's bucket got a profile before its service leaked"
    );
    let log_a = memprof_a.output();
    assert_eq!(
        memprof_a.stop(),
        Some(0),
        "memprof a should exit 0 on SIGTERM"
    );

    // With the first sidecar gone, the second still works.
    let key_b = wait_key(&s3_b.client(), pid_b, &app_b, &[], &|| memprof_b.output());
    wait_for("both services' OOM kills", Duration::from_secs(120), || {
        !app_a.alive() && !app_b.alive()
    });
    memprof_b.wait_for_log(
        &format!("host_pid={}", app_b.host_pid),
        Duration::from_secs(10),
    );
    let log_b = memprof_b.output();

    for (keys, pod, pid) in [
        (s3_a.client().keys(), "tenant-a", pid_a),
        (s3_b.client().keys(), "tenant-b", pid_b),
    ] {
        assert!(!keys.is_empty());
        for key in keys {
            assert!(
                key.contains(&format!("/{pod}/")) && key.contains(&format!("_pid-{pid}_")),
                "{key} in {pod}'s bucket"
            );
        }
    }
    println!("tenants: {key_a} / {key_b}");
    // Neither sidecar hears of the other pod's processes, OOM kills included.
    assert!(
        !log_b.contains(&format!("host_pid={}", app_a.host_pid)),
        "memprof b logged pod a's service:\n{log_b}"
    );
    assert!(
        !log_a.contains(&format!("host_pid={}", app_b.host_pid)),
        "memprof a logged pod b's service:\n{log_a}"
    );
}

/// A node-level memprof (the node's PID, network and mount namespaces, the node's cgroupfs)
/// watching a pod's container: the limit is the container's own, found through both views.
#[test]
fn node_memprof_measures_a_pod_container_against_its_own_limit() {
    if prerequisites().is_none() {
        return;
    }
    let pod = Pod::new("node", 9);
    let memprof = Memprof::spawn(
        &["--detector", "btf"],
        &[("MEMPROF_SAFETY_NET_MS", "200".to_string())],
    );
    let app = service(&pod, "app", 512 * MIB, &["-rate", "5"], None);
    let line = memprof.wait_for_log(
        &format!("watching process pid={} comm=\"leaky\"", app.host_pid),
        Duration::from_secs(10),
    );
    println!("node: {line}");
    assert!(
        line.contains(&format!("limit={}", 512 * MIB)) && line.contains("limit_source=Cgroup"),
        "{line}"
    );
}

/// The sidecar with a service that serves no endpoint, in the pod's own PID namespace: its
/// heap is read from memory at the threshold, and by the kernel at the kill, under the PID
/// the pod sees.
#[test]
fn sidecar_reads_the_heap_of_a_service_without_an_endpoint() {
    let (limit_mib, rate) = scaled(256, 100);
    let Some(s) = setup("noendpoint", 11, &[]) else {
        return;
    };
    let app = s.service("app", limit_mib * MIB, &["-addr", "", "-rate", &rate]);
    let threshold = s.next_key(&app, &[]);
    assert!(s
        .memprof
        .stored_line(&threshold)
        .contains("source=\"memory\""));
    let line = s.memprof.wait_for_log(
        &format!("at-kill profile stored pid={} ", app.pid),
        Duration::from_secs(120),
    );
    assert!(line.contains(&threshold), "{line}");
    let at_kill = line
        .split("key=\"")
        .nth(1)
        .and_then(|k| k.split('"').next())
        .expect("a key in the at-kill line")
        .to_string();
    assert!(
        at_kill.ends_with(&format!("_pid-{}_oom.heap.pb.gz", app.pid)),
        "{at_kill}"
    );
    for key in [&threshold, &at_kill] {
        let top = pprof_top(&s.client.get(key));
        assert!(top.contains("main.leakyRetain"), "{key}:\n{top}");
    }
}
