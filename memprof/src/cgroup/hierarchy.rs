//! A process's memory limit from its cgroup: v1 `memory.limit_in_bytes` or v2 `memory.max`,
//! taking the tightest limit on the way up the hierarchy (a Kubernetes pod-level limit sits
//! above the container's own cgroup).
use std::path::PathBuf;

/// A cgroup filesystem mount, from /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    pub v2: bool,
    /// Root of the hierarchy that this mount shows (usually "/").
    pub root: String,
    pub mount_point: PathBuf,
}

/// Memory-cgroup mounts that are visible: cgroup2 mounts, and v1 mounts that carry the memory
/// controller, unless a later mount covers them (a container's bind mount over the node's
/// `/sys/fs/cgroup/memory`, or a tmpfs over `/sys/fs/cgroup`).
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mounts: Vec<Mount> = text.lines().filter_map(parse_mount_line).collect();
    let parent = |id: u32| mounts.iter().find(|m| m.id == id).map(|m| m.parent);
    // Whether mount `a` sits (transitively) on mount `b`.
    let descends = |mut a: u32, b: u32| {
        for _ in 0..mounts.len() {
            match parent(a) {
                Some(p) if p == b => return true,
                Some(p) if p != a => a = p,
                _ => return false,
            }
        }
        false
    };
    mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let covered = mounts[i + 1..].iter().any(|later| {
                later.point == m.point
                    || (m.point.starts_with(&later.point) && !descends(m.id, later.id))
            });
            (!covered).then(|| m.cgroup.clone()).flatten()
        })
        .collect()
}

struct Mount {
    id: u32,
    parent: u32,
    point: PathBuf,
    cgroup: Option<CgroupMount>,
}

/// One mountinfo line, with the mount itself if it is a memory cgroup.
fn parse_mount_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split_whitespace().collect();
    let point = PathBuf::from(unescape(left.get(4)?));
    let (id, parent) = (left.first()?.parse().ok()?, left.get(1)?.parse().ok()?);
    let mut right = right.split_whitespace();
    let fs_type = right.next()?;
    let _source = right.next();
    let super_options = right.next().unwrap_or_default();
    let v2 = match fs_type {
        "cgroup2" => Some(true),
        "cgroup" if super_options.split(',').any(|o| o == "memory") => Some(false),
        _ => None,
    };
    let cgroup = match v2 {
        Some(v2) => Some(CgroupMount {
            v2,
            root: unescape(left.get(3)?),
            mount_point: point.clone(),
        }),
        None => None,
    };
    Some(Mount {
        id,
        parent,
        point,
        cgroup,
    })
}

/// mountinfo escapes spaces and the like as octal (`\040`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(n) = u8::from_str_radix(&code, 8) {
                out.push(n as char);
                continue;
            }
            out.push(c);
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

/// The process's memory cgroup path and whether it is v2, from /proc/<pid>/cgroup. A v1 memory
/// controller line wins over the v2 line on hybrid hosts, because v1 is where limits apply there.
pub fn parse_proc_cgroup(text: &str) -> Option<(bool, String)> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some((false, path.to_string()));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some((true, path.to_string()));
        }
    }
    v2
}

/// Parses a limit file; `None` means unlimited.
pub fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    let n: u64 = text.parse().ok()?;
    // cgroup v1 says "unlimited" with PAGE_COUNTER_MAX pages, a number near i64::MAX.
    (n < 1 << 62).then_some(n)
}

/// The directory of the process's memory cgroup under one of `mounts`. Both `path` and the
/// mounts' roots are as memprof reads them (relative to memprof's cgroup namespace), so a
/// cgroup outside a mount's subtree (`/../other.scope` under memprof's own `/`) is not found
/// there, rather than taken for memprof's own cgroup.
pub fn cgroup_dir(mounts: &[CgroupMount], v2: bool, path: &str) -> Option<(PathBuf, PathBuf)> {
    mounts.iter().filter(|m| m.v2 == v2).find_map(|m| {
        let root = m.root.trim_end_matches('/');
        let rel = path.strip_prefix(root)?;
        if !(rel.is_empty() || rel.starts_with('/')) || rel.split('/').any(|c| c == "..") {
            return None;
        }
        Some((
            m.mount_point.join(rel.trim_start_matches('/')),
            m.mount_point.clone(),
        ))
    })
}

