//! One memprof per node, in the host's PID, network and mount namespaces, watching a pod laid
//! out as the kubelet lays it out: the pod's cgroup at `kubepods/burstable/pod<uid>` with the
//! container's below it named by its container ID (cgroupfs driver, containerd), the pod in its
//! own PID and network namespaces, the Go service listening on its loopback only, on a port
//! that is not `PPROF_PORT`'s default, beside an application port that serves no profile; the
//! kubelet's `/var/log/pods/<namespace>_<pod>_<uid>/<container>/` tree with two containers and
//! the termination-message file mounted into the service's container.
use std::{path::PathBuf, process::Command, time::Duration};

use crate::common::{
    pod::{Container, Pod, Spec},
    sidecar::*,
    *,
};

const UID: &str = "5e0c7a1d-8f2b-4c3e-9d4a-1b2c3d4e5f60";
const CONTAINER_ID: &str = "9c1e4f7a2b5d8e0f3a6c9b2e5f8a1d4c7b0e3f6a9c2d5e8b1f4a7c0d3e6f9a2b";
const NAMESPACE: &str = "shop";
const POD: &str = "cart-7d9f5";

/// The pod, its QoS parents and the node's trees; fields drop in order (pod first).
/// The node overlay's workload, whose capabilities memprof runs with here.
pub(crate) const MANIFEST: &str = "overlays/node/daemonset.yaml";

pub(crate) struct KubePod {
    pub(crate) pod: Pod,
    _burstable: MemCgroup,
    _kubepods: MemCgroup,
    /// The node's `/var/log/pods`.
    pods_dir: PathBuf,
    /// The kubelet's termination-message file for container `cart`.
    message: PathBuf,
}

pub(crate) fn kube_pod(index: u8) -> Option<KubePod> {
    prerequisites()?;
    if !require(have("setpriv"), "util-linux's setpriv") {
        return None;
    }
    let kubepods = MemCgroup::new("kubepods", 8 << 30);
    let burstable = kubepods.child("burstable", 8 << 30);
    let pod = Pod::in_cgroup(
        "kube",
        index,
        burstable.child(&format!("pod{UID}"), 2 << 30),
    );
    let root = pod.work_dir().to_path_buf();
    let pods_dir = root.join("var/log/pods");
    for container in ["cart", "istio-proxy"] {
        let dir = pods_dir
            .join(format!("{NAMESPACE}_{POD}_{UID}"))
            .join(container);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.log"), "").unwrap();
    }
    let message = root.join(format!(
        "var/lib/kubelet/pods/{UID}/containers/cart/8f3a2b1c"
    ));
    std::fs::create_dir_all(message.parent().unwrap()).unwrap();
    std::fs::write(&message, "").unwrap();
    std::fs::write(root.join("termination-log"), "").unwrap();
    Some(KubePod {
        pod,
        _burstable: burstable,
        _kubepods: kubepods,
        pods_dir,
        message,
    })
}

impl KubePod {
    /// The service as container `cart`: the termination-message file mounted into its mount
    /// namespace as the kubelet does, pprof on the pod's loopback at `port`, an application
    /// port beside it.
    pub(crate) fn service(&self, limit: u64, port: u16, rate: &str) -> Container {
        let root = self.pod.work_dir();
        let go = go_service()
            .expect("the Go test service")
            .display()
            .to_string();
        let (src, dst) = (
            self.message.display().to_string(),
            root.join("termination-log").display().to_string(),
        );
        let (addr, also) = (
            format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{}", port - 1),
        );
        let cmd = [
            "sh",
            "-c",
            r#"mount --bind "$0" "$1" && shift && exec "$@""#,
            &src,
            &dst,
            &go,
            "-addr",
            &addr,
            "-also",
            &also,
            "-rate",
            rate,
        ];
        let out = root.join("cart.out");
        let spec = Spec {
            name: CONTAINER_ID,
            limit,
            cmd: &cmd,
            env: &[],
            out: &out,
        };
        let c = self.pod.container(&spec, None);
        wait_for("the service to listen", Duration::from_secs(20), || {
            std::fs::read_to_string(&out).is_ok_and(|o| o.contains("ready pid="))
        });
        c
    }

    pub(crate) fn env(&self) -> (&'static str, String) {
        ("MEMPROF_PODS_DIR", self.pods_dir.display().to_string())
    }
}

