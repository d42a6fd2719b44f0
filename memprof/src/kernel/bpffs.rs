//! BPF and bpffs helpers memprof needs and aya 0.14 does not offer: a descriptor of another
//! instance's link (aya lists links but keeps their descriptors), an iterator's link and a
//! new iteration of it (aya makes one iteration per link), and telling a bpffs mount from a
//! plain directory.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// `BPF_LINK_GET_FD_BY_ID` (uapi/linux/bpf.h).
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
/// `BPF_LINK_CREATE`, `BPF_ITER_CREATE` and `BPF_TRACE_ITER` (uapi/linux/bpf.h).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u64 = 28;
/// `statfs.f_type` of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The `bpf_attr` members of the command, zero-padded to the size the kernel accepts.
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

/// A new descriptor of the BPF link with kernel ID `id` (needs `CAP_SYS_ADMIN`). Holding it
/// keeps the link, and the program it attaches, alive.
pub fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // `{ link_id, next_id = 0, open_flags = 0 }`
    let mut attr = Attr::default();
    attr.words[0] = id as u64;
    let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A link of the iterator program `prog` (a task iterator over every task: no `iter_info`).
pub fn iter_link(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // `{ prog_fd, target_fd = 0, attach_type, flags = 0, iter_info = NULL, iter_info_len = 0 }`
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64;
    attr.words[1] = BPF_TRACE_ITER;
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new iteration of the iterator `link`: reading it runs the program over the tasks of the
/// caller's PID namespace.
pub fn iter_new(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // `{ link_fd, flags = 0 }`
    let mut attr = Attr::default();
    attr.words[0] = link.as_raw_fd() as u64;
    let fd = bpf(BPF_ITER_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