/// The tightest limit from the process's cgroup up to the top of `view`: `Some(None)` when
/// unlimited, `None` when the view shows no memory cgroup (its limit file is missing: the
/// cgroup is gone, or something else is there now).
pub fn effective_limit(view: &impl super::Files) -> Option<Option<u64>> {
    let file = if view.v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    // Every v2 cgroup has `cgroup.controllers`; only the root lacks `memory.max`.
    let marker = if view.v2() {
        "cgroup.controllers"
    } else {
        file
    };
    view.read(0, marker)?;
    let mut limit: Option<u64> = None;
    for up in 0..=view.depth() {
        if let Some(l) = view.read(up, file).and_then(|t| parse_limit(&t)) {
            limit = Some(limit.map_or(l, |cur| cur.min(l)));
        }
    }
    Some(limit)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use std::path::Path;

    use super::*;
    use crate::cgroup::tests::Fake;

    const MOUNTINFO_HYBRID: &str = include_str!("../../tests/fixtures/mountinfo.v1-hybrid");
    const MOUNTINFO_V2: &str = include_str!("../../tests/fixtures/mountinfo.v2");
    const CGROUP_V1: &str = include_str!("../../tests/fixtures/proc-cgroup.v1-hybrid");
    const CGROUP_V2: &str = include_str!("../../tests/fixtures/proc-cgroup.v2");

    #[test]
    fn mounts_of_a_hybrid_host() {
        let mounts = parse_mountinfo(MOUNTINFO_HYBRID);
        assert!(mounts.contains(&CgroupMount {
            v2: false,
            root: "/".into(),
            mount_point: "/sys/fs/cgroup/memory".into()
        }));
        assert!(mounts
            .iter()
            .any(|m| m.v2 && m.mount_point == Path::new("/sys/fs/cgroup/unified")));
        assert!(!mounts
            .iter()
            .any(|m| m.mount_point == Path::new("/sys/fs/cgroup/cpu")));
    }

    #[test]
    fn v1_memory_line_wins_on_hybrid() {
        assert_eq!(
            parse_proc_cgroup(CGROUP_V1),
            Some((false, "/kubepods/burstable/pod1/c1".into()))
        );
        let (v2, path) = parse_proc_cgroup(CGROUP_V2).unwrap();
        assert!(v2);
        assert_eq!(
            path,
            "/kubepods.slice/kubepods-burstable.slice/cri-containerd-abc.scope"
        );
    }

    #[test]
    fn limits_and_unlimited() {
        assert_eq!(parse_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("garbage"), None);
    }

    #[test]
    fn tightest_limit_up_the_tree_v2() {
        let mounts = parse_mountinfo(MOUNTINFO_V2);
        let (_, path) = parse_proc_cgroup(CGROUP_V2).unwrap();
        let (dir, mp) = cgroup_dir(&mounts, true, &path).unwrap();
        assert_eq!(mp, Path::new("/sys/fs/cgroup"));
        let files: HashMap<PathBuf, &str> = [
            (dir.join("cgroup.controllers"), "memory\n"),
            (dir.join("memory.max"), "max\n"),
            (dir.parent().unwrap().join("memory.max"), "268435456\n"),
            (mp.join("kubepods.slice/memory.max"), "1073741824\n"),
        ]
        .into_iter()
        .collect();
        let at = |dir: PathBuf| Fake::new(&dir, &mp, true, &files);
        assert_eq!(effective_limit(&at(dir.clone())), Some(Some(256 << 20)));
        // A directory without a limit file is not a cgroup here: no walking up from it.
        assert_eq!(effective_limit(&at(dir.join("gone"))), None);
    }

    #[test]
    fn v1_limit_file_and_namespaced_root() {
        // Inside a container the mount's root is the container's own cgroup.
        let mounts = vec![CgroupMount {
            v2: false,
            root: "/kubepods/pod1/c1".into(),
            mount_point: "/sys/fs/cgroup/memory".into(),
        }];
        let (dir, mp) = cgroup_dir(&mounts, false, "/kubepods/pod1/c1").unwrap();
        assert_eq!(dir, mp);
        let files = HashMap::from([(
            PathBuf::from("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            "104857600",
        )]);
        let limit = effective_limit(&Fake::new(&dir, &mp, false, &files));
        assert_eq!(limit, Some(Some(100 << 20)));
        assert_eq!(cgroup_dir(&mounts, false, "/other"), None);
    }

    #[test]
    fn covered_mounts_are_not_visible() {
        // A container's view built by bind-mounting its cgroup over the node's mount: the
        // node's mount is still listed, but hidden.
        // A tmpfs over a parent directory hides what was mounted below it before.
        let text = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    41 30 0:26 /pod/app /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    42 25 0:27 / /sys/fs/cgroup/unified/v2 rw - cgroup2 cgroup2 rw\n\
                    43 25 0:50 / /sys/fs/cgroup/unified rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(text),
            vec![CgroupMount {
                v2: false,
                root: "/pod/app".into(),
                mount_point: "/sys/fs/cgroup/memory".into(),
            }]
        );
    }
}
