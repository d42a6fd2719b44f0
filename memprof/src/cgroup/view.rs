//! A place resolved into the process's memory cgroup, verified, and held as a directory
//! descriptor: a process that chroots, mounts or links after it was found cannot redirect a
//! later read or write, and what memprof reads there is what the kernel writes.
//!
//! Verified means: the directory is on a cgroup file system of its version (`cgroup` or
//! `cgroup2`), reached without a link and, within the hierarchy, without crossing a mount; and
//! its `cgroup.procs`, which the kernel fills, lists the process. So it is a cgroup the process
//! (or one of its threads) is in, whoever mounted it where. A v1 hierarchy without the memory
//! controller has no `memory.*` files, and a cgroup a process moved only some of its threads
//! into is one it made itself: either way only its own measurement is wrong. The ancestors
//! read for tighter limits are reached from it by `..` without crossing a mount, so they are
//! its real ancestors.
use std::{
    fmt,
    fs::File,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use super::{Files, Place};
use crate::sys::{
    files::{self, BENEATH, IN_ROOT, NO_LINKS_NO_MOUNTS},
    mounts::Mounts,
};

/// `cgroup.procs` of a container's cgroup is a few lines; a cgroup with every process of a
/// node in it is ~6 bytes per process.
const PROCS_MAX: usize = 1 << 20;
/// The largest control file read (a v1 `memory.stat` is ~1.5 KiB).
const FILE_MAX: usize = 64 << 10;
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// One verified place of the process's memory cgroup. Clones share the descriptor; two views
/// are equal when they are the same opening (a place opened again is a new view).
#[derive(Clone)]
pub struct View {
    dir: Arc<OwnedFd>,
    depth: usize,
    v2: bool,
    /// Where it was found, for messages: the path inside the process's root or memprof's.
    shown: Arc<str>,
}

impl View {
    /// Opens `place` (inside the root of the process `pid` when it is the process's place,
    /// looking into none of its directories that `mounts`, the process's, says a process
    /// serves) and verifies it holds `pid`.
    pub fn open(place: &Place, pid: u32, mounts: &Mounts) -> Result<View, String> {
        let shown = describe(place, pid);
        let fail = |what: &str, e: std::io::Error| format!("{shown}: {what}: {e}");
        let top = if place.in_target {
            // The kernel's link to the process's root, not a path of the tenant's; O_PATH, so
            // nothing of the file system behind it is asked.
            let root = files::open_path(Path::new(&format!("/proc/{pid}/root")))
                .map_err(|e| fail("its root", e))?;
            walk(root, &place.top, mounts).map_err(|e| fail("the hierarchy's top", e))?
        } else {
            let root = files::open_path(Path::new("/")).map_err(|e| fail("memprof's root", e))?;
            files::open_dir(root.as_fd(), &place.top, IN_ROOT)
                .map_err(|e| fail("the hierarchy's top", e))?
        };
        let below = place.dir.strip_prefix(&place.top).unwrap_or(Path::new(""));
        let dir = files::open_dir(top.as_fd(), below, BENEATH | libc::RESOLVE_NO_XDEV)
            .map_err(|e| fail("opening", e))?;
        let want = if place.v2 {
            CGROUP2_SUPER_MAGIC
        } else {
            CGROUP_SUPER_MAGIC
        };
        let fs = files::fs_type(dir.as_fd()).map_err(|e| fail("fstatfs", e))?;
        if fs != want {
            return Err(format!("{shown}: not a cgroup file system (type {fs:#x})"));
        }
        let procs = files::read_text(
            dir.as_fd(),
            Path::new("cgroup.procs"),
            NO_LINKS_NO_MOUNTS,
            PROCS_MAX,
        )
        .map_err(|e| fail("cgroup.procs", e))?;
        if !procs.lines().any(|l| l.trim().parse() == Ok(pid)) {
            return Err(format!("{shown}: PID {pid} is not in this cgroup"));
        }
        Ok(View {
            dir: Arc::new(dir),
            depth: below.components().count(),
            v2: place.v2,
            shown: shown.into(),
        })
    }

    /// Opens `file` of the process's cgroup itself (not an ancestor): a regular file there,
    /// not a mount over it.
    pub fn open_file(&self, file: &str, flags: i32) -> Result<File, String> {
        files::open_file(self.dir.as_fd(), Path::new(file), flags, NO_LINKS_NO_MOUNTS)
            .map_err(|e| format!("{}/{file}: {e}", self.shown))
    }

    /// Which directory it is (device and inode): a cgroup removed and made again at the same
    /// path is another directory, whose files this view no longer reaches.
    pub fn identity(&self) -> Option<(u64, u64)> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes one stat into `st`, from a descriptor this view owns.
        let r = unsafe { libc::fstat(self.dir.as_raw_fd(), &mut st) };
        (r == 0).then_some((st.st_dev, st.st_ino))
    }

    /// Whether the directory is still there: a removed cgroup's files cannot be opened.
    pub fn present(&self) -> bool {
        self.open_file("cgroup.procs", libc::O_RDONLY).is_ok()
    }

    /// Where it was found (escaped), for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `file` of the process's cgroup, as text, bounded.
    pub fn read_text(&self, file: &str) -> Result<String, String> {
        self.read_at(0, file)
            .map_err(|e| format!("{}/{file}: {e}", self.shown))
    }

    fn read_at(&self, up: usize, file: &str) -> std::io::Result<String> {
        let path: PathBuf = std::iter::repeat_n("..", up).chain([file]).collect();
        files::read_text(self.dir.as_fd(), &path, NO_LINKS_NO_MOUNTS, FILE_MAX)
    }

    /// A descriptor on the cgroup's directory (its identity in tests).
    #[cfg(test)]
    pub fn for_test() -> View {
        let dir = files::open_dir(File::open("/").unwrap().as_fd(), Path::new("/"), IN_ROOT);
        View {
            dir: Arc::new(dir.unwrap()),
            depth: 0,
            v2: false,
            shown: "/".into(),
        }
    }
}

