//! Sockets in another process's network namespace. A socket belongs to the namespace of the
//! thread that created it, for its whole life, whichever thread uses it afterwards. So a
//! short-lived thread joins the target's namespace (`setns`), creates the socket and exits;
//! the socket is then used from the async runtime like any other. A node-level memprof thus
//! reaches a pod's loopback-only pprof endpoint and lists the pod's listening sockets, while
//! its own threads never leave the host's namespace.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::fs::MetadataExt,
};

/// A network namespace, as `stat` of `/proc/PID/ns/net` names it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct NetNs {
    pub dev: u64,
    pub ino: u64,
}

impl NetNs {
    /// The network namespace of `pid` (`self` for memprof's own).
    pub fn of(pid: &str) -> io::Result<Self> {
        let m = std::fs::metadata(format!("/proc/{pid}/ns/net"))?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// A socket of (`domain`, `kind`, `protocol`) in the network namespace of `pid`; created
/// directly when that is memprof's own.
pub fn socket_in(pid: u32, domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // Opened first: the namespace is pinned by the fd even if the process exits meanwhile.
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    if NetNs::of(&pid.to_string())? == NetNs::of("self")? {
        return socket(domain, kind, protocol);
    }
    std::thread::Builder::new()
        .name("memprof-netns".into())
        .spawn(move || {
            // SAFETY: setns on a valid namespace fd; it affects only this thread, which ends
            // right after creating the socket.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("joining the network namespace of PID {pid}: {e}"),
                ));
            }
            socket(domain, kind, protocol)
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is owned.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_gives_a_plain_socket() {
        let fd = socket_in(std::process::id(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        assert!(fd.as_raw_fd() >= 0);
    }

    #[test]
    fn a_gone_process_is_an_error() {
        assert!(socket_in(u32::MAX - 1, libc::AF_INET, libc::SOCK_STREAM, 0).is_err());
    }
}
