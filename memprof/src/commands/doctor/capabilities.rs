//! The capabilities memprof uses, from its effective set (`CapEff` in `/proc/self/status`),
//! each with what it is for (as docs/security.md says).
use super::{host, Check};

/// Bit numbers in the capability sets (uapi/linux/capability.h).
const SYS_PTRACE: u32 = 19;
const SYS_ADMIN: u32 = 21;
const PERFMON: u32 = 38;
const BPF: u32 = 39;

/// Where a missing capability is granted.
fn grant(name: &str) -> String {
    format!(
        "add {name} to the container's securityContext.capabilities.add, as memprof's manifests do"
    )
}

/// The effective set as a bit mask (empty when it cannot be read).
fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0)
}

fn held(set: u64, cap: u32) -> bool {
    set & (1 << cap) != 0
}

pub(super) fn sys_admin() -> bool {
    held(effective(), SYS_ADMIN)
}

/// Whether BPF programs can be loaded (`BPF`) and attached to tracepoints (`PERFMON`):
/// `SYS_ADMIN` stands in for both, and is the only way before 5.8.
pub(super) fn bpf_missing() -> Vec<&'static str> {
    let set = effective();
    if held(set, SYS_ADMIN) {
        return Vec::new();
    }
    [("BPF", BPF), ("PERFMON", PERFMON)]
        .into_iter()
        .filter(|&(_, cap)| !held(set, cap))
        .map(|(name, _)| name)
        .collect()
}

pub(super) fn checks() -> Vec<Check> {
    let set = effective();
    let admin = held(set, SYS_ADMIN);
    // Before 5.8 there is no BPF or PERFMON: SYS_ADMIN is what loads and attaches.
    let split = host::release_at_least(5, 8);
    let mut checks = Vec::new();
    for (name, cap_name, cap, why) in [
        ("CAP_BPF", "BPF", BPF, "loading the tracepoint programs"),
        (
            "CAP_PERFMON",
            "PERFMON",
            PERFMON,
            "attaching the tracepoint programs",
        ),
    ] {
        checks.push(match (held(set, cap) && split, admin) {
            (true, _) => Check::ok(name, format!("held: {why}")),
            (false, true) if !split => Check::ok(
                name,
                format!("not in this kernel (before 5.8): SYS_ADMIN is {why}"),
            ),
            (false, true) => Check::warn(
                name,
                format!("missing: {why}; SYS_ADMIN stands in for it"),
                grant(cap_name),
            ),
            (false, false) => Check::fail(
                name,
                format!("missing: {why}; without it, the procfs poll instead of eBPF"),
                grant(cap_name),
            ),
        });
    }
    checks.push(match crate::detect::perf_event_paranoid() {
        Some(level) if level > 2 && !admin => Check::fail(
            "perf paranoid",
            format!(
                "kernel.perf_event_paranoid is {level}: this kernel lets only SYS_ADMIN attach \
                 tracepoints, PERFMON is not enough"
            ),
            "set kernel.perf_event_paranoid=2 on the node, or add SYS_ADMIN",
        ),
        Some(level) => Check::ok(
            "perf paranoid",
            format!("kernel.perf_event_paranoid is {level}: the capabilities above attach"),
        ),
        None => Check::warn(
            "perf paranoid",
            "kernel.perf_event_paranoid unreadable",
            "mount /proc as the node does",
        ),
    });
    checks.push(match held(set, SYS_PTRACE) {
        true => Check::ok(
            "CAP_SYS_PTRACE",
            "held: opening other containers' /proc/PID/root, mountinfo and executable, and \
             reading a Go heap with process_vm_readv",
        ),
        false => Check::warn(
            "CAP_SYS_PTRACE",
            "missing: other containers' limits are unknown and no Go heap is read from memory",
            grant("SYS_PTRACE"),
        ),
    });
    checks.push(match admin {
        true => Check::ok(
            "CAP_SYS_ADMIN",
            "held: mounting tracefs, holding a shared set's links, entering a pod's network \
             namespace to reach its endpoint",
        ),
        false => Check::warn(
            "CAP_SYS_ADMIN",
            "missing: no tracefs mount where the node has none, no shared kernel programs, no \
             endpoint behind another network namespace's loopback",
            grant("SYS_ADMIN"),
        ),
    });
    checks
}
