//! Every `SWEEP_EVERY`: state of exited processes is dropped everywhere it is kept, and the
//! kernel's process map is checked for refusals. The processes are listed for it only when
//! some process was read for the first time (or refused for want of room) since the last
//! listing, or every `LIST_EVERY` sweeps: while nothing new is read, nothing new is kept, and
//! exited processes' state waits a little longer (listing /proc, and looking up every process
//! in every store, were a share of memprof's idle CPU that grew with the number of processes).
//! Endpoint discovery's sweep runs every time.
use tracing::warn;

use super::LoopState;
use crate::assess::{Forget, Running};

/// At most this many sweeps pass without a listing (five minutes at `SWEEP_EVERY`, the safety
/// net's listing period). A node where processes come and go lists at the sweep after each new
/// one; an idle one keeps what its exited processes left for at most this long.
const LIST_EVERY: u64 = 30;

impl LoopState {
    pub(super) fn sweep(&mut self) {
        self.sweeps += 1;
        let due = self.table.grown() || self.sweeps.is_multiple_of(LIST_EVERY);
        // /proc, not the kernel's listing: a directory read costs less a process than the
        // iterator's reads.
        let listed = if due {
            crate::sys::pidns::listed()
        } else {
            Vec::new()
        };
        let newest = |pid| self.table.newest(pid).map(|k| k.start);
        match Running::of(listed, newest) {
            Some(running) => {
                self.table.listed();
                self.forget(Forget::Exited(&running));
            }
            // Endpoints are still looked for every sweep: a service may bind its port late.
            None => self.capturer.rediscover(),
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
