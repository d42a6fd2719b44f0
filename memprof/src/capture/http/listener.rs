//! Which TCP ports does this process listen on, in its own network namespace? Every
//! container of a pod shares the loopback, so matching the sockets to the process keeps a
//! sidecar nearing its limit from being stored under its own name with the application's heap
//! profile; and a node-level memprof lists a pod's listeners from inside the pod's namespace.
//!
//! The listening sockets come from the kernel's sock_diag netlink interface, asking for
//! listeners only: /proc/<pid>/net/tcp walks every established-connection hash bucket and took
//! 3.6 ms here, on the path between detection and capture.
use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};

use super::netns;

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
/// `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_msg`: family at 0, sport (big-endian) at 4, source address at 8,
/// inode at 68.
const DIAG_MSG_LEN: usize = 72;
/// Descriptors examined per process (a process may hold a million): its sockets among the
/// first this many are found.
const FDS_MAX: usize = 65_536;
/// Listeners read from one namespace's dump; a namespace with more is read this far. Only the
/// process's own are kept, so the bound is on time, not memory: every process of the namespace
/// (a pod's containers share one) adds its listeners to the dump, and a tenant's 100,000 must
/// not push another process's pprof port out of what is read. As many as the kernel's default
/// descriptor ceiling (`fs.nr_open`) lets one process hold.
const LISTENERS_MAX: usize = 1 << 20;

/// A listening socket: where to connect to reach it, and its inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Listener {
    addr: SocketAddr,
    inode: u64,
}

/// Where to connect to each TCP socket `pid` itself listens on, in its network namespace
/// (a wildcard address is reached through that namespace's loopback), sorted by port.
pub fn listening(pid: u32) -> io::Result<Vec<SocketAddr>> {
    // Most processes hold no socket at all: they cost one directory read, no dump.
    let own: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .take(FDS_MAX)
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .collect();
    if own.is_empty() {
        return Ok(Vec::new());
    }
    let mut all = listeners(pid, libc::AF_INET as u8, &own)?;
    // A kernel or namespace without IPv6 answers the dump with an error: no IPv6 listeners.
    all.extend(listeners(pid, libc::AF_INET6 as u8, &own).unwrap_or_default());
    let mut addrs: Vec<SocketAddr> = all.into_iter().map(|l| l.addr).collect();
    addrs.sort_by_key(|a| (a.port(), a.is_ipv6()));
    addrs.dedup_by_key(|a| a.port());
    Ok(addrs)
}

/// The TCP listeners of the network namespace of `pid`, all of them (to `LISTENERS_MAX` per
/// family), as one number that changes when one is opened or closed: their count and their
/// inodes, mixed so that the order of the dump does not matter.
pub fn namespace_listeners(pid: u32) -> io::Result<u64> {
    let mut sum = 0u64;
    let mut add = |l: Listener| {
        let mixed = l.inode.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31);
        sum = sum.wrapping_add(mixed).wrapping_add(1);
    };
    dump(pid, libc::AF_INET as u8, &mut add)?;
    let _ = dump(pid, libc::AF_INET6 as u8, &mut add);
    Ok(sum)
}

/// The TCP listeners of `family` in the network namespace of `pid` whose inode is in `own`.
fn listeners(pid: u32, family: u8, own: &HashSet<u64>) -> io::Result<Vec<Listener>> {
    let mut found = Vec::new();
    dump(pid, family, &mut |l: Listener| {
        if own.contains(&l.inode) {
            found.push(l);
        }
    })?;
    Ok(found)
}

/// Hands each TCP listener of `family` in the network namespace of `pid` to `each`.
fn dump(pid: u32, family: u8, each: &mut dyn FnMut(Listener)) -> io::Result<()> {
    let sock = netns::socket_in(pid, libc::AF_NETLINK, libc::SOCK_DGRAM, NETLINK_SOCK_DIAG)?;
    let req = request(family);
    // SAFETY: req is a valid buffer of the given length; the kernel is the default destination.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut read = 0;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if parse(&buf[..n as usize], each, &mut read)? || read >= LISTENERS_MAX {
            return Ok(());
        }
    }
}

/// A dump request for listening TCP sockets (`nlmsghdr` + `inet_diag_req_v2`).
fn request(family: u8) -> Vec<u8> {
    let len = NLMSG_HDR + 56;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    m.extend_from_slice(&[0; 8]); // sequence number, port id
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m.resize(len, 0); // inet_diag_sockid: match any
    m
}

