//! Delivery through outages, on real parts: a Go service leaking in a memory cgroup, memprof
//! beside it, and a real S3 server (s3s-fs, SigV4) that is down when the profiles are taken or
//! refuses memprof's credentials. Profiles wait in the spool within its bounds and arrive
//! byte-identical, once.
use std::time::{Duration, Instant};

use crate::common::{outage::*, sidecar::percent_of, *};

#[test]
fn s3_down_when_profiles_are_taken_they_wait_within_bounds_and_arrive_once() {
    let Some(go) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut env = s3_env(&endpoint, SECRET_KEY);
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "40,60".into()));
    // Room for one profile: the second makes the first go, and the log says so.
    env.push(("MEMPROF_SPOOL_MAX_OBJECTS", "1".into()));
    let memprof = Memprof::spawn_at(dir.path(), &[], &["--detector", "btf"], &env);
    let cg = MemCgroup::new("memprof-test-delivery-down", 256 << 20);
    let mut app = leak(&go, &cg, 20);
    let pid = app.id();

    // Each profile is tried at once, fails, and is kept. A key names the percent the process
    // was at when captured: at or above its level.
    let marker = format!("_pid-{pid}_");
    let not_stored = |level: u32| {
        let line = memprof.wait_for_line(
            &format!("the {level} % profile to fail"),
            Duration::from_secs(60),
            |l| {
                l.contains("capture::handover: profile not stored yet")
                    && key_in(l).is_some_and(|k| k.contains(&marker) && percent_of(k) >= level)
            },
        );
        key_in(&line).unwrap().to_string()
    };
    let first = not_stored(40);
    let second = not_stored(60);
    assert!(percent_of(&first) < 60, "{first}");
    let taken = Instant::now();
    let _ = app.kill();
    let _ = app.wait();
    let dropped = memprof.wait_for_log("spool full: dropped", Duration::from_secs(5));
    assert!(
        dropped.contains(&format!("dropped=\"{first}\"")),
        "{dropped}"
    );
    let waiting = spooled(dir.path());
    assert_eq!(
        waiting.len(),
        1,
        "{:?}",
        waiting.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    let (key, bytes) = waiting.into_iter().next().unwrap();
    assert_eq!(key, second);

    // S3 comes up 10 s after the profile was taken, after several failed attempts.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(taken.elapsed()));
    let s3 = S3Server::start_at("profiles", "127.0.0.1", port);
    let client = s3.client();
    wait_for("the spooled profile in S3", Duration::from_secs(90), || {
        client.keys().contains(&key)
    });
    assert_eq!(
        client.get(&key),
        bytes,
        "byte-identical to what was spooled"
    );
    wait_for("memprof's stored line", Duration::from_secs(5), || {
        stored_lines(&memprof.output(), &key) == 1
    });
    // Once: no second attempt, no other object for the service, an empty spool.
    std::thread::sleep(Duration::from_secs(3));
    let (code, out) = memprof.stop();
    assert_eq!(code, Some(0));
    let keys: Vec<_> = client
        .keys()
        .into_iter()
        .filter(|k| k.contains(&marker))
        .collect();
    assert_eq!(keys, vec![key.clone()]);
    assert_eq!(stored_lines(&out, &key), 1, "{out}");
    assert!(spooled(dir.path()).is_empty());
}

#[test]
fn wrong_credentials_keep_the_profile_until_a_restart_with_the_right_ones() {
    let Some(go) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start("profiles");
    let mut env = s3_env(&s3.endpoint(), "not-the-secret");
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "40".into()));
    let memprof = Memprof::spawn_at(dir.path(), &[], &["--detector", "btf"], &env);
    let cg = MemCgroup::new("memprof-test-delivery-creds", 256 << 20);
    let mut app = leak(&go, &cg, 20);
    let pid = app.id();

    let line = memprof.wait_for_log(
        "cannot succeed until the configuration changes",
        Duration::from_secs(60),
    );
    let _ = app.kill();
    let _ = app.wait();
    let key = line
        .split("key=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        key.contains(&format!("_pid-{pid}_")) && percent_of(key) >= 40,
        "{line}"
    );
    assert!(line.contains("SignatureDoesNotMatch"), "{line}");
    assert!(
        !line.contains("not-the-secret"),
        "the secret must not be logged: {line}"
    );
    let (code, out) = memprof.stop();
    assert_eq!(code, Some(0));
    assert_eq!(
        out.matches("cannot succeed until").count(),
        1,
        "once per profile:\n{out}"
    );
    assert!(client_keys(&s3).is_empty());
    let (key, bytes) = spooled(dir.path())
        .pop()
        .expect("the profile kept in the spool");

    // Restarted with the right credentials, memprof sends what its spool kept.
    let mut env = s3_env(&s3.endpoint(), SECRET_KEY);
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "40".into()));
    let memprof = Memprof::spawn_at(dir.path(), &[], &["--detector", "btf"], &env);
    wait_for(
        "the spooled profile stored",
        Duration::from_secs(30),
        || stored_lines(&memprof.output(), &key) == 1,
    );
    assert_eq!(s3.client().get(&key), bytes);
    assert!(spooled(dir.path()).is_empty());
    assert_eq!(memprof.stop().0, Some(0));
}

/// Lines saying the spooled `key` was stored.
fn stored_lines(log: &str, key: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("spooled profile stored") && l.contains(key))
        .count()
}

fn client_keys(s3: &S3Server) -> Vec<String> {
    s3.client().keys()
}
