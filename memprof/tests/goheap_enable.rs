//! `MEMPROF_GO_ENABLE_PROFILING`: a Go program whose linker turned heap profiling off gets
//! Go's default rate written into it at first sight, and its heap can then be profiled.
use std::time::Duration;

use crate::common::*;
use crate::goheap_oom::{prerequisites, wait_key};

/// The test program never references the profiler (`-sampled=false`): with the option, memprof
/// turns profiling on once the program has started (Go 1.19 sets the rate in package init,
/// later releases as the scheduler starts) and the at-kill profile names the leak; the log says
/// what was written. Only the test's cgroup is watched: the option writes into every Go
/// program with profiling off that memprof watches.
fn turned_on(t: go::Toolchain) {
    let Some(go) = prerequisites("stacks", t) else {
        return;
    };
    let s3 = S3Server::start("enable");
    let client = s3.client();
    let name = format!("memprof-enable-{t:?}");
    let mut env = s3.env();
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "50".into()));
    env.push(("MEMPROF_GO_ENABLE_PROFILING", "1".into()));
    env.push(("MEMPROF_INCLUDE_CGROUP", name.clone()));
    let memprof = Memprof::spawn(&["--detector", "btf", "--go-heap", "memory"], &env);
    let cg = MemCgroup::new(&name, 256 << 20);
    let args = [
        "-sampled=false",
        "-stacks",
        "10",
        "-rate",
        "60",
        "-delay",
        "3s",
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

#[test]
fn profiling_turned_on_in_a_program_that_had_it_off_go_system() {
    turned_on(go::Toolchain::System);
}

#[test]
fn profiling_turned_on_in_a_program_that_had_it_off_go_current() {
    turned_on(go::Toolchain::Current);
}