/// Hands the listeners of one datagram to `each`, counting in `read` every listener it
/// holds; true once the dump is complete.
fn parse(mut data: &[u8], each: &mut dyn FnMut(Listener), read: &mut usize) -> io::Result<bool> {
    let u32_at = |d: &[u8], o: usize| u32::from_ne_bytes(d[o..o + 4].try_into().expect("4 bytes"));
    while data.len() >= NLMSG_HDR {
        let len = u32_at(data, 0) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDR || len > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            ));
        }
        let payload = &data[NLMSG_HDR..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = payload
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY if payload.len() >= DIAG_MSG_LEN => {
                *read += 1;
                let inode = u32_at(payload, 68) as u64;
                if let Some(addr) = connect_addr(payload) {
                    each(Listener { addr, inode });
                }
            }
            _ => {}
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Ok(false)
}

/// Where a client in the same namespace connects to reach a listener: its own address, or
/// the loopback of its family when it listens on every address.
fn connect_addr(msg: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    let ip = match msg[0] as i32 {
        libc::AF_INET => {
            let ip = Ipv4Addr::from(<[u8; 4]>::try_from(&msg[8..12]).ok()?);
            IpAddr::V4(if ip.is_unspecified() {
                Ipv4Addr::LOCALHOST
            } else {
                ip
            })
        }
        libc::AF_INET6 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).ok()?);
            IpAddr::V6(if ip.is_unspecified() {
                Ipv6Addr::LOCALHOST
            } else {
                ip
            })
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the listeners whose inode is in `own`.
    fn keep<'a>(own: &'a HashSet<u64>, found: &'a mut Vec<Listener>) -> impl FnMut(Listener) + 'a {
        move |l| {
            if own.contains(&l.inode) {
                found.push(l);
            }
        }
    }

    fn diag_msg(family: i32, ip: &[u8], port: u16, inode: u32) -> Vec<u8> {
        let mut payload = vec![0u8; DIAG_MSG_LEN];
        payload[0] = family as u8;
        payload[4..6].copy_from_slice(&port.to_be_bytes());
        payload[8..8 + ip.len()].copy_from_slice(ip);
        payload[68..72].copy_from_slice(&inode.to_ne_bytes());
        let mut m = ((NLMSG_HDR + DIAG_MSG_LEN) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn parses_a_dump() {
        let mut data = diag_msg(libc::AF_INET, &[0, 0, 0, 0], 6060, 271828);
        data.extend(diag_msg(libc::AF_INET, &[10, 1, 2, 3], 8014, 314159));
        data.extend(diag_msg(libc::AF_INET6, &[0; 16], 7070, 161803));
        let own = HashSet::from([271828, 314159, 161803]);
        let (mut found, mut read) = (Vec::new(), 0);
        assert!(!parse(&data, &mut keep(&own, &mut found), &mut read).unwrap());
        let addrs: Vec<String> = found.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:6060", "10.1.2.3:8014", "[::1]:7070"]);
        assert_eq!(found[0].inode, 271828);
        let done = [
            (NLMSG_HDR as u32).to_ne_bytes().to_vec(),
            NLMSG_DONE.to_ne_bytes().to_vec(),
            vec![0; 10],
        ]
        .concat();
        assert!(parse(&done, &mut keep(&own, &mut found), &mut read).unwrap());
        assert_eq!(read, 3);
    }

    /// A namespace's other listeners (another container's, by the thousand) are counted and
    /// passed over: only the process's own are kept, wherever in the dump they come.
    #[test]
    fn keeps_only_its_own_among_many() {
        let mut data = Vec::new();
        for i in 0..300u32 {
            data.extend(diag_msg(
                libc::AF_INET,
                &[127, 0, 0, 2],
                2000 + i as u16,
                1000 + i,
            ));
        }
        data.extend(diag_msg(libc::AF_INET, &[127, 0, 0, 1], 6060, 42));
        let (mut found, mut read) = (Vec::new(), 0);
        let own = HashSet::from([42]);
        assert!(!parse(&data, &mut keep(&own, &mut found), &mut read).unwrap());
        assert_eq!(read, 301);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].addr.to_string(), "127.0.0.1:6060");
    }

    #[test]
    fn this_test_process_listens_only_where_it_bound() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listening(std::process::id()).unwrap().contains(&addr));
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        if let Some(v6) = &v6 {
            let addr = v6.local_addr().unwrap();
            assert!(listening(std::process::id()).unwrap().contains(&addr));
        }
        drop(listener);
        assert!(!listening(std::process::id()).unwrap().contains(&addr));
    }

    #[test]
    fn a_new_listener_changes_the_namespace_s_listeners() {
        let me = std::process::id();
        let before = namespace_listeners(me).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_ne!(namespace_listeners(me).unwrap(), before);
        drop(listener);
    }
}
