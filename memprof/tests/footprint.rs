//! What a pod's memory limit must hold: loading the kernel programs charges memprof's memory
//! cgroup for the maps and for the verifier's work (kernel memory), once, at start.
use std::time::Duration;

use crate::common::*;

/// memprof with the eBPF detector starts in a 48 MiB memory cgroup, its kernel programs
/// loaded, and is not OOM-killed doing it. (The verifier once needed 117 MiB of kernel memory
/// for the at-kill walker alone, and memprof was killed while starting under 64 MiB.)
#[test]
fn the_kernel_programs_load_in_a_small_memory_cgroup() {
    if !require(is_root(), "root (BPF, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
    {
        return;
    }
    let cg = MemCgroup::new("memprof-footprint", 48 << 20);
    let join = format!("echo 0 > {}; exec \"$@\"", cg.procs_file().display());
    let dir = tempfile::tempdir().unwrap();
    let memprof = Memprof::launch_at(
        dir.path(),
        &["sh", "-c", &join, "sh"],
        &["--detector", "btf"],
        &[],
    );
    let line = memprof.wait_for_line("memprof started", START, |l| {
        l.contains("memprof started") || l.contains("could not start")
    });
    assert!(line.contains("detector=\"ebpf"), "{line}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cg.oom_kills(), 0, "{}", memprof.output());
    assert!(cg.pids().len() == 1, "memprof is no longer in its cgroup");
}
