//! Runs the BPF integration tests and the end-to-end tests that differ there on Debian 12's 6.1
//! kernel with cgroup v2, booted with virtme-ng under emulation. 6.1 keeps `mm->rss_stat` as atomic
//! counters and has an older, stricter verifier, so it is the other half of production.
use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{cargo, guest::Guest, setup, sh, workspace_root};

/// Tests run in the guest, chosen for what 6.1 and cgroup v2 do differently (with a smaller
/// limit, leak rate and node, as emulation is slow): all of the BPF integration tests, the eBPF
/// end-to-end test, the sidecar in a pod layout and a node-level memprof beside one, which on
/// cgroup v2 give each container its own cgroup namespace, a container's working set read
/// from v2's files, the Go heap read from memory at the threshold and by 6.1's
/// verifier-checked `bpf_loop` walk at the kill, the node's shared set on 6.1's links, a
/// fork storm's share of the kernel's process map, counted with 6.1's atomic adds, and the
/// kernel's listing of processes (6.1's atomic counters, v2's cgroup inodes).
const GUEST_TESTS: &[&str] = &[
    "bpf::",
    "bpf_groups::",
    "listing::",
    "e2e::ebpf_profile_beats_the_oom_killer",
    "pod::sidecar_in_a_pod_profiles_against_the_service_limit",
    "node::node_memprof_profiles_a_pod_behind_its_own_loopback",
    "goheap_oom::without_an_endpoint_go_current",
    "pod_container::a_container_of_two_processes_is_captured_as_a_whole",
    "pod_container::a_read_only_cgroup_falls_back_to_the_poll",
    "shared::",
    "hostile::cgroup_files::",
    "doctor::",
    "serve::readyz_is_false_until_the_detector_runs",
    "privilege::a_sidecar_needs_what_its_manifest_grants_and_no_more",
];

/// Printed by the guest for each test that failed, and once at its end.
const FAILED: &str = "== FAILED in the VM: ";
const DONE: &str = "== VM stage done";

/// Runs the guest's tests, every one even after a failure, its output relayed as it comes;
/// returns those that failed.
pub fn run() -> Result<Vec<String>> {
    finish(start(true)?)
}

/// How long the guest may take: its tests take about 7 min, beside the host's.
const DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Waits for the guest's tests and returns those that failed.
pub fn finish(guest: Guest) -> Result<Vec<String>> {
    let out = guest.finish(DEADLINE)?;
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    if !lines.contains(&DONE) {
        bail!("the guest did not run its tests to their end");
    }
    Ok(lines
        .iter()
        .filter_map(|l| l.strip_prefix(FAILED))
        .map(|t| t.trim().to_string())
        .collect())
}

/// Boots the guest and starts its tests; with `live` false, what it prints goes to
/// `target/vm-test.log` until `finish` prints it (beside the host's tests, whose output it
/// would cut into).
pub fn start(live: bool) -> Result<Guest> {
    setup::all()?;
    // The guest sees the host's files read-only: build the Go test programs here.
    setup::build_testapps()?;
    let exe = test_executable()?;
    let mut script = String::new();
    for test in GUEST_TESTS {
        // A module's prefix runs all of its tests; a full name runs that one only.
        let exact = if test.ends_with("::") { "" } else { " --exact" };
        script.push_str(&format!(
            "echo '== {test}'; {} {test}{exact} --test-threads 1 --nocapture || echo '{FAILED}{test}'; ",
            exe.display()
        ));
    }
    script.push_str(&format!("echo '{DONE}'; "));
    boot(&script, live)
}

/// Boots the 6.1 guest running `script` (after the set-up every guest run needs: tracefs,
/// the memory controller for child cgroups, `CI=true`); with `live` false, what it prints goes
/// to `target/vm-test.log` until the guest is finished.
pub fn boot(commands: &str, live: bool) -> Result<Guest> {
    let kernel = kernel_6_1()?;
    if !Command::new("vng")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        setup::step("installing virtme-ng");
        sh(Command::new("pip").args(["install", "--quiet", "virtme-ng"]))?;
    }
    let mut script = format!("export PATH='{}'; ", setup::path_with_cargo_bin());
    script.push_str(
        "set -e; mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true; \
         echo +memory > /sys/fs/cgroup/cgroup.subtree_control; export CI=true; uname -r; \
         export MEMPROF_E2E_LIMIT_MIB=256 MEMPROF_E2E_RATE_MIB_S=20 MEMPROF_E2E_PODS=4 MEMPROF_E2E_CONTAINER_PCT=80; set +e; ",
    );
    script.push_str(commands);
    // vng hands its command to the guest on the kernel command line, which holds 2 KiB on
    // x86: a longer script hangs the boot. The guest reads the host's files, so pass a file.
    let file = workspace_root().join("target/vm-test.sh");
    std::fs::write(&file, &script).context("writing the guest script")?;
    let mut vng = Command::new("vng");
    vng.args(["--disable-kvm", "-r"])
        .arg(&kernel)
        .args(["--memory", "2G", "--cwd"])
        .arg(workspace_root().join("memprof"))
        .args(["--", "sh"])
        .arg(&file)
        .env("PATH", setup::path_with_cargo_bin());
    let log = (!live).then(|| workspace_root().join("target/vm-test.log"));
    Guest::start(vng, log.as_deref())
}

fn kernel_6_1() -> Result<PathBuf> {
    let find = || {
        std::fs::read_dir("/boot")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-6.1."))
            })
    };
    if let Some(k) = find() {
        return Ok(k);
    }
    setup::step("installing Debian's 6.1 kernel, qemu and busybox for the VM");
    setup::apt_install(&["qemu-system-x86", "linux-image-amd64", "busybox-static"])?;
    find().context("no /boot/vmlinuz-6.1.* after installing linux-image-amd64")
}

/// Builds the integration-test binary and returns its path.
fn test_executable() -> Result<PathBuf> {
    let name = "tests";
    let out = cargo()
        .args([
            "test",
            "-p",
            "memprof",
            "--test",
            name,
            "--no-run",
            "--message-format",
            "json",
        ])
        .current_dir(workspace_root())
        .output()?;
    if !out.status.success() {
        bail!(
            "building test {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter(|l| l.contains("\"executable\":\"") && l.contains(&format!("\"name\":\"{name}\"")))
        .find_map(|l| {
            l.split("\"executable\":\"")
                .nth(1)?
                .split('"')
                .next()
                .map(PathBuf::from)
        })
        .with_context(|| format!("no executable for test {name}"))
}
