//! Hostile tenants, on real parts: every process memprof watches is untrusted. Each case is a
//! real process doing what a tenant can do — forged files, links and mounts where cgroup files
//! belong, a changed root, control characters in its name, a misbehaving pprof port — beside
//! an honest service that must still be profiled before its OOM kill.

/// A tenant's files: a changed root with control files linked to a canary and a secret, FIFOs,
/// `/dev/zero` and sparse files mounted over them, a name full of control characters.
mod cgroup_files;
/// A Go service whose DWARF is a compressed bomb, one whose entries nest a million deep.
mod dwarf;
/// Misbehaving pprof endpoints: each yields one clear line and a snapshot instead.
mod endpoints;
/// An executable on a FUSE mount whose server stopped answering.
mod fuse;
/// 50,000 mounts in a user namespace: a program on a mount past what is read is not opened.
mod mounts;
/// A terabyte sparse executable with billions of sections; a Go bucket list made a cycle.
mod programs;
/// A sidecar holding the node's bpffs finds no other pod's kernel programs to join.
mod sidecars;
/// 100,000 listening sockets beside the honest service's endpoint, in one network namespace.
mod sockets;
/// A fork storm sharing its pages, each process with a command line of nearly 6 MiB.
mod tenants;
