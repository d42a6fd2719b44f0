//! Room in the spool for one more profile, as its bounds say (see `bounds`): older profiles
//! dropped to keep the newest, or the new one refused to keep the oldest — each logged with
//! what it costs.
use std::path::Path;

use tracing::{error, warn};

use super::{
    bounds::{self, Room},
    Deliverer,
};

impl Deliverer {
    /// Makes room for a profile of `len` bytes under `key` (already in the spool as `own`,
    /// when streamed there): whether it may stay in the spool. `None` when the spool cannot
    /// be read (the profile is sent all the same).
    pub(super) async fn make_room(&self, key: &str, len: u64, own: Option<&Path>) -> Option<bool> {
        let waiting = match self.spool.pending() {
            Ok(w) => w,
            Err(e) => {
                warn!(
                    key,
                    "could not read the spool, sending the {} directly: {e:#}",
                    self.role.noun()
                );
                return None;
            }
        };
        let waiting: Vec<_> = waiting
            .into_iter()
            .filter(|e| Some(e.path.as_path()) != own)
            .collect();
        let sizes: Vec<u64> = waiting.iter().map(|e| e.bytes).collect();
        match bounds::room(&self.limits, &sizes, len) {
            Room::Refuse => {
                error!(
                    key,
                    bytes = len,
                    waiting = waiting.len(),
                    waiting_bytes = sizes.iter().sum::<u64>(),
                    limits = ?self.limits,
                    "spool full: this {} is not spooled (the oldest are kept); sending it directly",
                    self.role.noun()
                );
                Some(false)
            }
            Room::Admit { drop } => {
                for i in drop {
                    let old = &waiting[i];
                    match self.spool.remove(old).await {
                        Ok(()) => {
                            self.role.count("lost");
                            self.schedule
                                .lock()
                                .expect("schedule lock")
                                .forget(&old.key);
                            error!(
                                dropped = old.key,
                                bytes = sizes[i],
                                limits = ?self.limits,
                                for_key = key,
                                "spool full: dropped the oldest spooled {} to keep the newest",
                                self.role.noun()
                            );
                        }
                        Err(e) => warn!("{e:#}"),
                    }
                }
                Some(true)
            }
        }
    }
}
