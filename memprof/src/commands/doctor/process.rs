//! `--pid N`: one process as the daemon sees it — its limit and where it comes from
//! (`assess`), whether it runs Go, the pprof endpoint found among its sockets, and whether its
//! Go heap can be read from its memory (`capture::goheap`), as `memprof top` finds them.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use super::{Check, Section, Status};
use crate::{
    assess::{Assessor, LimitSource, Reading},
    capture::{
        goheap::{
            discover::{discover, Discovery, GoProc},
            read::{read_heap, read_word, Bounds},
            registry::Registry,
            PROFILING_OFF,
        },
        http::{endpoint::Endpoints, pprof::Pprof},
    },
    commands::human,
    config::Config,
    logs::escape,
};

/// Enough of the bucket list to know it can be walked; buckets beyond are counted, not kept.
const PROBE_BUCKETS: usize = 1000;
const PROBE_FRAMES: usize = 64 << 10;

pub(super) async fn checks(cfg: &Config, pid: u32) -> Section {
    let mut assessor = match Assessor::new(Some(cfg.pods_dir.clone())) {
        Ok(a) => a,
        Err(e) => {
            let check = Check::fail("process", format!("{e:#}"), "memprof needs /proc mounted");
            return (format!("process {pid}"), vec![check]);
        }
    };
    let Some(reading) = assessor.read(pid) else {
        let check = Check::fail(
            "process",
            format!("no process {pid} with memory of its own, as this memprof sees PIDs"),
            "give a PID from memprof's PID namespace (memprof top lists them)",
        );
        return (format!("process {pid}"), vec![check]);
    };
    let heading = format!("process {pid} ({})", escape(&reading.comm));
    let (key, comm) = (reading.key, reading.comm.clone());
    let mut checks = vec![limit(&assessor, &reading)];

    let go = Registry::new(None);
    let verdict = {
        let (go, comm) = (go.clone(), comm.clone());
        tokio::task::spawn_blocking(move || {
            let verdict = discover(pid);
            // Registered so that the endpoint's discovery probes its ports, as for any Go
            // program (the executable is parsed once, whoever asks).
            if matches!(verdict, Ok(Discovery::Go(_) | Discovery::Unreadable { .. })) {
                go.ensure(key, &comm);
            }
            verdict
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|v| v)
    };
    let pprof = Pprof::new(
        cfg.pprof_port,
        &cfg.pprof_path,
        cfg.capture_timeout,
        cfg.capture_max_bytes,
    );
    let endpoints = Endpoints::new(Arc::new(pprof), cfg.pprof_ports.clone(), go);
    let endpoint = endpoints.find(key, &comm, true).await;

    let (go_check, heap) = go_check(cfg, pid, verdict).await;
    checks.push(go_check);
    checks.push(endpoint_check(cfg, endpoint));
    match heap {
        Some(heap) => checks.push(heap_check(heap, endpoint)),
        None if endpoint.is_none() => checks.push(Check::fail(
            "heap profile",
            "neither an endpoint nor a heap readable from memory: a snapshot is all memprof \
             would store",
            "serve net/http/pprof, or see the Go line for why its heap cannot be read",
        )),
        None => {}
    }
    (heading, checks)
}

/// Whether the process runs Go, and for a Go program whether its heap can be read from
/// memory (or why not).
async fn go_check(
    cfg: &Config,
    pid: u32,
    verdict: anyhow::Result<Discovery>,
) -> (Check, Option<Result<String, String>>) {
    match verdict {
        Ok(Discovery::Go(go)) => {
            let check = Check::ok(
                "Go",
                format!("{}, {}", escape(&go.version), escape(&go.path)),
            );
            (check, Some(readable(cfg, pid, go).await))
        }
        Ok(Discovery::Unreadable { version, reason }) => {
            (Check::ok("Go", escape(&version)), Some(Err(reason)))
        }
        Ok(Discovery::NotGo) => {
            let check = Check::warn(
                "Go",
                "not a Go program: memprof stores a snapshot of it, not a heap profile",
                "nothing to do unless it should be Go (other runtimes are not profiled yet)",
            );
            (check, None)
        }
        Ok(Discovery::Refused(why)) => {
            let check = Check::warn(
                "Go",
                format!("its executable is not parsed: {}", escape(&why)),
                "a heap profile comes from its endpoint only",
            );
            (check, None)
        }
        Ok(Discovery::Denied) => (exe_unread("permission denied"), None),
        Err(e) => (exe_unread(&escape(&format!("{e:#}"))), None),
    }
}

/// The process's executable could not be read, and why (escaped).
fn exe_unread(why: &str) -> Check {
    Check::warn(
        "Go",
        format!("its executable could not be read: {why}"),
        "memprof needs SYS_PTRACE to open another container's executable",
    )
}

fn limit(assessor: &Assessor, r: &Reading) -> Check {
    let cgroup = escape(&assessor.cgroup_path(&r.key));
    let size = format!("{} bytes ({})", r.limit, human(r.limit));
    let rss = format!("RSS {} ({:.1} %)", human(r.rss), r.percent());
    match r.limit_source {
        LimitSource::Cgroup => Check::ok(
            "limit",
            format!("{size} from its memory cgroup {cgroup}; {rss}"),
        ),
        LimitSource::Unlimited => Check::warn(
            "limit",
            format!("{size}, the node's MemTotal: its memory cgroup {cgroup} sets none; {rss}"),
            "set a memory limit on its container, or MEMORY_CRITICAL_BYTES for processes \
             without one",
        ),
        LimitSource::Unresolved => Check::fail(
            "limit",
            format!("{size}, the node's MemTotal: its memory cgroup was not found; {rss}"),
            "memprof needs SYS_PTRACE and, for a node-wide memprof, the node's cgroup \
             hierarchy mounted",
        ),
    }
}

fn endpoint_check(cfg: &Config, endpoint: Option<SocketAddr>) -> Check {
    match endpoint {
        Some(addr) => Check::ok(
            "endpoint",
            format!("http://{addr}{} in its network namespace", cfg.pprof_path),
        ),
        None => Check::warn(
            "endpoint",
            "no pprof endpoint found among its listening sockets",
            "serve net/http/pprof (on PPROF_PORT, or list its port in MEMPROF_PPROF_PORTS)",
        ),
    }
}

/// Whether the heap can be read from memory, or why not: the rate the runtime samples at
/// must be non-zero and the bucket list walkable.
async fn readable(cfg: &Config, pid: u32, go: GoProc) -> Result<String, String> {
    let bounds = Bounds {
        max_buckets: PROBE_BUCKETS,
        max_frames: PROBE_FRAMES,
        deadline: cfg.capture_timeout.max(Duration::from_secs(1)),
        max_profile_bytes: cfg.capture_max_bytes,
    };
    tokio::task::spawn_blocking(move || {
        let rate = read_word(pid, go.rate).map_err(|e| format!("{e:#}"))?;
        if rate == 0 {
            return Err(match go.profiler_off {
                true => PROFILING_OFF.to_string(),
                false => "runtime.MemProfileRate is 0: the program turned the heap profile off"
                    .to_string(),
            });
        }
        let snap = read_heap(pid, &go, bounds).map_err(|e| format!("{e:#}"))?;
        Ok(format!(
            "variables found in {}, MemProfileRate {rate}, bucket list readable ({} buckets)",
            go.found_in(),
            snap.buckets.len() as u64 + snap.left_out
        ))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))
}

/// Without an endpoint, a heap that cannot be read leaves only a snapshot.
fn heap_check(heap: Result<String, String>, endpoint: Option<SocketAddr>) -> Check {
    let reason = match heap {
        Ok(how) => return Check::ok("heap in memory", format!("readable: {how}")),
        Err(reason) => escape(&reason),
    };
    let mut check = Check::fail(
        "heap in memory",
        format!("not readable: {reason}"),
        "serve net/http/pprof, which also turns the heap profile on",
    );
    if endpoint.is_some() {
        check.status = Status::Warn;
        check.fix = Some("none needed while its endpoint serves the profile".into());
    }
    check
}
