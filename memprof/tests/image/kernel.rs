//! What the kernel says of the pod's containers: its log's OOM-kill records, and the v1 memory
//! cgroup of a container (peak usage, OOM kills).
use std::{
    fs::File,
    io::{ErrorKind, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// The kernel's log from now on (`/dev/kmsg`), where it records each OOM kill with the
/// victim's cgroup.
pub(super) struct Kmsg(File);

impl Kmsg {
    pub(super) fn open() -> Self {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .expect("/dev/kmsg");
        f.seek(SeekFrom::End(0)).unwrap();
        Kmsg(f)
    }

    /// The records written since the last call.
    pub(super) fn read(&mut self) -> Vec<String> {
        let mut records = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => records.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Records overwritten before they were read (EPIPE): read on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => panic!("reading /dev/kmsg: {e}"),
            }
        }
        records
    }
}

/// The v1 memory cgroup directory of host process `pid`.
fn memcg_dir(pid: &str) -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })?;
    Some(Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
}

pub(super) fn memcg_file(pid: &str, file: &str) -> Option<u64> {
    std::fs::read_to_string(memcg_dir(pid)?.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The `oom_kill` count of `pid`'s v1 memory cgroup.
pub(super) fn memcg_oom_kills(pid: &str) -> Option<u64> {
    std::fs::read_to_string(memcg_dir(pid)?.join("memory.oom_control"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}
