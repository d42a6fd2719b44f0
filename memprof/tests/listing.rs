//! The kernel's listing of processes on the real kernel, against procfs and the cgroup file
//! system: every process of the namespace once, each with the start time, resident bytes and
//! memory cgroup they give.
use std::{collections::HashSet, os::unix::fs::MetadataExt, process::Command};

use crate::common::*;
use memprof::kernel::{Hook, Kernel};

fn procfs_pids() -> HashSet<u32> {
    procfs::process::all_processes()
        .unwrap()
        .filter_map(|p| Some(p.ok()?.pid as u32))
        .collect()
}

#[test]
fn the_kernel_lists_every_process_as_procfs_and_cgroupfs_give_it() {
    if !require(is_root(), "root (CAP_BPF, CAP_PERFMON)")
        || !require(
            std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
            "kernel BTF",
        )
        || !require(MemCgroup::available(), "a memory cgroup")
    {
        return;
    }
    let kernel = Kernel::load(
        Hook::Btf,
        memprof_common::MAX_PROCS,
        memprof_common::HEAP_RING_BYTES,
        None,
    )
    .unwrap_or_else(|e| panic!("loading: {e:#}"));
    let listing = kernel.listing().expect("the kernel's listing loads");
    let cg = MemCgroup::new("memprof-test-listing", 256 << 20);
    let mut sleep = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::write(cg.procs_file(), sleep.id().to_string()).unwrap();

    let before = procfs_pids();
    let listed = listing.list().unwrap();
    let after = procfs_pids();
    let pids: HashSet<u32> = listed.iter().map(|p| p.ns_pid).collect();
    assert_eq!(pids.len(), listed.len(), "each process listed once");
    // On some hosts the task iterator does not visit PID 1 of the initial namespace (here, a
    // supervisor whose namespaces even root may not read); the safety net names processes
    // from /proc and takes only what the kernel holds of each from the listing.
    let missing: Vec<_> = before
        .intersection(&after)
        .filter(|&&p| !pids.contains(&p) && p != 1)
        .collect();
    assert!(
        missing.is_empty(),
        "/proc lists {missing:?}, the kernel does not"
    );
    // A process that started and ended between the two /proc scans is the kernel's alone; one
    // still running was in the second scan.
    let foreign: Vec<_> = pids
        .iter()
        .filter(|&&p| !before.contains(&p) && !after.contains(&p))
        .filter(|&&p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(
        foreign.is_empty(),
        "the kernel lists {foreign:?}, /proc does not"
    );
    let pid = sleep.id();
    let seen = listed
        .iter()
        .find(|p| p.ns_pid == pid)
        .expect("the sleep listed");
    let stat = procfs::process::Process::new(pid as i32)
        .unwrap()
        .stat()
        .unwrap();
    assert_eq!(seen.start, stat.starttime, "start time in clock ticks");
    assert_eq!(
        seen.rss,
        Some(stat.rss * procfs::page_size()),
        "the shared count"
    );
    let ino = std::fs::metadata(&cg.dir).unwrap().ino();
    assert_eq!(seen.memcg, Some(ino), "its memory cgroup's directory");
    if memprof::kernel::offsets::own_pidns_inum().unwrap()
        == memprof::kernel::offsets::INIT_PIDNS_INUM
    {
        let kthreadd = listed
            .iter()
            .find(|p| p.ns_pid == 2)
            .expect("kthreadd listed");
        assert_eq!(kthreadd.rss, None, "a kernel thread has no address space");
    }
    sleep.kill().unwrap();
    sleep.wait().unwrap();
}
