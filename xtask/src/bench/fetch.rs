//! Taking a profile across network namespaces: the same Go service (testapps/leaky, pprof on
//! a non-default port) once on the host's loopback and once on the loopback of its own network
//! namespace (`unshare --net`, as a pod), each profiled by `memprof capture --pid` from the
//! host's namespaces, alternating ABBA. Read from memprof's own lines: `took_ms` of "pprof
//! endpoint found" (listing the process's sockets in its namespace + one probe) and `fetch_ms`
//! of "profile stored" (socket made in the namespace, connect, GET, body).
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{kill::field, Results};
use crate::workspace_root;

struct Service {
    child: Child,
    pid: u32,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service, in a network namespace of its own with `own_netns`.
fn service(leaky: &Path, port: u16, own_netns: bool) -> Result<Service> {
    let args = [
        "-addr".to_string(),
        format!("127.0.0.1:{port}"),
        "-rate".into(),
        "20".into(),
        "-free-at".into(),
        "100".into(),
    ];
    let mut cmd = if own_netns {
        let mut c = Command::new("unshare");
        c.args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ]);
        c.arg(leaky);
        c
    } else {
        Command::new(leaky)
    };
    let child = cmd.args(&args).stdout(Stdio::null()).spawn()?;
    // unshare execs sh, which execs the service: one PID throughout.
    let pid = child.id();
    Ok(Service { child, pid })
}

fn capture(bin: &Path, pid: u32, dir: &Path) -> Result<(f64, f64)> {
    let out = Command::new(bin)
        .arg("--local-dir")
        .arg(dir.join("profiles"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args(["capture", "--pid", &pid.to_string()])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("memprof capture failed: {stderr}");
    }
    let value = |needle: &str, name: &str| {
        stderr
            .lines()
            .find(|l| l.contains(needle))
            .and_then(|l| field(l, name))
            .with_context(|| format!("no {name} in: {stderr}"))
    };
    Ok((
        value("pprof endpoint found", "took_ms")?,
        value("profile stored", "fetch_ms")?,
    ))
}

pub fn run(bin: &Path, runs: usize, results: &mut Results) -> Result<()> {
    let leaky = workspace_root().join("target/testapps/go-system/leaky");
    println!(
        "\nprofile across network namespaces (memprof capture --pid from the host's \
         namespaces, {runs} runs each, ABBA)"
    );
    let host = service(&leaky, 7301, false)?;
    let pod = service(&leaky, 7302, true)?;
    // A heap with some history before the first profile.
    std::thread::sleep(Duration::from_secs(2));
    let dir = std::env::temp_dir().join(format!("memprof-bench-fetch-{}", std::process::id()));
    let mut results_by_service: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..runs * 2 {
        let order = if (round / 2) % 2 == 0 { [0, 1] } else { [1, 0] };
        let which = order[round % 2];
        let pid = [host.pid, pod.pid][which];
        results_by_service[which].push(capture(bin, pid, &dir)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (name, r) in ["host loopback", "own netns (setns)"]
        .into_iter()
        .zip(results_by_service)
    {
        let took: Vec<f64> = r.iter().map(|x| x.0).collect();
        let fetch: Vec<f64> = r.iter().map(|x| x.1).collect();
        results.add(
            "netns fetch",
            &format!("{name}: find endpoint"),
            "ms",
            &took,
            None,
        );
        results.add("netns fetch", &format!("{name}: fetch"), "ms", &fetch, None);
    }
    results.print_group("netns fetch");
    Ok(())
}
