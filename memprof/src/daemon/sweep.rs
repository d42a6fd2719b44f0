//! Every `SWEEP_EVERY`: state of exited processes is dropped everywhere it is kept, and the
//! kernel's process map is checked for refusals.
use tracing::warn;

use super::LoopState;
use crate::assess::{Forget, Running};

impl LoopState {
    pub(super) fn sweep(&mut self) {
        if let Some(running) = Running::now(|pid| self.table.newest(pid).map(|k| k.start)) {
            self.forget(Forget::Exited(&running));
        }
        if let Some(arm) = &self.arm {
            let (full, shared) = arm.refused();
            let (was_full, was_shared) = self.refused;
            if full > was_full {
                warn!(
                    max_procs = arm.max_procs,
                    refused = full - was_full,
                    "the kernel's process map is full; processes beyond it are only seen by the \
                     safety-net poll every {:?} (raise MEMPROF_MAX_PROCS)",
                    self.poll_every
                );
            }
            if shared > was_shared {
                // Not inside the macro: a filtered-out line would skip it.
                let judged_again = arm.recount();
                warn!(
                    share = crate::kernel::group_share(arm.max_procs),
                    refused = shared - was_shared,
                    judged_again,
                    "processes of a container that holds its share of the kernel's process map \
                     (an eighth of MEMPROF_MAX_PROCS) are only seen by the safety-net poll \
                     every {:?} (judged again after each sweep)",
                    self.poll_every
                );
            }
            self.refused = (full, shared);
        }
    }
}
