//! Delivery through the spool with the longest names Kubernetes allows: a 253-character pod
//! name and a 63-character namespace make a key longer than a file name may be; the profile
//! must still be spooled (privately) and arrive. (It arrives in the local destination: the
//! test S3 server, s3s-fs, keeps objects in files of its own whose names then exceed 255
//! bytes and answers 500; S3 itself takes keys of up to 1,024 bytes.)
use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn the_longest_pod_names_spool_and_arrive() {
    let Some(go) = go_service() else {
        return;
    };
    let port = free_port().to_string();
    let mut app = Command::new(&go)
        .args(["-addr", &format!("127.0.0.1:{port}"), "-rate", "5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(first_line(&mut app).starts_with("ready"));
    wait_for_heap_samples(
        &format!("http://127.0.0.1:{port}/debug/pprof/heap"),
        "main.leakyRetain",
    );
    let dir = tempfile::tempdir().unwrap();
    let (namespace, pod) = ("n".repeat(63), "p".repeat(253));
    let out = Command::new(env!("CARGO_BIN_EXE_memprof"))
        .args(dir_args(dir.path()))
        .args([
            "--pprof-port",
            &port,
            "capture",
            "--pid",
            &app.id().to_string(),
        ])
        .env("POD_NAMESPACE", &namespace)
        .env("POD_NAME", &pod)
        .output()
        .unwrap();
    let _ = app.kill();
    let _ = app.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        key.starts_with(&format!("memprof/{namespace}/{pod}/leaky/")),
        "{key}"
    );
    assert!(key.len() > 255, "the key is longer than a file name may be");
    let profile = std::fs::read(dir.path().join("profiles").join(&key)).unwrap();
    assert!(pprof_top(&profile).contains("main.leakyRetain"));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .collect();
    assert!(
        left.is_empty(),
        "the spool is empty once S3 has the profile"
    );
}
