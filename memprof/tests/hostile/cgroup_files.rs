//! Tenants that turn their own files against a memprof sidecar, in a real pod: memprof reaches
//! each container's cgroup only through the container's own root, which the tenant controls.
//! - `chroot`: after memprof has found its cgroup, the tenant changes its root (no exec, the
//!   same PID and `/proc/PID/cgroup`) to a directory whose cgroup files are links to a canary
//!   (where memprof writes thresholds), a secret (where it reads `memory.stat`), `/dev/zero`
//!   and a FIFO; its limit is then resized, so memprof arms its threshold anew, and it fills
//!   its memory, so memprof captures it. It also names itself with control characters.
//! - `mounts`: the tenant mounts a FIFO, `/dev/zero`, a sparse 100 GiB file and a canary over
//!   its cgroup's files in its own mount namespace.
//!
//! Meanwhile an honest Go service in another container must be profiled before its OOM kill;
//! the canaries stay as they were, the secret is in no object, spool file or log line, no log
//! line holds a raw control character, and memprof stays alive within its 128 MiB.
use std::{path::Path, time::Duration};

use crate::common::{go, sidecar::*, wait_for_line};

/// Control files of both cgroup versions, and what the tenant puts in their place.
const LINKS: [(&str, Target); 11] = [
    ("memory/cgroup.event_control", Target::Canary),
    ("memory/memory.stat", Target::Secret),
    ("memory/cgroup.procs", Target::Secret),
    ("memory/memory.limit_in_bytes", Target::Zero),
    ("memory/memory.usage_in_bytes", Target::Fifo),
    ("memory.pressure", Target::Canary),
    ("memory.stat", Target::Secret),
    ("cgroup.controllers", Target::Secret),
    ("memory.max", Target::Zero),
    ("memory.current", Target::Fifo),
    ("memory.events", Target::Fifo),
];

#[derive(Clone, Copy)]
enum Target {
    Canary,
    Secret,
    Zero,
    Fifo,
}

/// Run in the `mounts` container: its cgroup's files covered, then the tenant.
const MOUNTS_SH: &str = r#"
work=$1; tenant=$2; shift 2
cd /sys/fs/cgroup/memory 2>/dev/null || cd /sys/fs/cgroup
mkfifo "$work/fifo-mounts"
truncate -s 100G "$work/sparse"
for f in memory.limit_in_bytes memory.max cgroup.procs; do
    if [ -e $f ]; then mount --bind "$work/fifo-mounts" $f; fi
done
for f in memory.usage_in_bytes memory.current; do
    if [ -e $f ]; then mount --bind /dev/zero $f; fi
done
mount --bind "$work/sparse" memory.stat
for f in cgroup.event_control memory.pressure; do
    if [ -e $f ]; then mount --bind "$work/canary-mounts" $f; fi
done
exec "$tenant" "$@"
"#;

const NAME: &str = "\u{1b}[2Jevil\r";

