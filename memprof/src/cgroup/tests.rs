//! Container layouts as a sidecar (or a node agent) reads them: the application's
//! `/proc/PID/cgroup` and `/proc/PID/mountinfo`, and memprof's own mountinfo, for containerd
//! and CRI-O with the systemd and cgroupfs drivers, cgroup v1 and v2.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::*;

/// A place's files from a table keyed by path (under `/proc/42/root` for the process's own
/// places).
pub(super) struct Fake<'a> {
    dir: PathBuf,
    depth: usize,
    v2: bool,
    files: &'a HashMap<PathBuf, &'a str>,
}

impl<'a> Fake<'a> {
    pub fn new(dir: &Path, top: &Path, v2: bool, files: &'a HashMap<PathBuf, &'a str>) -> Self {
        let depth = dir.strip_prefix(top).unwrap().components().count();
        let dir = dir.to_path_buf();
        Self {
            dir,
            depth,
            v2,
            files,
        }
    }

    fn at(p: &Place, files: &'a HashMap<PathBuf, &'a str>) -> Self {
        let root = Path::new(if p.in_target { "/proc/42/root" } else { "/" });
        let under = |d: &Path| root.join(d.strip_prefix("/").unwrap());
        Self::new(&under(&p.dir), &under(&p.top), p.v2, files)
    }
}

impl Files for Fake<'_> {
    fn v2(&self) -> bool {
        self.v2
    }
    fn depth(&self) -> usize {
        self.depth
    }
    fn read(&self, up: usize, file: &str) -> Option<String> {
        let dir = self.dir.ancestors().nth(up)?;
        self.files.get(&dir.join(file)).map(|s| s.to_string())
    }
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

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

fn target_places(layout: &str, own_mounts: &str) -> Result<Vec<Place>, Unreadable> {
    places(
        &fixture(&format!("{layout}.cgroup")),
        &fixture(&format!("{layout}.mountinfo")),
        &own(own_mounts),
    )
}

fn fakes<'a>(places: &[Place], files: &'a HashMap<PathBuf, &'a str>) -> Vec<Fake<'a>> {
    places.iter().map(|p| Fake::at(p, files)).collect()
}

/// In every sidecar layout the only way to the application's cgroup is its own mount: memprof's
/// own cgroup is never taken for it.
#[test]
fn sidecar_reads_the_application_cgroup_through_its_root() {
    for (layout, own_mounts, dir) in [
        (
            "v2-containerd-systemd",
            "v2-sidecar-own.mountinfo",
            "/sys/fs/cgroup",
        ),
        (
            "v2-crio-systemd",
            "v2-sidecar-own.mountinfo",
            "/sys/fs/cgroup",
        ),
        (
            "v2-containerd-cgroupfs",
            "v2-sidecar-own.mountinfo",
            "/sys/fs/cgroup",
        ),
        (
            "v1-containerd-cgroupfs",
            "v1-sidecar-own.mountinfo",
            "/sys/fs/cgroup/memory",
        ),
        (
            "v1-crio-systemd",
            "v1-sidecar-own.mountinfo",
            "/sys/fs/cgroup/memory",
        ),
    ] {
        let places = target_places(layout, own_mounts).unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert_eq!(
            places,
            vec![Place {
                in_target: true,
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
    let places = target_places("v2-containerd-systemd", "v2-sidecar-own.mountinfo").unwrap();
    let files: HashMap<PathBuf, &str> = [
        ("/proc/42/root/sys/fs/cgroup/cgroup.controllers", "memory\n"),
        ("/proc/42/root/sys/fs/cgroup/memory.max", "536870912\n"),
        ("/sys/fs/cgroup/memory.max", "134217728\n"),
    ]
    .into_iter()
    .map(|(p, v)| (PathBuf::from(p), v))
    .collect();
    assert_eq!(limit(&fakes(&places, &files)), Ok(Some(512 * MIB)));
}

/// A node agent on the host sees the full hierarchy through its own mount (tried first: the
/// tenant has no say in it), and the container's own view too; a pod-level limit above the
/// container counts.
#[test]
fn node_agent_takes_the_tightest_of_both_views() {
    let places = target_places("v2-node-host", "v2-node-own.mountinfo").unwrap();
    assert_eq!(places.len(), 2);
    assert!(!places[0].in_target && places[1].in_target);
    let container = &places[0].dir;
    assert!(container.ends_with(
        "cri-containerd-5f1c2d3e4a5b6c7d8e9f00112233445566778899aabbccddeeff001122334455.scope"
    ));
    let pod = container.parent().unwrap();
    let inside = Path::new("/proc/42/root/sys/fs/cgroup");
    assert_eq!(places[1].dir, Path::new("/sys/fs/cgroup"));
    let files: HashMap<PathBuf, &str> = [
        (inside.join("cgroup.controllers"), "memory\n"),
        (inside.join("memory.max"), "536870912\n"),
        (container.join("cgroup.controllers"), "memory\n"),
        (container.join("memory.max"), "536870912\n"),
        (pod.join("memory.max"), "268435456\n"),
    ]
    .into_iter()
    .collect();
    assert_eq!(limit(&fakes(&places, &files)), Ok(Some(256 * MIB)));
    let none = HashMap::new();
    assert!(limit(&fakes(&places, &none)).is_err());
}

#[test]
fn unresolvable_cgroup_says_why() {
    // The application's mount namespace has no cgroup mount, and memprof's does not reach it.
    let err = places(
        &fixture("v2-containerd-systemd.cgroup"),
        "1630 1480 0:402 / / rw,relatime - overlay overlay rw\n",
        &own("v2-sidecar-own.mountinfo"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/../cri-containerd-"), "{err}");
    assert!(places("", "", &[]).is_err());
}

#[test]
fn working_set_is_usage_minus_inactive_file() {
    let stat = "inactive_file 100000\ntotal_inactive_file 300000\nactive_file 5\n";
    let files = HashMap::from([
        (PathBuf::from("/cg/memory.current"), "500000\n"),
        (PathBuf::from("/cg/memory.usage_in_bytes"), "700000\n"),
        (PathBuf::from("/cg/memory.stat"), stat),
    ]);
    let none = HashMap::new();
    let cg = Path::new("/cg");
    assert_eq!(
        working_set(&[Fake::new(cg, cg, true, &files)]),
        Some(400_000)
    );
    assert_eq!(
        working_set(&[Fake::new(cg, cg, false, &files)]),
        Some(400_000)
    );
    assert_eq!(working_set(&[Fake::new(cg, cg, true, &none)]), None);
}
