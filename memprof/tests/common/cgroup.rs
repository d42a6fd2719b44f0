//! A real memory cgroup with a limit, v1 or v2, removed (with what is left in it) on drop.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// A fresh memory cgroup with a limit; v1 where the memory controller is mounted there,
/// otherwise v2. Removed (after killing what is left in it) on drop.
pub struct MemCgroup {
    pub dir: PathBuf,
    pub v2: bool,
}

impl MemCgroup {
    pub fn available() -> bool {
        Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
            || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.contains("memory"))
    }

    pub fn new(name: &str, limit: u64) -> Self {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(name), false)
        } else {
            let root = Path::new("/sys/fs/cgroup");
            std::fs::write(root.join("cgroup.subtree_control"), "+memory")
                .expect("enabling the memory controller");
            (root.join(name), true)
        };
        Self::create(dir, v2, limit)
    }

    /// A cgroup below this one (a container inside a pod's cgroup).
    pub fn child(&self, name: &str, limit: u64) -> Self {
        if self.v2 {
            std::fs::write(self.dir.join("cgroup.subtree_control"), "+memory")
                .expect("enabling the memory controller for children");
        }
        Self::create(self.dir.join(name), self.v2, limit)
    }

    fn create(dir: PathBuf, v2: bool, limit: u64) -> Self {
        let cg = MemCgroup { dir, v2 };
        cg.remove_children();
        cg.kill_all();
        let _ = std::fs::remove_dir(&cg.dir);
        std::fs::create_dir(&cg.dir).expect("creating the test cgroup");
        let (file, swap) = if v2 {
            ("memory.max", Some("memory.swap.max"))
        } else {
            ("memory.limit_in_bytes", None)
        };
        std::fs::write(cg.dir.join(file), limit.to_string()).expect("setting the memory limit");
        if let Some(swap) = swap {
            let _ = std::fs::write(cg.dir.join(swap), "0");
        }
        cg
    }

    /// Starts `bin` with `args` in this cgroup (it joins before its exec), once it printed
    /// its first line (`ready …`).
    pub fn start(&self, bin: &Path, args: &[&str]) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let procs = self.procs_file();
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args).stdout(std::process::Stdio::piped());
        // SAFETY: only async-signal-safe work (a write) between fork and exec.
        unsafe { cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string())) };
        let mut child = cmd.spawn().unwrap();
        super::first_line(&mut child);
        child
    }

    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// How many processes the OOM killer has killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Removes what is left below this cgroup (a crashed run's containers).
    fn remove_children(&self) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                drop(MemCgroup {
                    dir: entry.path(),
                    v2: self.v2,
                });
            }
        }
    }

    fn kill_all(&self) {
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        self.remove_children();
        self.kill_all();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
