//! A download streamed into the spool as it arrives: the profile is named before the first
//! byte (its key and metadata head the spool file), so however large it is, memprof holds
//! one chunk of it at a time, and it goes on to the destination streamed from that file.
//! When the spool cannot be written the download is held in memory instead (within
//! `MEMPROF_CAPTURE_MAX_BYTES`) and sent directly, as any profile the spool refuses.
use std::{net::SocketAddr, time::Duration};

use anyhow::Result;
use tracing::warn;

use super::{pprof::Failure, Out};
use crate::capture::{handover::Stored, Capturer};

/// What a download gave: the key, whether the destination has it (or it waits in the
/// spool), its size, and how long the download itself took.
pub struct Downloaded {
    pub key: String,
    pub delivered: bool,
    pub bytes: u64,
    pub fetched: Duration,
}

impl Capturer {
    /// Downloads the heap profile `s.pid` serves at `addr` and delivers it.
    pub(in crate::capture) async fn download(
        &self,
        s: Stored<'_>,
        addr: SocketAddr,
        coming: &std::sync::atomic::AtomicBool,
    ) -> Result<Downloaded, Failure> {
        let (key, meta) = self.name(&s, "heap", "pb.gz");
        let mut out = match self.deliverer.begin(&key, &meta).await {
            Ok(incoming) => Out::Spool(Box::new(incoming)),
            Err(e) => {
                warn!(
                    key,
                    "could not spool the download, holding it in memory: {e:#}"
                );
                Out::Memory(Vec::new())
            }
        };
        let result = self
            .endpoints
            .pprof()
            .capture(s.pid, addr, &mut out, coming)
            .await;
        let fetched = s.started.elapsed();
        let bytes = out.written();
        if let Err(f) = result {
            if let Out::Spool(incoming) = out {
                self.deliverer.abandon(*incoming).await;
            }
            return Err(f);
        }
        self.goheap.stored(s.proc, &key);
        let delivered = match out {
            Out::Spool(incoming) => self.deliverer.finish(*incoming).await,
            Out::Memory(body) => self.deliverer.deliver(&key, &meta, &body).await,
        };
        if let Err(e) = &delivered {
            s.not_stored_yet(&key, e);
        }
        Ok(Downloaded {
            key,
            delivered: delivered.is_ok(),
            bytes,
            fetched,
        })
    }
}
