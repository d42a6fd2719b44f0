//! Tenants whose programs and memory are traps: an executable that is a terabyte of sparse
//! file with a section table of billions of entries, run as a real process; a Go program whose
//! own bucket list was made a cycle. memprof's discovery and reads must cost a bounded amount,
//! and an honest Go service beside them must still be profiled before its OOM kill.
use std::{
    io::{Seek, SeekFrom, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memprof::capture::goheap::{
    discover::{discover, Discovery},
    read::{read_heap, read_word, Bounds},
};

use crate::common::*;

/// A copy of `bin` grown to a terabyte of holes, its section table moved to the middle of
/// them and numbered 2^33 entries (ELF's extended numbering: `e_shnum` 0, the count in the
/// first entry's `sh_size`). The kernel runs it all the same: it reads program headers only.
fn sparse_copy(bin: &Path, to: &Path) {
    std::fs::copy(bin, to).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(to).unwrap();
    let table: u64 = 1 << 39;
    f.set_len(1 << 40).unwrap();
    let at = |f: &mut std::fs::File, offset: u64, bytes: &[u8]| {
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(bytes).unwrap();
    };
    at(&mut f, 0x28, &table.to_le_bytes()); // e_shoff
    at(&mut f, 0x3c, &0u16.to_le_bytes()); // e_shnum: see entry 0
    at(&mut f, table + 0x20, &(1u64 << 33).to_le_bytes()); // entry 0's sh_size
    drop(f);
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_terabyte_executable_is_refused_and_the_honest_service_profiled() {
    let (Some(_), Some(tenant)) = (go_service(), go::build("tenant", go::Toolchain::System)) else {
        return;
    };
    if !require(is_root(), "root (BPF, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trap = dir.path().join("tenant-sparse");
    sparse_copy(&tenant, &trap);
    let env = [("MEMORY_CRITICAL_PERCENTAGE", "80".to_string())];
    let memprof = Memprof::spawn_at(dir.path(), &[], &[], &env);
    let cg_trap = MemCgroup::new("memprof-test-hostile-sparse", 256 << 20);
    let mut trapped = cg_trap.start(&trap, &["-alloc", "0"]);
    let line = memprof.wait_for_line("the trap refused", Duration::from_secs(30), |l| {
        l.contains("executable not parsed") && l.contains(&format!("pid={} ", trapped.id()))
    });
    println!("{line}");
    assert!(line.contains("larger than 1024 MiB"), "{line}");

    honest_service_profiled_by(&memprof, dir.path(), "memprof-test-hostile-honest");
    let _ = trapped.kill();
    let _ = trapped.wait();
    let (code, out) = memprof.stop();
    assert_eq!(code, Some(0), "{out}");
}

/// A Go program's bucket list, which the program itself writes, turned into a cycle: a read
/// keeps to its bounds (buckets, frames, time) and ends.
#[test]
fn a_bucket_list_made_a_cycle_is_read_within_bounds() {
    let Some(stacks) = go::build("stacks", go::Toolchain::System) else {
        return;
    };
    if !require(is_root(), "root (writing another process's memory)") {
        return;
    }
    let mut svc = Command::new(stacks)
        .args(["-stacks", "500", "-rate", "0", "-delay", "1h"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    first_line(&mut svc);
    let pid = svc.id();
    let Discovery::Go(go) = discover(pid).unwrap() else {
        panic!("stacks not discovered as Go")
    };
    // The last bucket's `allnext` (second word) pointed back at the first.
    let first = read_word(pid, go.mbuckets).unwrap();
    let mut last = first;
    loop {
        let next = read_word(pid, last + 8).unwrap();
        if next == 0 {
            break;
        }
        last = next;
    }
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .unwrap();
    mem.seek(SeekFrom::Start(last + 8)).unwrap();
    mem.write_all(&first.to_ne_bytes()).unwrap();
    drop(mem);

    let bounds = Bounds {
        max_buckets: 100_000,
        max_frames: 1 << 20,
        deadline: Duration::from_secs(2),
        max_profile_bytes: 64 << 20,
    };
    let started = Instant::now();
    let read = read_heap(pid, &go, bounds);
    let took = started.elapsed();
    let _ = svc.kill();
    let _ = svc.wait();
    let what = match &read {
        Ok(s) => format!("{} buckets, {} left out", s.buckets.len(), s.left_out),
        Err(e) => format!("{e:#}"),
    };
    println!("a read of the cycle: {took:?}: {what}");
    match read {
        Err(e) => assert!(e.to_string().contains("took longer than"), "{e}"),
        Ok(s) => {
            let frames: usize = s.buckets.iter().map(|b| b.stack.len()).sum();
            assert!(s.buckets.len() <= bounds.max_buckets && s.left_out > 0);
            assert!(frames <= bounds.max_frames + 1024);
        }
    }
}
