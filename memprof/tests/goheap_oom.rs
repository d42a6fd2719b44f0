//! Go services with no pprof endpoint, leaking into real memory cgroups until the real OOM
//! killer takes them: memprof reads the heap from memory at the threshold and the kernel reads
//! it at the kill; both profiles arrive in a real S3 server and name the leaking function.
use std::{process::Child, time::Duration};

use crate::common::*;

pub fn prerequisites(app: &str, t: go::Toolchain) -> Option<std::path::PathBuf> {
    if !require(is_root(), "root (BPF, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
        || !S3Server::available()
    {
        return None;
    }
    go::build(app, t)
}

/// An S3 server and memprof reading Go heaps from memory at 50 %, its at-kill ring buffer
/// `ring` bytes.
pub fn reading_memory(name: &str, ring: &str) -> (S3Server, S3Client, Memprof) {
    let s3 = S3Server::start(name);
    let mut env = s3.env();
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "50".into()));
    let args = [
        "--detector",
        "btf",
        "--go-heap",
        "memory",
        "--at-kill-ring",
        ring,
    ];
    let memprof = Memprof::spawn(&args, &env);
    let client = s3.client();
    (s3, client, memprof)
}

/// Waits for a key containing `needle` and returns it.
pub fn wait_key(client: &S3Client, needle: &str, memprof: &Memprof) -> String {
    let mut found = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while found.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no key with {needle}; memprof said:\n{}",
            memprof.output()
        );
        std::thread::sleep(Duration::from_millis(20));
        // Profiles only: a capture slower than half a second also stores its evidence.
        found = client
            .keys()
            .into_iter()
            .find(|k| k.contains(needle) && !k.ends_with(".snapshot.txt"));
    }
    found.unwrap()
}

fn without_an_endpoint(t: go::Toolchain, stripped: bool) {
    if prerequisites("leaky", t).is_none() {
        return;
    }
    let go = match stripped {
        true => go::build_stripped("leaky", t).unwrap(),
        false => go::build("leaky", t).unwrap(),
    };
    let s3 = S3Server::start("goheap");
    let client = s3.client();
    let mut env = s3.env();
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "60".into()));
    let memprof = Memprof::spawn(&["--detector", "btf"], &env);
    let cg = MemCgroup::new(&format!("memprof-goheap-{t:?}"), 256 << 20);
    let mut svc = cg.start(&go, &["-addr", "", "-rate", "100", "-delay", "1s"]);
    let pid = svc.id();

    let threshold = wait_key(&client, &format!("_pid-{pid}_6"), &memprof);
    let at_kill = wait_key(&client, &format!("_pid-{pid}_oom.heap.pb.gz"), &memprof);
    let _ = svc.wait();
    assert!(cg.oom_kills() >= 1, "the service was not OOM-killed");
    let build_id = go::mapping_build_id(&go);
    for key in [&threshold, &at_kill] {
        let profile = client.get(key);
        assert_eq!(pprof_build_id(&profile), build_id, "{key}");
        let (total, flat) = pprof_inuse(&profile);
        let top = flat.iter().max_by_key(|(_, b)| **b).unwrap();
        assert_eq!(
            top.0, "main.leakyRetain",
            "{key}: top inuse_space is {top:?}"
        );
        assert!(*top.1 > total / 2, "{key}: {flat:?}");
        // With a file and line, from DWARF or (stripped) Go's line table.
        let (function, line) = pprof_top_line(&profile);
        assert_eq!(function, "main.leakyRetain", "{key}");
        assert!(
            line.ends_with(&format!("/leaky/main.go:{}", go::leak_line())),
            "{key}: {line}"
        );
    }
    let line = memprof.wait_for_log(
        &format!("at-kill profile stored pid={pid} "),
        Duration::from_secs(10),
    );
    assert!(
        line.contains(&threshold),
        "the at-kill line does not name the threshold profile {threshold}: {line}\nmemprof \
         said:\n{}",
        memprof.output()
    );
    println!("{line}");
    println!(
        "{}",
        memprof.wait_for_log(
            &format!("profile stored pid={pid} "),
            Duration::from_secs(1)
        )
    );
}

#[test]
fn without_an_endpoint_go_system() {
    without_an_endpoint(go::Toolchain::System, false);
}

#[test]
fn without_an_endpoint_go_current() {
    without_an_endpoint(go::Toolchain::Current, false);
}

/// Stripped (`-s -w`), on the oldest release, one in between and the newest: the threshold
/// profile and the at-kill profile both name the leak's function, file and line.
#[test]
fn without_an_endpoint_stripped_go_system() {
    without_an_endpoint(go::Toolchain::System, true);
}

#[test]
fn without_an_endpoint_stripped_go_middle() {
    without_an_endpoint(go::Toolchain::Middle, true);
}

#[test]
fn without_an_endpoint_stripped_go_current() {
    without_an_endpoint(go::Toolchain::Current, true);
}

