//! Capture: pull evidence out of a live process. Today that is the Go runtime's heap profile
//! over HTTP (`http`: the endpoint found among the process's sockets, fetched in its network
//! namespace and streamed into the spool by `download`) or read from the process's memory
//! (`goheap`), at the threshold (`job`)
//! and at the kill (`at_kill`); when neither yields a profile, a generic `snapshot` of what the
//! kernel says of the process is stored instead. Other kinds (JVM) plug in here.
pub mod at_kill;
mod download;
pub mod goheap;
pub mod http;
pub mod job;
pub mod naming;
pub mod oom_record;
mod processes;
pub mod seen;
pub mod snapshot;

/// A captured profile, ready for delivery.
#[derive(Clone, Debug)]
pub struct Profile {
    /// What kind of evidence, used in the file name (e.g. "heap").
    pub kind: &'static str,
    /// File extension (e.g. "pb.gz").
    pub extension: &'static str,
    pub bytes: Vec<u8>,
}
