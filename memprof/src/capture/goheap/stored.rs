//! What was stored per process, and the captures of it still in flight: the at-kill profile and
//! the OOM record name the profiles that came before them, once those are stored.
use std::time::Duration;

use super::registry::Registry;
use crate::assess::ProcKey;

/// A capture in flight (see `Registry::begin`).
pub struct Pending {
    registry: Registry,
    key: ProcKey,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.registry.pending.lock().expect("pending");
        if let Some(n) = pending.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.key);
            }
        }
    }
}

impl Registry {
    /// Marks a capture of `key` in flight until the guard is dropped.
    pub fn begin(&self, key: ProcKey) -> Pending {
        *self
            .pending
            .lock()
            .expect("pending")
            .entry(key)
            .or_default() += 1;
        Pending {
            registry: self.clone(),
            key,
        }
    }

    /// The keys stored for `key`, once no capture of it is in flight (or `wait` passed): a
    /// threshold capture may still be reading or symbolizing when the kill comes.
    pub async fn stored_after_pending(&self, key: ProcKey, wait: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.pending.lock().expect("pending").contains_key(&key)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stored = self.stored.lock().expect("stored");
        stored.get(&key).cloned().unwrap_or_default()
    }

    /// How many profiles of the process were taken so far (stored or spooled).
    pub fn stored_count(&self, key: ProcKey) -> usize {
        self.stored
            .lock()
            .expect("stored")
            .get(&key)
            .map_or(0, Vec::len)
    }

    /// Remembers a stored profile, for the at-kill profile to name its predecessors.
    pub fn stored(&self, key: ProcKey, object_key: &str) {
        let mut stored = self.stored.lock().expect("stored");
        stored.entry(key).or_default().push(object_key.to_string());
    }
}
