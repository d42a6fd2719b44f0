//! Cgroup paths as containerd, CRI-O and Docker lay them out with the kubelet's systemd and
//! cgroupfs drivers, v1 and v2, recorded from nodes.
use super::*;

const UID: &str = "6f5e1c4a-1b2c-4d3e-9f8a-7b6c5d4e3f2a";
const UID_: &str = "6f5e1c4a_1b2c_4d3e_9f8a_7b6c5d4e3f2a";
const ID: &str = "3b0f6a2d9c8e7f1a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f70";

fn parsed(text: &str) -> (Option<String>, Option<String>) {
    from_proc_cgroup(text)
}

fn expect(text: &str) {
    assert_eq!(
        parsed(text),
        (Some(UID.to_string()), Some(ID.to_string())),
        "{text}"
    );
}

#[test]
fn containerd_systemd_v2() {
    expect(&format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
    ));
}

#[test]
fn containerd_systemd_v2_guaranteed_through_a_cgroup_namespace() {
    expect(&format!(
        "0::/../../kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
    ));
}

#[test]
fn containerd_cgroupfs_v1() {
    expect(&format!(
        "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n9:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n0::/\n"
    ));
}

#[test]
fn containerd_cgroupfs_v2() {
    expect(&format!("0::/kubepods/burstable/pod{UID}/{ID}\n"));
}

#[test]
fn containerd_under_its_service_slice() {
    expect(&format!(
        "0::/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}\n"
    ));
}

#[test]
fn kind_nests_the_slices_under_kubelet() {
    expect(&format!(
        "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
    ));
}

#[test]
fn crio_systemd_v2_and_its_monitor() {
    expect(&format!(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope\n"
    ));
    let conmon = format!(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope\n"
    );
    assert_eq!(parsed(&conmon), (Some(UID.to_string()), None));
}

#[test]
fn crio_cgroupfs_v1() {
    expect(&format!(
        "7:memory:/kubepods/burstable/pod{UID}/crio-{ID}\n3:cpu,cpuacct:/kubepods/burstable/pod{UID}/crio-{ID}\n"
    ));
}

#[test]
fn docker_systemd_v1() {
    expect(&format!(
        "11:memory:/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope\n"
    ));
}

#[test]
fn docker_cgroupfs_v1_guaranteed() {
    expect(&format!("4:memory:/kubepods/pod{UID}/{ID}\n"));
}

#[test]
fn static_pod_mirror_uid_is_a_hash() {
    let hash = "9a1f0c2e3d4b5a69788796a5b4c3d2e1";
    let (uid, id) = from_cgroup_path(&format!("/kubepods/burstable/pod{hash}/{ID}"));
    assert_eq!((uid.as_deref(), id.as_deref()), (Some(hash), Some(ID)));
}

#[test]
fn outside_kubernetes_nothing_is_claimed() {
    for text in [
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        "0::/system.slice/docker-3b0f6a2d9c8e7f1a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f70.scope\n",
        "9:memory:/\n0::/init.scope\n",
        "0::/podman-1234.scope\n",
    ] {
        assert_eq!(parsed(text), (None, None), "{text}");
    }
}

#[test]
fn a_pod_level_process_has_no_container() {
    let (uid, id) = from_cgroup_path(&format!("/kubepods/burstable/pod{UID}"));
    assert_eq!((uid.as_deref(), id), (Some(UID), None));
}

#[test]
fn container_name_from_the_termination_message_mount() {
    let mountinfo = format!(
        "1203 1180 0:251 / / rw,relatime - overlay overlay rw\n\
         1215 1203 259:1 /var/lib/kubelet/pods/{UID}/etc-hosts /etc/hosts rw - ext4 /dev/root rw\n\
         1216 1203 259:1 /var/lib/kubelet/pods/{UID}/containers/cart/5b1f2e3a /dev/termination-log rw - ext4 /dev/root rw\n"
    );
    assert_eq!(
        from_mountinfo(&mountinfo, Some(UID)),
        Some((UID.to_string(), "cart".to_string()))
    );
    assert_eq!(from_mountinfo(&mountinfo, Some("another")), None);
    // /var on its own file system: the root is relative to it.
    let own_fs = format!(
        "1216 1203 259:3 /lib/kubelet/pods/{UID}/containers/cart/5b1f2e3a /dev/termination-log rw - xfs /dev/sdb1 rw\n"
    );
    assert_eq!(from_mountinfo(&own_fs, None).unwrap().1, "cart");
}

#[test]
fn names_from_the_pods_tree() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join(format!("shop_cart-7d9f5_{UID}"));
    for c in ["cart", "istio-proxy"] {
        std::fs::create_dir_all(pod.join(c)).unwrap();
        std::fs::write(pod.join(c).join("0.log"), "").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("shop_other_0a1b")).unwrap();
    let tree = PodsTree::new(dir.path());
    let cgroup = format!("0::/kubepods/burstable/pod{UID}/{ID}\n");
    // Two containers: the tree alone cannot tell which one this is.
    let id = resolve(&cgroup, "", Some(&tree));
    assert_eq!(id.describe(), "shop/cart-7d9f5/-");
    assert_eq!(id.container_id.as_deref(), Some(ID));
    let mounts = format!(
        "1 1 0:1 /var/lib/kubelet/pods/{UID}/containers/istio-proxy/1a /x rw - ext4 a rw\n"
    );
    assert_eq!(
        resolve(&cgroup, &mounts, Some(&tree)).describe(),
        "shop/cart-7d9f5/istio-proxy"
    );
    std::fs::remove_dir_all(pod.join("istio-proxy")).unwrap();
    assert_eq!(
        resolve(&cgroup, "", Some(&tree)).describe(),
        "shop/cart-7d9f5/cart"
    );
    assert_eq!(resolve("0::/\n", "", Some(&tree)), Identity::default());
}

/// Cgroups a process made below its container (its own cgroup namespace lets it) cannot claim
/// another pod: the first pod and container on the path count.
#[test]
fn cgroups_below_the_container_claim_nothing() {
    let other = "0a1b2c3d-0000-4000-8000-000000000000";
    let path = format!(
        "/kubepods/burstable/pod{UID}/{ID}/made/pod{other}/{}",
        "f".repeat(64)
    );
    let (uid, id) = from_cgroup_path(&path);
    assert_eq!((uid.as_deref(), id.as_deref()), (Some(UID), Some(ID)));
}
