//! A tenant whose executable is on a FUSE file system that stops answering (a real one:
//! `bindfs`, then SIGSTOPped), as a process that serves its own files can make it: any open or
//! read there waits for the stopped server. memprof, started after, meets the tenant at first
//! sight and must refuse its executable from what the tenant's mountinfo says, without a
//! request to the file system — one clear line, no stalled discovery — and still profile an
//! honest Go service before its OOM kill.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::common::*;

/// A `bindfs` mount served by a child process; unmounted (after the server is resumed and
/// killed) when dropped, also when the test fails.
struct FuseMount {
    server: Child,
    at: PathBuf,
}

impl FuseMount {
    fn new(from: &Path, at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let server = Command::new("bindfs")
            .args(["-f", "--no-allow-other"])
            .arg(from)
            .arg(at)
            .spawn()
            .unwrap();
        let mount = Self {
            server,
            at: at.to_path_buf(),
        };
        wait_for("the bindfs mount", Duration::from_secs(10), || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .any(|l| l.contains(&format!(" {} ", at.display())) && l.contains(" - fuse"))
        });
        mount
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.server.id() as i32, sig) };
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn an_executable_on_a_stalled_fuse_mount_is_refused_unread() {
    let (Some(_), Some(tenant)) = (go_service(), go::build("tenant", go::Toolchain::System)) else {
        return;
    };
    if !require(is_root(), "root (FUSE mounts, cgroups)")
        || !require(MemCgroup::available(), "a memory cgroup controller")
        || !require(have("bindfs"), "bindfs (a FUSE file system)")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("served");
    std::fs::create_dir(&from).unwrap();
    std::fs::copy(&tenant, from.join("tenant")).unwrap();
    let fuse = FuseMount::new(&from, &dir.path().join("fuse"));
    let cg_trap = MemCgroup::new("memprof-test-hostile-fuse", 256 << 20);
    let mut trapped = cg_trap.start(&fuse.at.join("tenant"), &["-alloc", "0"]);
    // From now on every request to the mount waits.
    fuse.signal(libc::SIGSTOP);

    let env = [("MEMORY_CRITICAL_PERCENTAGE", "80".to_string())];
    let memprof = Memprof::spawn_at(dir.path(), &[], &[], &env);
    let started = Instant::now();
    let line = memprof.wait_for_line(
        "the FUSE executable refused",
        Duration::from_secs(30),
        |l| l.contains("executable not parsed") && l.contains(&format!("pid={} ", trapped.id())),
    );
    println!("after {:?}: {line}", started.elapsed());
    assert!(line.contains("fuse"), "{line}");

    honest_service_profiled_by(&memprof, dir.path(), "memprof-test-hostile-fuse-honest");
    let _ = trapped.kill();
    let _ = trapped.wait();
    let (code, out) = memprof.stop();
    assert_eq!(code, Some(0), "{out}");
    drop(fuse);
}
