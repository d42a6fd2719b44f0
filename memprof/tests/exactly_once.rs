//! One object per profile, whenever memprof is stopped: a Go service leaking in a memory
//! cgroup, memprof beside it, and a real S3 server (s3s-fs, SigV4) behind a proxy that stops
//! each delivery at another point. memprof is SIGKILLed after spooling with no PUT through,
//! SIGTERMed during a PUT (it exits 0 at its shutdown deadline), and SIGKILLed after S3 stored
//! a PUT whose answer never came; a last start delivers what is left. Each profile arrives
//! once, byte-identical, with its metadata, and no secret is ever logged.
use std::{path::Path, time::Duration};

use crate::common::{
    outage::*,
    proxy::{Mode, Proxy},
    *,
};

/// A service leaks until memprof has taken its profile and its delivery reached the point
/// `reached` checks; then it is stopped. Its PID.
fn profile_one(go: &Path, cg: &MemCgroup, reached: &dyn Fn(u32) -> bool) -> u32 {
    let mut app = leak(go, cg, 20);
    let pid = app.id();
    wait_for(
        "the delivery to reach its point",
        Duration::from_secs(60),
        || reached(pid),
    );
    let _ = app.kill();
    let _ = app.wait();
    pid
}

#[test]
fn a_profile_stopped_at_any_point_of_its_delivery_arrives_once() {
    let Some(go) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start("profiles");
    let proxy = Proxy::start(s3.port);
    let mut env = s3_env(&proxy.endpoint(), SECRET_KEY);
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "40".into()));
    env.push(("MEMPROF_SHUTDOWN_SECS", "3".into()));
    env.push(("MEMPROF_S3_SSE", "aws:kms".into()));
    env.push(("MEMPROF_S3_SSE_KMS_KEY_ID", "alias/memprof-test".into()));
    let start = || Memprof::spawn_at(dir.path(), &[], &["--detector", "btf"], &env);
    let cg = MemCgroup::new("memprof-test-exactly-once", 256 << 20);
    let mut pids = Vec::new();
    let mut logs = Vec::new();
    let in_s3 = |pid: u32| {
        s3.client()
            .keys()
            .iter()
            .any(|k| k.contains(&format!("_pid-{pid}_")))
    };

    // 1. Spooled, no PUT got through (each connection is closed at once): SIGKILL.
    proxy.set(Mode::Close);
    let mut memprof = start();
    pids.push(profile_one(&go, &cg, &|pid| {
        memprof.output().contains(&format!("_pid-{pid}_")) && spooled(dir.path()).len() == 1
    }));
    let _ = memprof.child.kill();
    let _ = memprof.child.wait();
    logs.push(memprof.output());
    assert!(!in_s3(pids[0]));

    // 2. During a PUT (the request is swallowed, never answered): SIGTERM. memprof stops
    // within its deadline, exits 0 and keeps both profiles spooled.
    proxy.set(Mode::Hold);
    let memprof = start();
    pids.push(profile_one(&go, &cg, &|pid| {
        proxy.sent().contains(&format!("_pid-{pid}_"))
    }));
    let (code, out) = memprof.stop();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("stay in the spool"), "{out}");
    logs.push(out);
    assert_eq!(spooled(dir.path()).len(), 2);

    // 3. After S3 stored the PUT, before memprof heard back (answers are swallowed): SIGKILL.
    // The start sends the two spooled profiles at once, the third is new.
    proxy.set(Mode::ForwardHoldAnswer);
    let mut memprof = start();
    pids.push(profile_one(&go, &cg, &in_s3));
    wait_for("S3 to store all three", Duration::from_secs(30), || {
        pids.iter().all(|p| in_s3(*p))
    });
    let _ = memprof.child.kill();
    let _ = memprof.child.wait();
    logs.push(memprof.output());
    let waiting = spooled(dir.path());
    assert_eq!(
        waiting.len(),
        3,
        "nothing was confirmed, so all are spooled"
    );

    // 4. A start with S3 answering: the spool empties; one object per profile.
    proxy.set(Mode::Forward);
    let memprof = start();
    wait_for("the spool to empty", Duration::from_secs(60), || {
        spooled(dir.path()).is_empty()
    });
    let (code, out) = memprof.stop();
    assert_eq!(code, Some(0));
    logs.push(out);
    let client = s3.client();
    let keys = client.keys();
    for (key, bytes) in &waiting {
        assert_eq!(
            keys.iter().filter(|k| *k == key).count(),
            1,
            "{key} in {keys:?}"
        );
        assert_eq!(&client.get(key), bytes, "{key} byte-identical");
    }
    for pid in &pids {
        let mine = keys
            .iter()
            .filter(|k| k.contains(&format!("_pid-{pid}_")))
            .count();
        assert_eq!(mine, 1, "one object for process {pid}: {keys:?}");
    }

    // Each object explains itself, and was asked to be encrypted with the key given.
    let meta = client.metadata(&waiting[0].0);
    for field in [
        "pid", "comm", "cmdline", "rss", "limit", "percent", "trigger", "detector",
    ] {
        assert!(meta.contains_key(field), "{field} missing: {meta:?}");
    }
    assert_eq!(meta["comm"], "leaky", "{meta:?}");
    assert_eq!(meta["memprof-version"], env!("CARGO_PKG_VERSION"));
    assert!(meta["cmdline"].contains("-rate 20"), "{meta:?}");
    let sent = proxy.sent().to_ascii_lowercase();
    assert!(sent.contains("x-amz-server-side-encryption: aws:kms"));
    assert!(sent.contains("x-amz-server-side-encryption-aws-kms-key-id: alias/memprof-test"));

    // No secret in any log: not the key, not a signature.
    for log in &logs {
        assert!(!log.contains(SECRET_KEY), "secret key logged:\n{log}");
        assert!(!log.contains("Signature="), "signature logged:\n{log}");
    }
}
