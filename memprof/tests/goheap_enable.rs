//! `MEMPROF_GO_ENABLE_PROFILING`: a Go program whose linker turned heap profiling off gets
//! Go's default rate written into it at first sight, and its heap can then be profiled.
use std::time::Duration;

use crate::common::*;
use crate::goheap_oom::{prerequisites, wait_key};

/// The test program never references the profiler (`-sampled=false`): with the option, memprof
/// turns profiling on and the at-kill profile names the leak; the log says what was written.
#[test]
fn profiling_turned_on_in_a_program_that_had_it_off() {
    let Some(go) = prerequisites("stacks", go::Toolchain::System) else {
        return;
    };
    let s3 = S3Server::start("enable");
    let client = s3.client();
    let mut env = s3.env();
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "50".into()));
    env.push(("MEMPROF_GO_ENABLE_PROFILING", "1".into()));
    let memprof = Memprof::spawn(&["--detector", "btf", "--go-heap", "memory"], &env);
    let cg = MemCgroup::new("memprof-enable", 256 << 20);
    let args = [
        "-sampled=false",
        "-stacks",
        "10",
        "-rate",
        "60",
        "-delay",
        "2s",
    ];
    let mut svc = cg.start(&go, &args);
    let pid = svc.id();
    let line = memprof.wait_for_log(
        "Go heap profiling turned on (MEMPROF_GO_ENABLE_PROFILING)",
        Duration::from_secs(10),
    );
    assert!(line.contains(&format!("pid={pid}")), "{line}");
    let key = wait_key(&client, &format!("_pid-{pid}_oom.heap.pb.gz"), &memprof);
    let _ = svc.wait();
    let top = pprof_top(&client.get(&key));
    assert!(top.contains("main.leakyRetain"), "{key}:\n{top}");
    assert!(cg.oom_kills() >= 1, "no OOM kill");
}
