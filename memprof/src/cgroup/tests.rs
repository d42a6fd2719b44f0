//! Container layouts as a sidecar (or a node agent) reads them: the application's
//! `/proc/PID/cgroup` and `/proc/PID/mountinfo`, and memprof's own mountinfo, for containerd
//! and CRI-O with the systemd and cgroupfs drivers, cgroup v1 and v2.
use std::collections::HashMap;

use super::*;

const MIB: u64 = 1 << 20;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pod")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn own(name: &str) -> Vec<CgroupMount> {
    parse_mountinfo(&fixture(name))
}

fn target_views(layout: &str, own_mounts: &str) -> Result<Vec<View>, Unreadable> {
    views(
        &fixture(&format!("{layout}.cgroup")),
        &fixture(&format!("{layout}.mountinfo")),
        Path::new("/proc/42/root"),
        &own(own_mounts),
    )
}

/// In every sidecar layout the only way to the application's cgroup is its own mount: memprof's
/// own cgroup is never taken for it.
#[test]
fn sidecar_reads_the_application_cgroup_through_its_root() {
    for (layout, own_mounts, dir) in [
        (
            "v2-containerd-systemd",
            "v2-sidecar-own.mountinfo",
            "/proc/42/root/sys/fs/cgroup",
        ),
        (
            "v2-crio-systemd",
            "v2-sidecar-own.mountinfo",
            "/proc/42/root/sys/fs/cgroup",
        ),
        (
            "v2-containerd-cgroupfs",
            "v2-sidecar-own.mountinfo",
            "/proc/42/root/sys/fs/cgroup",
        ),
        (
            "v1-containerd-cgroupfs",
            "v1-sidecar-own.mountinfo",
            "/proc/42/root/sys/fs/cgroup/memory",
        ),
        (
            "v1-crio-systemd",
            "v1-sidecar-own.mountinfo",
            "/proc/42/root/sys/fs/cgroup/memory",
        ),
    ] {
        let views = target_views(layout, own_mounts).unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert_eq!(
            views,
            vec![View {
                dir: dir.into(),
                top: dir.into(),
                v2: layout.starts_with("v2"),
            }],
            "{layout}"
        );
    }
}

/// The bug this replaces: the application's v2 path `/../cri-containerd-….scope` joined under
/// memprof's own mount walked up to memprof's own 128 MiB limit.
#[test]
fn sidecar_limit_is_the_application_limit_not_its_own() {
    let views = target_views("v2-containerd-systemd", "v2-sidecar-own.mountinfo").unwrap();
    let files: HashMap<PathBuf, &str> = [
        ("/proc/42/root/sys/fs/cgroup/cgroup.controllers", "memory\n"),
        ("/proc/42/root/sys/fs/cgroup/memory.max", "536870912\n"),
        ("/sys/fs/cgroup/memory.max", "134217728\n"),
    ]
    .into_iter()
    .map(|(p, v)| (PathBuf::from(p), v))
    .collect();
    let read = |p: &Path| files.get(p).map(|s| s.to_string());
    assert_eq!(limit(&views, read), Ok(Some(512 * MIB)));
}

/// A node agent on the host sees the full hierarchy through its own mount, and the
/// container's own view too; a pod-level limit above the container counts.
#[test]
fn node_agent_takes_the_tightest_of_both_views() {
    let views = target_views("v2-node-host", "v2-node-own.mountinfo").unwrap();
    assert_eq!(views.len(), 2);
    let container = &views[1].dir;
    assert!(container.ends_with(
        "cri-containerd-5f1c2d3e4a5b6c7d8e9f00112233445566778899aabbccddeeff001122334455.scope"
    ));
    let pod = container.parent().unwrap();
    let files: HashMap<PathBuf, String> = [
        (
            views[0].dir.join("cgroup.controllers"),
            "memory\n".to_string(),
        ),
        (views[0].dir.join("memory.max"), "536870912\n".to_string()),
        (container.join("cgroup.controllers"), "memory\n".into()),
        (container.join("memory.max"), "536870912\n".into()),
        (pod.join("memory.max"), "268435456\n".into()),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        limit(&views, |p| files.get(p).cloned()),
        Ok(Some(256 * MIB))
    );
    assert!(limit(&views, |_| None).is_err());
}

#[test]
fn unresolvable_cgroup_says_why() {
    // The application's mount namespace has no cgroup mount, and memprof's does not reach it.
    let err = views(
        &fixture("v2-containerd-systemd.cgroup"),
        "1630 1480 0:402 / / rw,relatime - overlay overlay rw\n",
        Path::new("/proc/42/root"),
        &own("v2-sidecar-own.mountinfo"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/../cri-containerd-"), "{err}");
    assert!(views("", "", Path::new("/"), &[]).is_err());
}

#[test]
fn working_set_is_usage_minus_inactive_file() {
    let files = |v2: bool| {
        move |p: &Path| -> Option<String> {
            let name = p.file_name()?.to_str()?;
            match (v2, name) {
                (true, "memory.current") => Some("500000\n".into()),
                (false, "memory.usage_in_bytes") => Some("700000\n".into()),
                (_, "memory.stat") => {
                    Some("inactive_file 100000\ntotal_inactive_file 300000\nactive_file 5\n".into())
                }
                _ => None,
            }
        }
    };
    let view = |v2| View {
        dir: "/cg".into(),
        top: "/cg".into(),
        v2,
    };
    assert_eq!(working_set(&[view(true)], files(true)), Some(400_000));
    assert_eq!(working_set(&[view(false)], files(false)), Some(400_000));
    assert_eq!(working_set(&[view(true)], |_| None), None);
}
