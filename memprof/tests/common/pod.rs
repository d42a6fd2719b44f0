//! A Kubernetes pod's layout, built from the kernel's parts as runc and containerd build it:
//! one PID namespace and one network namespace shared by the pod's containers (as with
//! `shareProcessNamespace: true`), and per container its own memory cgroup below the pod's and
//! its own mount namespace whose `/sys/fs/cgroup` shows only that cgroup — on cgroup v1 a bind
//! mount of the container's directory over `/sys/fs/cgroup/memory` (runc), on v2 a cgroup
//! namespace rooted at the container's cgroup with a fresh cgroup2 mount (containerd).
//! The pod reaches the host over a veth link (`10.231.<index>.2` → `10.231.<index>.1`).
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{wait_for, MemCgroup};

/// Run by `nsenter` inside the pod: joins the container's cgroup, then gives the container its
/// own mount namespace with only its own cgroup visible, and runs the command.
const CONTAINER_SH: &str = r#"
set -e
cg=$1; v2=$2; ro=$3; shift 3
if [ "$v2" = 1 ]; then
    # The cgroup namespace is rooted where the process is when it is created: join first.
    echo $$ > "$cg/cgroup.procs"
    # The node's cgroup2 mount is replaced: the same file system cannot be mounted on its own root.
    exec unshare --mount --cgroup sh -c 'umount -l /sys/fs/cgroup && mount -t cgroup2 -o "$0" none /sys/fs/cgroup && exec "$@"' "$ro" "$@"
fi
# v1: join the cgroup only once the container's view is in place (read-only when asked), as a
# runtime's container is only seen in its cgroup with its final mounts; the cgroup's file is
# opened before the view hides it.
exec 3>"$cg/cgroup.procs"
exec unshare --mount sh -c 'mount --bind "$0" /sys/fs/cgroup/memory && mount -o "remount,bind,$1" /sys/fs/cgroup/memory && echo $$ >&3 && exec 3>&- && shift && exec "$@"' "$cg" "$ro" "$@"
"#;

pub struct Pod {
    pub name: String,
    /// The namespaces' holder: `unshare … sleep` (PID 1 of the pod is its child).
    holder: Child,
    /// Host PID of the pod's PID 1, whose namespaces containers join.
    init: u32,
    pub cgroup: MemCgroup,
    index: u8,
    dir: tempfile::TempDir,
    /// Containers see their cgroup read-only, as runc and containerd mount it in unprivileged
    /// containers.
    pub read_only_cgroups: bool,
}

/// What a container runs: its name (and cgroup's), memory limit, command, environment, and
/// the file its output goes to.
pub struct Spec<'a> {
    pub name: &'a str,
    pub limit: u64,
    pub cmd: &'a [&'a str],
    pub env: &'a [(&'a str, String)],
    pub out: &'a Path,
}

/// A container's main process.
pub struct Container {
    pub cgroup: MemCgroup,
    /// `nsenter`, which waits for the container's process.
    pub child: Child,
    pub host_pid: u32,
    /// The PID as the pod (and a sidecar in it) sees it.
    pub pid: u32,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("running ip");
    assert!(st.success(), "ip {args:?} failed");
}

impl Pod {
    /// A pod named `name`; `index` (1..=250) picks its link's addresses and must be unique
    /// among the pods that exist at once.
    pub fn new(name: &str, index: u8) -> Self {
        Self::in_cgroup(
            name,
            index,
            MemCgroup::new(&format!("memprof-test-{name}"), 2 << 30),
        )
    }