#[test]
fn a_tenant_s_files_cannot_turn_the_sidecar_against_the_node() {
    let Some(s) = setup(
        "hostile-files",
        61,
        &[("MEMPROF_MAX_CAPTURES_PER_MINUTE", "1000")],
    ) else {
        return;
    };
    let tenant = go::build_stripped("tenant", go::Toolchain::System).expect("the tenant program");
    let work = s.pod.work_dir();
    let secret = format!("SECRET-{}", std::process::id());
    let canary = "canary: untouched\n";
    let fake = work.join("fake");
    forge_root(work, &fake, &secret, canary);
    std::fs::write(work.join("canary-mounts"), canary).unwrap();

    let go_file = work.join("go");
    let (tenant, fake_s, go_s) = (
        tenant.display().to_string(),
        fake.display().to_string(),
        go_file.display().to_string(),
    );
    let chroot_args = [
        "-wait", &go_s, "-chroot", &fake_s, "-name", NAME, "-alloc", "270", "-rate", "40",
    ];
    let chrooter = s.program(Path::new(&tenant), "chroot", 256 * MIB, &chroot_args);
    let work_s = work.display().to_string();
    let mounts_args = [
        "-c", MOUNTS_SH, "sh", &work_s, &tenant, "-alloc", "270", "-rate", "40",
    ];
    let mounter = s.program(Path::new("/bin/sh"), "mounts", 300 * MIB, &mounts_args);

    // memprof has found the tenant's cgroup (through its root) and watches it.
    let watching = |limit: u64| {
        move |l: &str| {
            l.contains("watching container")
                && l.contains("chroot\"")
                && l.contains(&format!("limit={limit} "))
        }
    };
    s.memprof.wait_for_line_matching(
        "the chroot tenant's container watched",
        Duration::from_secs(30),
        watching(256 * MIB),
    );
    std::fs::write(&go_file, "").unwrap();
    wait_for_line(
        "the tenant to change its root",
        Duration::from_secs(10),
        || std::fs::read_to_string(work.join("chroot.out")).unwrap_or_default(),
        |l| l == "changed root",
    );
    // A new limit: memprof arms the container's threshold again, writing to the cgroup.
    let limit_file = if chrooter.cgroup.v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    std::fs::write(
        chrooter.cgroup.dir.join(limit_file),
        (300 * MIB).to_string(),
    )
    .unwrap();
    s.memprof.wait_for_line_matching(
        "the chroot tenant's container watched at its new limit",
        Duration::from_secs(30),
        watching(300 * MIB),
    );

    s.honest_service_profiled();

    // The chroot tenant crossed its level: its snapshot holds its real cgroup's memory.stat.
    let snapshot = s.snapshot_key(chrooter.pid);
    let text = String::from_utf8_lossy(&s.client.get(&snapshot)).into_owned();
    let stat = text.split("/memory.stat\n").nth(1).unwrap_or_default();
    assert!(
        stat.starts_with("cache ") || stat.starts_with("anon "),
        "{text}"
    );
    assert!(
        text.contains("\\u{1b}[2Jevil\\r"),
        "the name escaped: {text}"
    );
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r'),
        "a raw control character in the snapshot: {}",
        text.escape_debug()
    );
    // The covered cgroup is no cgroup to memprof: only that tenant goes unmeasured.
    s.memprof
        .wait_for_line_matching("the covered cgroup refused", Duration::from_secs(10), |l| {
            l.contains("memory limit unknown") && l.contains(&format!("pid={} ", mounter.pid))
        });

    for name in ["fake/canary", "canary-mounts"] {
        let now = std::fs::read_to_string(work.join(name)).unwrap();
        assert_eq!(now, canary, "memprof wrote into {name}");
    }
    let log = s.memprof.output();
    assert!(
        !log.contains('\u{1b}') && !log.contains('\r'),
        "a raw control character in memprof's log:\n{}",
        log.escape_debug()
    );
    let mut leaked: Vec<String> = s
        .client
        .keys()
        .into_iter()
        .filter(|k| String::from_utf8_lossy(&s.client.get(k)).contains(&secret))
        .collect();
    leaked.extend(files_containing(work, &secret, &fake));
    assert!(log.contains("memprof started"));
    assert!(
        !log.contains(&secret) && leaked.is_empty(),
        "the secret leaked into {leaked:?}"
    );
    s.memprof_survived("cgroup files");
    drop((chrooter, mounter));
}

/// The root the `chroot` tenant moves to: each cgroup file a link to a canary, the secret,
/// `/dev/zero` or a FIFO (absolute links: through `/proc/PID/root` they resolve against the
/// reader's own root).
fn forge_root(work: &Path, fake: &Path, secret: &str, canary: &str) {
    let cgroup = fake.join("sys/fs/cgroup");
    std::fs::create_dir_all(cgroup.join("memory")).unwrap();
    std::fs::write(fake.join("canary"), canary).unwrap();
    std::fs::write(work.join("secret"), format!("{secret}\n")).unwrap();
    let fifo = work.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    for (file, target) in LINKS {
        let to = match target {
            Target::Canary => fake.join("canary"),
            Target::Secret => work.join("secret"),
            Target::Zero => "/dev/zero".into(),
            Target::Fifo => fifo.clone(),
        };
        std::os::unix::fs::symlink(to, cgroup.join(file)).unwrap();
    }
}

/// Regular files below `dir` (memprof's spool, local copies and log; not the `skip` tree the
/// tenant owns, nor the secret itself) that contain `needle`.
fn files_containing(dir: &Path, needle: &str, skip: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let (p, kind) = (e.path(), e.file_type().unwrap());
            if p == skip || p.file_name().is_some_and(|n| n == "secret") {
                continue;
            }
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file()
                && e.metadata().is_ok_and(|m| m.len() < 1 << 30)
                && std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}
