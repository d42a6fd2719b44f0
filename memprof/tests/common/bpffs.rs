//! A bpffs of a test's own: a fresh instance, as the node's `/sys/fs/bpf` is to its pods, so
//! no test meets another's pins, nor the host's (whether or not it has a bpffs mounted).
//! Mount it before the pods that should see it: a pod's mount namespace is a copy.
use std::{path::Path, process::Command};

pub struct Bpffs(tempfile::TempDir);

impl Bpffs {
    pub fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mounting a bpffs at {}", dir.path().display());
        Bpffs(dir)
    }

    pub fn path(&self) -> String {
        self.0.path().display().to_string()
    }

    /// Everything below `memprof/` (pins and tenant directories), sorted.
    pub fn pins(&self) -> Vec<String> {
        fn walk(dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                out.push(entry.file_name().to_string_lossy().into_owned());
                if entry.path().is_dir() {
                    walk(&entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0.path().join("memprof"), &mut out);
        out.sort();
        out
    }

    pub fn root(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Bpffs {
    /// Unmounting frees whatever a killed memprof left pinned.
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Loaded BPF programs named `name`, node-wide (what `bpftool prog` lists).
pub fn programs_named(name: &str) -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .count()
}