    /// A pod whose cgroup is `cgroup` (e.g. where the kubelet would put it).
    pub fn in_cgroup(name: &str, index: u8, cgroup: MemCgroup) -> Self {
        let holder = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--net",
                "sleep",
                "infinity",
            ])
            // unshare complains when PID 1 is killed at teardown; nothing to see.
            .stderr(Stdio::null())
            .spawn()
            .expect("starting unshare");
        let mut init = 0;
        let children = format!("/proc/{0}/task/{0}/children", holder.id());
        wait_for("the pod's PID 1", Duration::from_secs(10), || {
            init = std::fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            init != 0
        });
        let pod = Pod {
            name: name.into(),
            holder,
            init,
            cgroup,
            index,
            dir: tempfile::tempdir().unwrap(),
            read_only_cgroups: false,
        };
        std::fs::write(pod.dir.path().join("container.sh"), CONTAINER_SH).unwrap();
        let veth = pod.veth();
        // A crashed run's link, if any.
        let _ = Command::new("ip")
            .args(["link", "del", &veth])
            .stderr(Stdio::null())
            .status();
        let netns = format!("/proc/{init}/ns/net");
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", pod.host_addr()),
            "dev",
            &veth,
        ]);
        ip(&["link", "set", &veth, "up"]);
        let inside = |args: &[&str]| {
            let st = Command::new("nsenter")
                .arg(format!("--net={netns}"))
                .arg("ip")
                .args(args)
                .status()
                .unwrap();
            assert!(st.success(), "ip {args:?} in the pod failed");
        };
        inside(&[
            "addr",
            "add",
            &format!("10.231.{index}.2/30"),
            "dev",
            "eth0",
        ]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        pod
    }

    fn veth(&self) -> String {
        format!("mpt{}", self.index)
    }

    /// The host's end of the pod's link: a server listening here is reachable from the pod.
    pub fn host_addr(&self) -> String {
        format!("10.231.{}.1", self.index)
    }

    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a container as `spec` says; with `pid`, its process must get that PID in the
    /// pod (set through the namespace's `ns_last_pid`, as PID reuse would hand it out).
    pub fn container(&self, spec: &Spec, pid: Option<u32>) -> Container {
        for _ in 0..30 {
            let c = self.start(spec, pid);
            if pid.is_none_or(|pid| c.pid == pid) {
                return c;
            }
            // Another process of the pod forked in between, or a thread of memprof's (its
            // blocking pool comes and goes in the pod's PID namespace) holds the PID for a
            // while: try again a moment later.
            drop(c);
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "could not start a process with PID {pid:?} in pod {}",
            self.name
        );
    }

    /// The pod's next processes (and memprof's next threads in it) get PIDs from `floor` on:
    /// two pods set apart this way show whose PID a profile carries, whatever PIDs memprof's
    /// own threads hold meanwhile.
    pub fn next_pids_from(&self, floor: u32) {
        let st = Command::new("nsenter")
            .args(["--target", &self.init.to_string(), "--pid", "--mount"])
            .args([
                "sh",
                "-c",
                &format!("echo {} > /proc/sys/kernel/ns_last_pid", floor - 1),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "setting ns_last_pid in pod {}", self.name);
    }

    fn start(&self, spec: &Spec, pid: Option<u32>) -> Container {
        let cgroup = self.cgroup.child(spec.name, spec.limit);
        let script = self.dir.path().join("container.sh");
        // With a wanted PID, the forked `sh` is the container's process: `ns_last_pid` + 1.
        let launcher = match pid {
            Some(pid) => format!(
                "echo {} > /proc/sys/kernel/ns_last_pid; sh \"$@\" & wait",
                pid - 1
            ),
            None => "exec sh \"$@\"".into(),
        };
        let log = std::fs::File::create(spec.out).unwrap();
        let child = Command::new("nsenter")
            .args([
                "--target",
                &self.init.to_string(),
                "--pid",
                "--net",
                "--mount",
            ])
            .args(["sh", "-c", &launcher, "sh"])
            .arg(&script)
            .arg(&cgroup.dir)
            .arg(if cgroup.v2 { "1" } else { "0" })
            .arg(if self.read_only_cgroups { "ro" } else { "rw" })
            .args(spec.cmd)
            .envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting nsenter");
        let mut host_pid = 0;
        wait_for("the container's process", Duration::from_secs(10), || {
            host_pid = cgroup.pids().first().copied().unwrap_or(0);
            host_pid != 0
        });
        let pid = ns_pid(host_pid);
        Container {
            cgroup,
            child,
            host_pid,
            pid,
        }
    }
}

/// The innermost PID of a host process (`NSpid` in its status).
pub fn ns_pid(host_pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

impl Container {
    pub fn alive(&self) -> bool {
        self.cgroup.pids().contains(&self.host_pid)
    }

    /// Waits until the container's process is gone and checks the OOM killer took it.
    pub fn wait_oom_kill(&self) {
        wait_for(
            "the OOM killer to take the service",
            Duration::from_secs(120),
            || !self.alive(),
        );
        assert!(
            self.cgroup.oom_kills() >= 1,
            "the service was not killed by the OOM killer"
        );
    }

    /// Sends `signal` to the container's process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.host_pid as i32, signal) };
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // PID 1's death ends every process of the pod; the link goes with its namespace.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
        let _ = self.holder.wait();
        // Usually gone with the namespace already.
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth()])
            .stderr(Stdio::null())
            .status();
    }
}
