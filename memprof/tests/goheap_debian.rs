//! Go programs nobody here wrote: Debian's podman, built by Debian's toolchain with its flags,
//! stripped by its packaging and linked by the system's linker (cgo).
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::{common::*, goheap::memory_profile};
use memprof::capture::goheap::discover::{discover, Discovery};

/// A Go program built by someone else (Debian's podman, stripped, linked externally): both its
/// build IDs are found, each as the usual tool prints it.
#[test]
fn a_debian_go_binary_has_both_build_ids() {
    use memprof::capture::goheap::build_id::BuildIds;
    let podman = std::path::Path::new("/usr/bin/podman");
    if !require(podman.exists(), "Debian's podman (cargo xtask setup)")
        || !require(have("readelf"), "readelf (binutils)")
    {
        return;
    }
    let data = std::fs::read(podman).unwrap();
    let ids = BuildIds::of(&object::File::parse(&*data).unwrap());
    let gnu = go::gnu_build_id(podman);
    assert!(gnu.is_some(), "readelf finds no GNU build ID in podman");
    assert_eq!(ids.gnu, gnu);
    assert_eq!(ids.go.as_deref(), Some(go::build_id(podman).as_str()));
    assert_eq!(ids.for_mapping(), gnu.as_deref());
}

/// A Go program Debian built and stripped (podman's API service, linked by the system's linker
/// with cgo): its heap is read from memory and names podman's own packages, with files and
/// lines from Go's line table.
#[test]
fn a_stripped_debian_go_program_s_heap_names_its_own_functions() {
    let podman = std::path::Path::new("/usr/bin/podman");
    if !require(podman.exists(), "Debian's podman (cargo xtask setup)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}/api.sock", dir.path().display());
    let mut svc = Command::new(podman)
        .args(["system", "service", "--time=0", &socket])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = svc.id();
    // Its socket is there once its start-up (and its allocations) are done.
    wait_for("podman's API socket", Duration::from_secs(30), || {
        dir.path().join("api.sock").exists()
    });
    let Discovery::Go(go) = discover(pid).unwrap() else {
        panic!("podman not discovered as a readable Go process")
    };
    assert!(go.located, "podman has no symbol table");
    let profile = memory_profile(pid);
    let _ = svc.kill();
    let _ = svc.wait();
    let traces = pprof_traces(&profile);
    let own: Vec<&String> = traces
        .iter()
        .flatten()
        .filter(|f| f.starts_with("github.com/containers/"))
        .collect();
    println!(
        "{} stacks, {} frames of containers' packages",
        traces.len(),
        own.len()
    );
    assert!(
        !own.is_empty(),
        "no frame of podman's packages in:\n{traces:?}"
    );
    let (_, line) = pprof_top_line(&profile);
    assert!(line.contains(".go:"), "no file and line: {line}");
}
