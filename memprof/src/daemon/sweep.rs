//! Every `SWEEP_EVERY`: state of exited processes is dropped everywhere it is kept, and the
//! kernel's process map is checked for refusals.
use tracing::warn;

use super::LoopState;
use crate::assess::Forget;

impl LoopState {
    pub(super) fn sweep(&mut self) {
        self.forget(Forget::Exited);
        if let Some(arm) = &self.arm {
            let full = arm.procs_full();
            if full > self.procs_full {
                warn!(
                    max_procs = arm.max_procs,
                    refused = full - self.procs_full,
                    "the kernel's process map is full; processes beyond it are only seen by the \
                     safety-net poll every {:?} (raise MEMPROF_MAX_PROCS)",
                    self.poll_every
                );
                self.procs_full = full;
            }
        }
    }
}
