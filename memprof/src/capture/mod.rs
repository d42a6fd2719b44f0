//! Capture: pull evidence out of a live process. Today that is the Go runtime's heap profile
//! over HTTP (`pprof`, at the port `endpoint` found, in the target's network namespace: `netns`) or read from the process's memory (`goheap`), at the threshold (`job`)
//! and at the kill (`at_kill`); when neither yields a profile, a generic `snapshot` of what the
//! kernel says of the process is stored instead. Other kinds (JVM) plug in here.
pub mod at_kill;
pub mod endpoint;
pub mod goheap;
pub mod job;
pub mod listener;
pub mod naming;
pub mod netns;
pub mod oom_record;
pub mod pprof;
pub mod seen;
pub mod snapshot;
pub mod stream;

/// A captured profile, ready for delivery.
#[derive(Clone, Debug)]
pub struct Profile {
    /// What kind of evidence, used in the file name (e.g. "heap").
    pub kind: &'static str,
    /// File extension (e.g. "pb.gz").
    pub extension: &'static str,
    pub bytes: Vec<u8>,
}
