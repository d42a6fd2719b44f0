//! Two pods' sidecars on one node, one of them hostile: it holds the node's bpffs, where
//! sidecars that share kernel programs pin their maps, and looks there for another pod's set to
//! join (to take its slot, reroute its events, or hear of its processes). Sharing is off unless
//! the operator opts in, so the honest pod's sidecar pinned nothing: the hostile one finds only
//! the set it made itself, hears nothing of the honest pod, and the honest pod's service is
//! profiled by its own sidecar before its OOM kill.
use crate::common::{bpffs::Bpffs, pod::Pod, sidecar::*, *};

#[test]
fn a_sidecar_finds_no_other_pod_to_take() {
    if prerequisites().is_none() {
        return;
    }
    // The node's bpffs, mounted before either pod so that both see it.
    let node_bpffs = Bpffs::mount();
    let Some(honest) = setup("hostile-honest-pod", 67, &[("MEMPROF_BPFFS", "off")]) else {
        return;
    };
    let pod = Pod::new("hostile-sharer", 68);
    let s3 = S3Server::start_on("profiles", &pod.host_addr());
    let hostile = Sidecar::start(&pod, &s3, &[("MEMPROF_BPFFS", &node_bpffs.path())]);

    let own = honest.memprof.wait_for_log(
        "kernel programs: own programs",
        std::time::Duration::from_secs(20),
    );
    println!("honest: {own}");
    let made = hostile.wait_for_log(
        "kernel programs: created the node's shared set",
        std::time::Duration::from_secs(20),
    );
    println!("hostile: {made}");
    let pins = node_bpffs.pins();
    println!("the node's bpffs: {pins:?}");
    assert_eq!(
        pins.iter().filter(|p| p.starts_with("tenant-")).count(),
        1,
        "only the hostile sidecar's own slot: {pins:?}"
    );

    let (limit, rate) = scaled(256, 50);
    let service = honest.service("app", limit * MIB, &["-rate", &rate]);
    let key = honest.next_key(&service, &[]);
    service.wait_oom_kill();
    println!("honest pod's service profiled: {key}");
    let heard = hostile.output();
    assert!(
        !heard.contains(&format!("host_pid={}", service.host_pid)),
        "the hostile sidecar heard of the honest pod's service:\n{heard}"
    );
    assert!(
        s3.client()
            .keys()
            .iter()
            .all(|k| !k.contains("hostile-honest-pod")),
        "{:?}",
        s3.client().keys()
    );
    assert!(honest.memprof.container.alive());
    drop(hostile);
}
