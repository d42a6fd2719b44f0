//! Files a watched process controls, opened without trusting it. Everything under
//! `/proc/PID/root` is the tenant's: it can place symlinks (an absolute one would resolve
//! against memprof's own root), mount over a file, or put a FIFO, `/dev/zero` or a sparse file
//! where a small kernel file is expected. So paths are resolved by `openat2` relative to a
//! directory descriptor, never through a symlink, a magic link or (where asked) a mount;
//! every file is opened non-blocking, must be a regular file, and is read up to a bound.
use std::{
    ffi::CString,
    fs::File,
    io::{self, Read},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};

/// Resolution that stays inside the starting directory (`..` cannot leave it) and follows no
/// link of any kind.
pub const BENEATH: u64 = libc::RESOLVE_BENEATH | NO_LINKS;
/// Resolution as if the starting directory were `/` (a process's root): absolute paths and
/// `..` stay inside it; no links.
pub const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | NO_LINKS;
/// No symlink, no magic link (`/proc/PID/…`), and no mount crossed: what a tenant mounted
/// over a directory or file is refused rather than read.
pub const NO_LINKS_NO_MOUNTS: u64 = NO_LINKS | libc::RESOLVE_NO_XDEV;
const NO_LINKS: u64 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// `openat2(dir, path, flags | O_CLOEXEC | O_NOFOLLOW, resolve)`.
pub fn open_at(dir: BorrowedFd, path: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `open_how` is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.resolve = resolve;
    // SAFETY: a valid descriptor, a NUL-terminated path and an `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just handed us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `path` as `O_PATH`: a handle to resolve from or to check, opening nothing of the file
/// system behind it (`/proc/PID/root` and `exe` are the kernel's links to the process's).
pub fn open_path(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

/// Device and inode of what `path` leads to, from `statx` without syncing: no request reaches
/// its file system (a FUSE one may be the tenant's, and never answer).
pub fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `statx` is plain data, filled by the kernel.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a buffer to fill.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_DONT_SYNC,
            libc::STATX_INO,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        st.stx_ino,
    ))
}

/// A directory (as `O_PATH`: it can only be resolved from) at `path` below `dir`.
pub fn open_dir(dir: BorrowedFd, path: &Path, resolve: u64) -> io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    open_at(dir, path, libc::O_PATH | libc::O_DIRECTORY, resolve)
}

/// A regular file at `path` below `dir`, opened non-blocking (a FIFO there would otherwise
/// hold the open until a writer comes); anything else is refused.
pub fn open_file(dir: BorrowedFd, path: &Path, flags: i32, resolve: u64) -> io::Result<File> {
    let file = File::from(open_at(dir, path, flags | libc::O_NONBLOCK, resolve)?);
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// At most `max` bytes of `file`; an error when it holds more (a kernel file that size is not
/// what was expected, and reading on would let the tenant choose how much memprof reads).
pub fn read_bounded(file: impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut out)?;
    if out.len() > max {
        return Err(io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(out)
}

/// `read_bounded` of a regular file at `path` below `dir`, as text.
pub fn read_text(dir: BorrowedFd, path: &Path, resolve: u64, max: usize) -> io::Result<String> {
    let bytes = read_bounded(open_file(dir, path, libc::O_RDONLY, resolve)?, max)?;
    String::from_utf8(bytes).map_err(|_| io::Error::other("not text"))
}

/// The file system type (`f_type` of `fstatfs`) a descriptor is on.
pub fn fs_type(fd: BorrowedFd) -> io::Result<i64> {
    // SAFETY: `statfs` is plain data, filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a `statfs` to fill.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn links_fifos_and_large_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = File::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("small"), "42\n").unwrap();
        std::fs::write(dir.path().join("large"), vec![b'1'; 100]).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("small", dir.path().join("rel")).unwrap();
        let fifo = CString::new(dir.path().join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let read = |name: &str| read_text(d.as_fd(), Path::new(name), BENEATH, 64);
        assert_eq!(read("small").unwrap(), "42\n");
        assert!(read("large").unwrap_err().to_string().contains("larger"));
        assert!(read("abs").is_err(), "an absolute symlink is followed");
        assert!(read("rel").is_err(), "a relative symlink is followed");
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(read("fifo").unwrap_err().to_string().contains("regular"));
        assert!(
            read("../etc/hostname").is_err(),
            "resolution left the directory"
        );
        let root = open_dir(d.as_fd(), Path::new("/"), IN_ROOT).unwrap();
        assert_eq!(
            read_text(root.as_fd(), Path::new("/small"), IN_ROOT, 64).unwrap(),
            "42\n",
            "`/` is the directory itself"
        );
    }
}
