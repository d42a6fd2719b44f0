//! memprof's integration tests, in one binary (the crate and its dependencies are linked once).
//! Most need root and run on real parts: the kernel's BPF, memory cgroups and the OOM killer, a
//! Go runtime, an S3 server speaking SigV4, a pod's namespaces. Under `CI=true` a missing
//! prerequisite fails the test; elsewhere it is skipped with a line saying what is missing.
//! `cargo xtask test` runs them one at a time (they measure and share the node's kernel).

/// Real parts the tests build on: cgroups, pods, sidecars, the S3 server, Go programs, bpffs.
mod common;

/// The memory accounting at the kill: Go's heap and memory outside it, each where it went.
mod accounting;

/// The BPF programs on this kernel: load, attach, arm a level, the crossing event.
mod bpf;
/// A fork storm in its own PID namespace takes only its share of the kernel's process map.
mod bpf_groups;
/// The browser harness on pages of its own: driven as a user would, and its checks can fail.
mod browser_check;
/// The command line: configuration errors exit 2 with one line; `--help` lists every option.
mod cli;
/// Delivery through S3 outages and refused credentials, from the spool, byte-identical, once.
mod delivery;
/// `memprof doctor`: all green, a missing bucket, the poll fallback, one Go process.
mod doctor;
/// Detection to a stored profile before the OOM killer, per detector (eBPF, poll).
mod e2e;
/// One object per profile whenever memprof is stopped (SIGKILL, SIGTERM mid-PUT).
mod exactly_once;
/// memprof's start fits a small memory cgroup, the verifier's kernel memory included.
mod footprint;
/// Go heap profiles read from a process's memory, checked against the runtime's own.
mod goheap;
/// Go programs built by others (Debian's podman, stripped): build IDs, and the heap read from memory.
mod goheap_debian;
/// A Go program with heap profiling off gets it turned on when asked.
mod goheap_enable;
/// Go services with no pprof endpoint: the heap at the threshold and at the kernel's kill.
mod goheap_oom;
/// A small at-kill ring buffer keeps the buckets holding live memory first.
mod goheap_ring;
/// Hostile tenants: forged cgroup files, a changed root, control characters, bad endpoints.
mod hostile;
/// memprof's image (`cargo xtask image`) run by podman as a sidecar in a pod, until the OOM kill.
mod image;
/// A 1 GiB profile streams through the spool to S3 while memprof's RSS stays small.
mod large;
/// The kernel's listing of processes, against procfs and the cgroup file system.
mod listing;
/// One memprof per node watching a pod laid out as the kubelet lays it out.
mod node;
/// memprof as a sidecar in a pod: the service's own limit, two pods kept apart.
mod pod;
/// The container trigger: a container's charge as a whole, page cache not counted.
mod pod_container;
/// Process lifecycles and policy: reused PIDs, repeat crossings, level series, kills, scope.
mod pod_policy;
/// Captures meeting trouble: a full kernel map, retries, an endpoint failing, a resized limit.
mod pod_recovery;
/// Least privilege per mode: the manifest's capabilities suffice, each one missing is said.
mod privilege;
/// The morning after: an OOM kill alerted to webhooks and reported as a page, read in chromium.
mod report;
/// The rss_stat gate: detached while idle, attached as a service nears its level, in time.
mod rss_gate;
/// The metrics and health server scraped while memprof works: readiness, counts, a held loop.
mod serve;
/// Many sidecars on one node sharing one set of kernel programs through a bpffs.
mod shared;
/// The longest names Kubernetes allows, through the spool.
mod spool;
