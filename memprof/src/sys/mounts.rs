//! Which file system a descriptor is on, as the kernel's mountinfo of a process says, asked
//! without reaching the file system itself: a FUSE file system a tenant mounted is served by
//! the tenant, which may never answer a lookup, an open or a page fault — and memprof would
//! wait with it. So before memprof looks up a name in a tenant's directory, or opens a tenant's
//! executable, it checks where that is, and refuses file systems that a process serves.
use std::{
    collections::HashMap,
    io::{self, Read},
    os::fd::{AsRawFd, BorrowedFd},
};

/// A mountinfo read this far at most (50,000 mounts would be ~5 MB): mounts past it are
/// unknown, and refused. A line cut at the bound is dropped with them: its type read as far
/// as the cut (`fus` of `fuse.sshfs`, where the tenant padded its mount points to put the cut
/// there) would pass a file system a process serves.
const MOUNTINFO_MAX: u64 = 4 << 20;

/// The file system type of each mount of one mount namespace, by mount id.
pub struct Mounts(HashMap<u64, String>);

impl Mounts {
    /// The mounts of `pid`'s mount namespace.
    pub fn of(pid: u32) -> io::Result<Self> {
        let file = std::fs::File::open(format!("/proc/{pid}/mountinfo"))?;
        Self::read(file, MOUNTINFO_MAX)
    }

    /// The mounts `mountinfo` lists in its first `max` bytes, in whole lines.
    fn read(mountinfo: impl Read, max: u64) -> io::Result<Self> {
        let mut text = Vec::new();
        mountinfo.take(max).read_to_end(&mut text)?;
        if text.len() as u64 == max {
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            text.truncate(whole);
        }
        Ok(Self::parse(&String::from_utf8_lossy(&text)))
    }

    /// From mountinfo's text: the mount id first, the type after the ` - ` separator.
    pub fn parse(text: &str) -> Self {
        let types = text
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let id = left.split(' ').next()?.parse().ok()?;
                Some((id, right.split(' ').next()?.to_string()))
            })
            .collect();
        Self(types)
    }

    /// Whether memprof may look into (or read) what `fd` refers to: an error for a mount not
    /// listed (made after the list was read) and for file systems a process serves.
    pub fn check(&self, fd: BorrowedFd) -> io::Result<()> {
        let id = mount_id(fd)?;
        match self.0.get(&id).map(String::as_str) {
            None => Err(io::Error::other(format!(
                "on mount {id}, not in its mountinfo"
            ))),
            Some(t) if t == "fuse" || t.starts_with("fuse.") || t == "fuseblk" => Err(
                io::Error::other(format!("on a {t} file system, which a process serves")),
            ),
            Some(_) => Ok(()),
        }
    }
}

/// The id of the mount `fd` is on, from `statx` without syncing (no request reaches the file
/// system).
fn mount_id(fd: BorrowedFd) -> io::Result<u64> {
    // SAFETY: `statx` is plain data, filled by the kernel.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, an empty NUL-terminated path and a buffer to fill.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::other("the kernel gives no mount id"));
    }
    Ok(st.stx_mnt_id)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn own_mounts_are_found_and_fuse_is_refused() {
        let own = Mounts::of(std::process::id()).unwrap();
        let root = std::fs::File::open("/").unwrap();
        own.check(root.as_fd()).unwrap();
        let id = mount_id(root.as_fd()).unwrap();
        let fuse = Mounts::parse(&format!("{id} 1 0:50 / / rw - fuse.sshfs host:/ rw\n"));
        let err = fuse.check(root.as_fd()).unwrap_err().to_string();
        assert!(err.contains("fuse.sshfs"), "{err}");
        let unknown = Mounts::parse("");
        assert!(unknown.check(root.as_fd()).is_err());
    }

    /// A mountinfo longer than the bound, cut inside the type of a FUSE mount: that mount is
    /// unknown (refused), not a file system of type `fus`.
    #[test]
    fn a_line_cut_at_the_bound_is_not_read() {
        let root = std::fs::File::open("/").unwrap();
        let id = mount_id(root.as_fd()).unwrap();
        let before = "20 1 0:21 / /proc rw - proc proc rw\n";
        let text = format!("{before}{id} 1 0:50 / / rw - fuse.sshfs host:/ rw\n");
        let cut = before.len() + text[before.len()..].find("- fu").unwrap() + "- fus".len();
        let mounts = Mounts::read(text.as_bytes(), cut as u64).unwrap();
        let err = mounts.check(root.as_fd()).unwrap_err().to_string();
        assert!(err.contains("not in its mountinfo"), "{err}");
        assert_eq!(mounts.0.get(&20).map(String::as_str), Some("proc"));
        // Read whole, the same text is refused for what it is.
        let whole = Mounts::read(text.as_bytes(), 1 << 20).unwrap();
        let err = whole.check(root.as_fd()).unwrap_err().to_string();
        assert!(err.contains("fuse.sshfs"), "{err}");
    }
}
