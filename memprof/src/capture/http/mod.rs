//! The HTTP source: Go's `net/http/pprof` endpoint of a process, found among its listening
//! sockets (`listener`, `endpoint`) and fetched (`pprof`) over a socket made in the process's
//! own network namespace (`netns`), streamed into wherever `Out` says: the spool, named before
//! the first byte (`download`).
pub mod download;
pub mod endpoint;
mod listener;
mod netns;
pub mod pprof;

use anyhow::Result;

use crate::deliver::streaming::Incoming;

/// Where a download goes.
pub enum Out {
    Spool(Box<Incoming>),
    Memory(Vec<u8>),
}

impl Out {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        match self {
            Out::Spool(incoming) => incoming.write(chunk).await,
            Out::Memory(bytes) => {
                bytes.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        match self {
            Out::Spool(incoming) => incoming.written(),
            Out::Memory(bytes) => bytes.len() as u64,
        }
    }
}
