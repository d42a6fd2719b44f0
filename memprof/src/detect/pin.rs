//! bpffs helpers the shared kernel programs need and aya 0.14 does not offer: a `tp_btf` link
//! that can be pinned (aya keeps its raw-tracepoint link private and cannot turn it into a
//! pinnable `FdLink`), the pin itself, and telling a bpffs mount from a plain directory.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// `BPF_OBJ_PIN`, `BPF_RAW_TRACEPOINT_OPEN` (uapi/linux/bpf.h).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
/// `statfs.f_type` of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The `bpf_attr` members of the two commands, zero-padded to the size the kernel accepts.
#[repr(C)]
#[derive(Default)]
struct Attr {
    words: [u64; 4],
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i32> {
    // SAFETY: `attr` is a valid, initialised buffer of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>() as u32,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as i32)
}

/// Attaches a loaded `tp_btf` program to the hook it was verified for, returning the link.
pub fn raw_tracepoint_open(prog: impl AsFd) -> io::Result<OwnedFd> {
    // `{ name = NULL (use the program's BTF target), prog_fd }`
    let mut attr = Attr::default();
    attr.words[1] = prog.as_fd().as_raw_fd() as u32 as u64;
    let fd = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins a BPF object (here: a link) at `path` on a bpffs.
pub fn pin(fd: impl AsFd, path: &Path) -> io::Result<()> {
    let path_c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // `{ pathname, bpf_fd, file_flags = 0 }`
    let mut attr = Attr::default();
    attr.words[0] = path_c.as_ptr() as u64;
    attr.words[1] = fd.as_fd().as_raw_fd() as u32 as u64;
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// Whether `dir` is (the root of, or inside) a bpffs mount.
pub fn is_bpffs(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// `flock(2)` on an open file or directory; `wait: false` fails with `WouldBlock` when held.
pub fn flock(file: &std::fs::File, wait: bool) -> io::Result<()> {
    let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    // SAFETY: a valid open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
