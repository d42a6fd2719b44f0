//! A tenant with 50,000 mounts in a user namespace of its own, in a real pod with a memprof
//! sidecar: its mountinfo is ~15 MiB, past what memprof reads of it (1 MiB to find its cgroup,
//! 4 MiB to check where its executable is). Its mounts are made before its program runs, and
//! its program runs from the last of them, so the mount it is on is past the bound: memprof
//! must not take it for one it checked (it might be FUSE, served by the tenant), so it reads
//! no heap from that program's memory; the cgroup, mounted long before, is still found and
//! measured. Its crossing yields one clear line and a snapshot; an honest Go service in another
//! container is still profiled before its OOM kill; memprof stays alive within its 128 MiB.
use std::{path::Path, time::Duration};

use crate::common::{go, pod::Spec, sidecar::*, wait_for};

const MOUNTS: u32 = 50_000;

/// Work directory, mounts to make, the program to run and its arguments. A tmpfs holding 100
/// mounts, bound with all of them onto 500 directories (one `mount` each: made one by one, the
/// kernel takes a millisecond a mount here). Mount points have 120-byte names, as deep paths
/// would. Then the program, copied beside them, runs from one more mount made last.
const MOUNTS_PY: &str = r#"
import ctypes, os, shutil, sys, time
libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_REC = 4096, 16384

def mount(src, dst, fstype=None, flags=0):
    if libc.mount(src.encode(), dst.encode(), fstype and fstype.encode(), flags, None) != 0:
        sys.exit("mount %s: %s" % (dst, os.strerror(ctypes.get_errno())))

work, n, program = sys.argv[1], int(sys.argv[2]), sys.argv[3]
pad = "p" * 120
started = time.time()
tree = os.path.join(work, "tree")
os.mkdir(tree)
mount("tmpfs", tree, "tmpfs")
for i in range(99):
    os.mkdir(os.path.join(tree, "%s%03d" % (pad, i)))
    mount(tree, os.path.join(tree, "%s%03d" % (pad, i)), None, MS_BIND)
for j in range(n // 100):
    os.mkdir(os.path.join(work, "%s%04d" % (pad, j)))
    mount(tree, os.path.join(work, "%s%04d" % (pad, j)), None, MS_BIND | MS_REC)
made = time.time() - started
bin, last = os.path.join(work, "bin"), os.path.join(work, "last")
os.makedirs(bin)
os.mkdir(last)
shutil.copy(program, bin)
mount(bin, last, None, MS_BIND)
print("mounted %d in %.2fs" % (n, made), flush=True)
exe = os.path.join(last, os.path.basename(program))
os.execv(exe, [exe] + sys.argv[4:])
"#;

#[test]
fn fifty_thousand_mounts_leave_their_last_one_unchecked() {
    let Some(s) = setup(
        "hostile-mounts",
        67,
        &[("MEMPROF_MAX_CAPTURES_PER_MINUTE", "1000")],
    ) else {
        return;
    };
    let tenant_bin = go::build("tenant", go::Toolchain::System).expect("the tenant program");
    let work = s.pod.work_dir().join("mounts");
    std::fs::create_dir(&work).unwrap();
    let out = s.pod.work_dir().join("mounts.out");
    let (work_s, bin_s, n) = (
        work.display().to_string(),
        tenant_bin.display().to_string(),
        MOUNTS.to_string(),
    );
    // The mounts take ~30 MiB of kernel memory, charged to the container: the program holds
    // 85 % of the limit, past memprof's 80 %, and leaves room for them.
    let cmd = [
        "unshare",
        "-Urm",
        "/usr/bin/python3",
        "-c",
        MOUNTS_PY,
        &work_s,
        &n,
        &bin_s,
        "-alloc",
        "435",
        "-rate",
        "100",
    ];
    let spec = Spec {
        name: "mounts",
        limit: 512 * MIB,
        cmd: &cmd,
        env: &[],
        out: &out,
    };
    let tenant = s.pod.container(&spec, None);
    let said = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_for("the tenant's mounts", Duration::from_secs(60), || {
        assert!(tenant.alive(), "the tenant died: {}", said());
        said().contains("ready pid=")
    });
    let mountinfo = mountinfo_size(tenant.host_pid);
    println!(
        "mounts: {}; its mountinfo: {} lines, {} KiB",
        said().lines().next().unwrap_or_default(),
        mountinfo.0,
        mountinfo.1 >> 10
    );
    assert!(
        mountinfo.0 > MOUNTS as usize && mountinfo.1 > 8 << 20,
        "{mountinfo:?}"
    );

    // Its program is on a mount past what was read: unknown, so not opened. (Its PID ran
    // `nsenter`, `unshare` and Python before, each with mounts of their own: lines of their own.)
    let pid = tenant.pid;
    let of_tenant = |what: &'static str| {
        move |l: &str| l.contains(what) && l.contains(&format!("pid={pid} comm=\"tenant\""))
    };
    let refused = s.memprof.wait_for_line_matching(
        "the tenant's program refused",
        Duration::from_secs(60),
        of_tenant("executable not parsed"),
    );
    println!("{refused}");
    assert!(refused.contains("not in its mountinfo"), "{refused}");
    // Its cgroup, mounted long before, was found and its limit known: it crossed its level.
    let nothing = s.memprof.wait_for_line_matching(
        "the tenant's crossing",
        Duration::from_secs(60),
        of_tenant("nothing captured"),
    );
    println!("{nothing}");
    // Measured against its limit, not the node's memory.
    let percent: f64 = nothing
        .split_once("percent=\"")
        .and_then(|(_, p)| p.split('"').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(percent >= 80.0, "{nothing}");
    let snapshot = s.snapshot_key(pid);
    let text = String::from_utf8_lossy(&s.client.get(&snapshot)).into_owned();
    let stat = text.split("/memory.stat\n").nth(1).unwrap_or_default();
    assert!(
        stat.starts_with("cache ") || stat.starts_with("anon "),
        "{text}"
    );

    s.honest_service_profiled();
    let log = s.memprof_survived("mounts");
    assert_eq!(s.snapshots(), 1, "{log}");
    drop(tenant);
}

/// Lines and bytes of the mountinfo of `pid`.
fn mountinfo_size(pid: u32) -> (usize, usize) {
    let text = std::fs::read(Path::new("/proc").join(pid.to_string()).join("mountinfo"));
    let text = text.unwrap_or_default();
    (text.iter().filter(|&&b| b == b'\n').count(), text.len())
}