/// More than 10,000 distinct stacks, two of them deeper than 64 frames: both readers bring
/// back every one, whole (as deep as the Go release records: 32 frames in 1.19, 128 later),
/// with an at-kill ring buffer sized for them (the default holds about 5,000).
fn many_deep_stacks(t: go::Toolchain) {
    const STACKS: usize = 12_000;
    const DEPTH: usize = 90;
    let Some(go) = prerequisites("stacks", t) else {
        return;
    };
    let (_s3, client, memprof) = reading_memory("stacks", "4Mi");
    let cg = MemCgroup::new(&format!("memprof-stacks-{t:?}"), 256 << 20);
    let args = [
        "-stacks",
        &STACKS.to_string(),
        "-deep",
        &DEPTH.to_string(),
        "-rate",
        "60",
    ];
    let mut svc = cg.start(&go, &args);
    let pid = svc.id();
    let threshold = wait_key(&client, &format!("_pid-{pid}_5"), &memprof);
    let at_kill = wait_key(&client, &format!("_pid-{pid}_oom.heap.pb.gz"), &memprof);
    let _ = svc.wait();
    for key in [&threshold, &at_kill] {
        let traces = pprof_traces(&client.get(key));
        let shallow = traces
            .iter()
            .filter(|t| t.iter().any(|f| f == "main.step"))
            .count();
        assert!(shallow >= STACKS, "{key}: {shallow} of {STACKS} stacks");
        let deepest = traces
            .iter()
            .map(|t| t.iter().filter(|f| *f == "main.deep").count())
            .max()
            .unwrap_or(0);
        let recorded = if t == go::Toolchain::System {
            32 - 2
        } else {
            DEPTH + 1
        };
        assert!(
            deepest >= recorded,
            "{key}: deepest stack has {deepest} main.deep frames"
        );
        println!("{key}: {shallow} shallow stacks, deepest {deepest} main.deep frames");
    }
    let line = memprof.wait_for_log(
        &format!("at-kill profile stored pid={pid} "),
        Duration::from_secs(10),
    );
    assert!(line.contains("truncated=\"\""), "{line}");
    println!("{line}");
}

#[test]
fn many_deep_stacks_go_system() {
    many_deep_stacks(go::Toolchain::System);
}

#[test]
fn many_deep_stacks_go_current() {
    many_deep_stacks(go::Toolchain::Current);
}

/// Two Go services OOM-killed at the same moment: the kernel walks both victims, and both
/// at-kill profiles arrive.
#[test]
fn two_victims_at_once() {
    let Some(go) = prerequisites("leaky", go::Toolchain::System) else {
        return;
    };
    let s3 = S3Server::start("victims");
    let client = s3.client();
    let memprof = Memprof::spawn(&["--detector", "btf"], &s3.env());
    let args = ["-addr", "", "-rate", "100", "-delay", "1s"];
    let cgs = [
        MemCgroup::new("memprof-victim-a", 192 << 20),
        MemCgroup::new("memprof-victim-b", 192 << 20),
    ];
    let mut svcs: Vec<Child> = cgs.iter().map(|cg| cg.start(&go, &args)).collect();
    for svc in &mut svcs {
        let key = wait_key(
            &client,
            &format!("_pid-{}_oom.heap.pb.gz", svc.id()),
            &memprof,
        );
        let _ = svc.wait();
        let top = pprof_top(&client.get(&key));
        assert!(top.contains("main.leakyRetain"), "{key}:\n{top}");
    }
    for cg in &cgs {
        assert!(cg.oom_kills() >= 1, "{} saw no OOM kill", cg.dir.display());
    }
}

/// Beyond the kernel walk's cap of 65,536 buckets: the at-kill profile keeps the first 65,536
/// (in a ring buffer sized for them) and says how many it left out; the read at the threshold
/// (cap 100,000) keeps them all.
#[test]
fn beyond_the_walk_cap() {
    const STACKS: usize = 70_000;
    // 17 levels make 34-frame stacks: deeper than Go 1.19 records (32), so a current Go.
    let Some(go) = prerequisites("stacks", go::Toolchain::Current) else {
        return;
    };
    let (_s3, client, memprof) = reading_memory("cap", "16Mi");
    let cg = MemCgroup::new("memprof-cap", 512 << 20);
    let stacks = STACKS.to_string();
    let args = [
        "-stacks", &stacks, "-bits", "17", "-rate", "100", "-delay", "2s",
    ];
    let mut svc = cg.start(&go, &args);
    let pid = svc.id();
    let threshold = wait_key(&client, &format!("_pid-{pid}_5"), &memprof);
    wait_key(&client, &format!("_pid-{pid}_oom.heap.pb.gz"), &memprof);
    let _ = svc.wait();
    let traces = pprof_traces(&client.get(&threshold));
    let shallow = traces
        .iter()
        .filter(|t| t.iter().any(|f| f == "main.step"))
        .count();
    assert!(
        shallow >= STACKS,
        "{threshold}: {shallow} of {STACKS} stacks"
    );
    let line = memprof.wait_for_log(
        &format!("at-kill profile stored pid={pid} "),
        Duration::from_secs(30),
    );
    assert!(line.contains("buckets=65536"), "{line}");
    let left_out: u64 = line
        .split("truncated=\"")
        .nth(1)
        .and_then(|t| t.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count of buckets left out in: {line}"));
    assert!(left_out as usize >= STACKS - 65_536, "{line}");
    println!("{line}");
}
