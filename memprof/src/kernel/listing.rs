//! The kernel's listing of processes (`list_processes`, a task iterator in `memprof-ebpf`):
//! every process of memprof's PID namespace with its start time, its resident bytes in the
//! kernel's shared count and its memory cgroup, in one read. Listing /proc and opening each
//! process's `stat` and `cgroup` cost ~15 µs a process; the iterator a fraction of a
//! microsecond, in the kernel, and it opens nothing of the tenant's.
use std::{
    fs::File,
    io::{self, Read},
    os::fd::{AsFd, OwnedFd},
    sync::Arc,
};

use anyhow::{Context, Result};
use aya::{programs::Iter, Ebpf};
use memprof_common::{Listed, LISTED_MEMCG, LISTED_MM};

use super::{attach, bpffs};

/// Processes one listing holds at most (8 MiB): far more than a node runs. A namespace with
/// more is listed from /proc instead.
const MAX_LISTED: usize = 1 << 18;
const RECORD: usize = std::mem::size_of::<Listed>();

/// What the kernel listed of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedProc {
    pub ns_pid: u32,
    /// Its start time in clock ticks (`/proc/PID/stat`'s).
    pub start: u64,
    /// Its resident bytes in the kernel's shared count; `None` without an address space (a
    /// kernel thread, an exiting process).
    pub rss: Option<u64>,
    /// The inode number of its memory cgroup's directory, when the kernel has the controller.
    pub memcg: Option<u64>,
}

/// The iterator's link: each listing is a new iteration of it. Clones share it.
#[derive(Clone)]
pub struct Listing(Arc<OwnedFd>);

impl Listing {
    /// Loads the iterator program, whose target is the kernel's function `bpf_iter_task`
    /// (`iter_task`: its BTF id).
    pub(super) fn load(bpf: &mut Ebpf, iter_task: u32) -> Result<Self> {
        let btf = attach::iter_task_btf(iter_task)?;
        let prog: &mut Iter = attach::program(bpf, "list_processes")?.try_into()?;
        prog.load("task", &btf)
            .context("verifying list_processes")?;
        let link = bpffs::iter_link(prog.fd()?.as_fd()).context("linking list_processes")?;
        Ok(Self(Arc::new(link)))
    }

    /// Every process of memprof's PID namespace, as the kernel holds it now.
    pub fn list(&self) -> io::Result<Vec<ListedProc>> {
        let mut file = File::from(bpffs::iter_new(self.0.as_fd())?);
        let mut bytes = Vec::with_capacity(64 << 10);
        let max = (MAX_LISTED * RECORD) as u64;
        (&mut file).take(max + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max {
            return Err(io::Error::other(format!(
                "more than {MAX_LISTED} processes listed"
            )));
        }
        parse(&bytes)
    }
}

fn parse(bytes: &[u8]) -> io::Result<Vec<ListedProc>> {
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(io::Error::other("the kernel's listing ends mid-record"));
    }
    Ok(bytes.chunks_exact(RECORD).map(record).collect())
}

fn record(b: &[u8]) -> ListedProc {
    let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let flags = u32_at(4);
    ListedProc {
        ns_pid: u32_at(0),
        start: super::ticks(u64_at(8)),
        rss: (flags & LISTED_MM != 0).then(|| u64_at(16)),
        memcg: (flags & LISTED_MEMCG != 0).then(|| u64_at(24)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records as the kernel writes them: each struct's memory.
    fn bytes(records: &[Listed]) -> Vec<u8> {
        // SAFETY: `Listed` is `repr(C)` plain integers without padding (`RECORD` is checked).
        let raw = unsafe {
            std::slice::from_raw_parts(
                records.as_ptr().cast::<u8>(),
                std::mem::size_of_val(records),
            )
        };
        raw.to_vec()
    }

    #[test]
    fn records_read_as_the_kernel_wrote_them() {
        let kthread = Listed {
            ns_pid: 2,
            ..Listed::default()
        };
        let service = Listed {
            ns_pid: 7,
            flags: LISTED_MM | LISTED_MEMCG,
            start_ns: 5_000_000_000,
            rss: 64 << 20,
            memcg: 4242,
        };
        let listed = parse(&bytes(&[kthread, service])).unwrap();
        assert_eq!(listed[0].rss, None);
        assert_eq!(listed[0].memcg, None);
        assert_eq!(
            listed[1],
            ListedProc {
                ns_pid: 7,
                start: super::super::ticks(5_000_000_000),
                rss: Some(64 << 20),
                memcg: Some(4242),
            }
        );
        assert_eq!(RECORD, 32, "the kernel's record has no padding");
    }

    #[test]
    fn a_listing_cut_mid_record_is_refused() {
        let mut b = bytes(&[Listed::default()]);
        b.pop();
        assert!(parse(&b).is_err());
        assert!(parse(&[]).unwrap().is_empty());
    }
}