impl Files for View {
    fn v2(&self) -> bool {
        self.v2
    }

    fn depth(&self) -> usize {
        self.depth
    }

    fn read(&self, up: usize, file: &str) -> Option<String> {
        self.read_at(up, file).ok()
    }

    fn describe(&self) -> String {
        self.shown().to_string()
    }
}

impl PartialEq for View {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.dir, &other.dir)
    }
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "View({})", self.shown)
    }
}

/// `path` from `root`, a component at a time, each directory checked against `mounts` before a
/// name is looked up in it; no links, no `..`.
fn walk(root: OwnedFd, path: &Path, mounts: &Mounts) -> std::io::Result<OwnedFd> {
    let mut dir = root;
    for part in path.components() {
        match part {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                mounts.check(dir.as_fd())?;
                dir = files::open_dir(dir.as_fd(), Path::new(name), BENEATH)?;
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(std::io::Error::other("a path with `..`"));
            }
        }
    }
    mounts.check(dir.as_fd())?;
    Ok(dir)
}

/// Where a place is, escaped: the process chose its mount points' names.
fn describe(place: &Place, pid: u32) -> String {
    let dir = place.dir.display().to_string().escape_debug().to_string();
    if place.in_target {
        format!("{dir} in the root of PID {pid}")
    } else {
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// memprof's own memory cgroup, through its own mounts, verified; a place that is not a
    /// cgroup file system, or a cgroup without the process, is refused.
    #[test]
    fn own_cgroup_verifies_and_others_do_not() {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let own = super::super::hierarchy::parse_mountinfo(&mountinfo);
        let Ok(places) = super::super::places(&cgroup, "", &own) else {
            assert!(std::env::var("CI").is_err(), "no memory cgroup mounted");
            return eprintln!("SKIPPED: no memory cgroup mounted here");
        };
        let pid = std::process::id();
        let mounts = Mounts::of(pid).unwrap();
        let view = View::open(&places[0], pid, &mounts).unwrap();
        assert!(super::super::limit(std::slice::from_ref(&view)).is_ok());
        let tmp = Place {
            dir: std::env::temp_dir(),
            top: std::env::temp_dir(),
            ..places[0].clone()
        };
        let err = View::open(&tmp, pid, &mounts).unwrap_err();
        assert!(err.contains("not a cgroup file system"), "{err}");
        // No process has this PID (above the kernel's PID_MAX_LIMIT).
        let err = View::open(&places[0], 4_999_999, &mounts).unwrap_err();
        assert!(err.contains("PID 4999999 is not in this cgroup"), "{err}");
    }
}