#[test]
fn node_memprof_profiles_a_pod_behind_its_own_loopback() {
    let (limit_mib, rate) = scaled(512, 100);
    let Some(kp) = kube_pod(12) else {
        return;
    };
    let s3 = S3Server::start("profiles");
    let mut env = s3.env();
    env.push(kp.env());
    // With only the capabilities deploy/overlays/node grants, and no_new_privs as it sets.
    let setpriv = with_capabilities(&manifest_capabilities(MANIFEST));
    let setpriv: Vec<&str> = setpriv.iter().map(String::as_str).collect();
    let memprof = Memprof::spawn_via(&setpriv, &["--detector", "btf"], &env);
    // A program that is not Go, listening in the same pod: it is not sent probes.
    let web_log = kp.pod.work_dir().join("web.out");
    let web = kp.pod.container(
        &Spec {
            name: &CONTAINER_ID.replace('9', "8"),
            limit: 256 * MIB,
            cmd: &[
                "python3",
                "-m",
                "http.server",
                "7090",
                "--bind",
                "127.0.0.1",
            ],
            env: &[],
            out: &web_log,
        },
        None,
    );
    let app = kp.service(limit_mib * MIB, 7071, &rate);
    // From the host's namespace the pod's loopback is out of reach.
    assert!(std::net::TcpStream::connect("127.0.0.1:7071").is_err());

    let found = memprof.wait_for_log(
        &format!("pprof endpoint found pid={}", app.host_pid),
        Duration::from_secs(30),
    );
    println!("node: {found}");
    assert!(
        found.contains("addr=127.0.0.1:7071") && found.contains("probed=true"),
        "{found}"
    );
    let key = wait_key(&s3.client(), app.host_pid, &app, &[], &|| memprof.output());
    let line = memprof.wait_for_log(&key, Duration::from_secs(5));
    println!("node: {line}");
    assert!(
        key.starts_with(&format!("memprof/{NAMESPACE}/{POD}/cart/")),
        "the key does not name the pod's namespace, pod and container: {key}"
    );
    assert!(
        line.contains("source=\"endpoint\"")
            && line.contains(&format!("who=\"{NAMESPACE}/{POD}/cart\""))
            && line.contains(&format!("limit={}", limit_mib * MIB)),
        "{line}"
    );
    let top = pprof_top(&s3.client().get(&key));
    assert!(top.contains("main.leakyRetain"), "{top}");
    memprof.wait_for_log(
        &format!("pid={} ports=[7090]", web.host_pid),
        Duration::from_secs(30),
    );
    let web_said = std::fs::read_to_string(&web_log).unwrap_or_default();
    assert!(
        !web_said.contains("GET"),
        "a probe reached the Python server:\n{web_said}"
    );
    app.wait_oom_kill();
    let oom = memprof.wait_for_log(
        &format!("OOM killer chose process pid={} ", app.host_pid),
        Duration::from_secs(10),
    );
    assert!(
        oom.contains(&format!("who=\"{NAMESPACE}/{POD}/cart\"")),
        "{oom}"
    );
}

/// `memprof capture --pid` and `memprof top` as an engineer on the node runs them.
#[test]
fn capture_pid_and_top_name_the_pod() {
    let Some(kp) = kube_pod(13) else {
        return;
    };
    let app = kp.service(512 * MIB, 7073, "5");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("profiles");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_memprof"))
            .args(dir_args(dir.path()))
            .args(args)
            .env(kp.env().0, kp.env().1)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    let pid = app.host_pid.to_string();
    // A heap profile shows what the last GC saw: a service just started may have none yet,
    // so the capture is repeated until the leak's samples are in it.
    let mut tries = 0;
    let (stdout, stderr, profile) = loop {
        let (code, stdout, stderr) = run(&["capture", "--pid", &pid]);
        assert_eq!(code, Some(0), "{stderr}");
        let profile =
            std::fs::read(local.join(stdout.trim())).expect("the profile in the local directory");
        tries += 1;
        if pprof_top(&profile).contains("main.leakyRetain") || tries == 40 {
            break (stdout, stderr, profile);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    println!("capture (try {tries}): {stdout}{stderr}");
    let key = stdout.trim();
    assert!(
        key.starts_with(&format!("memprof/{NAMESPACE}/{POD}/cart/"))
            && key.ends_with(&format!("_pid-{pid}_manual.heap.pb.gz")),
        "{key}"
    );
    assert!(stderr.contains("source=\"endpoint\""), "{stderr}");
    assert!(
        pprof_top(&profile).contains("main.leakyRetain"),
        "no profile named the leak in {tries} captures"
    );

    let (code, stdout, stderr) = run(&["top", "--iterations", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pid.as_str()))
        .unwrap_or_else(|| panic!("no row for {pid}:\n{stdout}"));
    println!("top: {}\ntop: {row}", stdout.lines().nth(1).unwrap_or(""));
    for want in [
        &format!("{NAMESPACE}/{POD}/cart"),
        "leaky",
        "512.0Mi",
        "127.0.0.1:7073",
    ] {
        assert!(row.contains(want), "{want} missing in: {row}");
    }

    let (code, _, stderr) = run(&["capture", "--pid", "999999999"]);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("999999999"), "{stderr}");
}
