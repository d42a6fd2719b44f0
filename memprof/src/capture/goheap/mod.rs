//! Go heap profiles without an endpoint. Every Go program keeps its heap profile in its own
//! memory (the bucket list at `runtime.mbuckets`); memprof finds it when it first sees the
//! process (`discover`), reads it at the threshold with `process_vm_readv` (`read`) or takes
//! what the kernel read at the kill, decodes the release's layout (`layout`), symbolizes from
//! the executable kept open since discovery (`symbols`) and writes Go's own pprof heap format
//! (`profile`, `proto`).
pub mod discover;
pub mod layout;
pub mod profile;
mod proto;
pub mod read;
pub mod symbols;
