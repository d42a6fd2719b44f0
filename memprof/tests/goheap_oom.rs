//! Go services with no pprof endpoint, leaking into real memory cgroups until the real OOM
//! killer takes them: memprof reads the heap from memory at the threshold and the kernel reads
//! it at the kill; both profiles arrive in a real S3 server and name the leaking function.
mod common;

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;

/// A service without an endpoint in its own memory cgroup.
fn leak_without_endpoint(go: &Path, cg: &MemCgroup, rate: &str) -> Child {
    let procs = cg.procs_file();
    let mut cmd = Command::new(go);
    cmd.args(["-addr", "", "-rate", rate, "-delay", "1s"])
        .stdout(Stdio::piped());
    // SAFETY: only async-signal-safe work (a write) between fork and exec.
    unsafe { cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string())) };
    let mut child = cmd.spawn().unwrap();
    first_line(&mut child);
    child
}

fn prerequisites() -> Option<std::path::PathBuf> {
    if !require(is_root(), "root (BPF, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
        || !S3Server::available()
    {
        return None;
    }
    go_service()
}

/// Waits for a key containing `needle` and returns it.
fn wait_key(client: &S3Client, needle: &str, memprof: &Memprof) -> String {
    let mut found = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while found.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no key with {needle}; memprof said:\n{}",
            memprof.output()
        );
        std::thread::sleep(Duration::from_millis(20));
        found = client.keys().into_iter().find(|k| k.contains(needle));
    }
    found.unwrap()
}

#[test]
fn threshold_and_at_kill_profiles_without_an_endpoint() {
    let Some(go) = prerequisites() else { return };
    let s3 = S3Server::start("goheap");
    let client = s3.client();
    let mut env = s3.env();
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "60".into()));
    let memprof = Memprof::spawn(&["--detector", "btf"], &env);
    let cg = MemCgroup::new("memprof-goheap", 256 << 20);
    let mut svc = leak_without_endpoint(&go, &cg, "100");
    let pid = svc.id();

    let threshold = wait_key(&client, &format!("_pid-{pid}_6"), &memprof);
    let at_kill = wait_key(&client, &format!("_pid-{pid}_oom.heap.pb.gz"), &memprof);
    let _ = svc.wait();
    assert!(cg.oom_kills() >= 1, "the service was not OOM-killed");
    for key in [&threshold, &at_kill] {
        let (total, flat) = pprof_inuse(&client.get(key));
        let top = flat.iter().max_by_key(|(_, b)| **b).unwrap();
        assert_eq!(
            top.0, "main.leakyRetain",
            "{key}: top inuse_space is {top:?}"
        );
        assert!(*top.1 > total / 2, "{key}: {flat:?}");
    }
    let line = memprof.wait_for_log("at-kill profile stored", Duration::from_secs(10));
    assert!(
        line.contains(&threshold),
        "the at-kill line does not name the threshold profile {threshold}: {line}"
    );
    println!("{line}");
}
