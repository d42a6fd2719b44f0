//! Each group's share of the kernel's Go-process map (`GO_PROCS`, which the at-kill walk
//! needs): one container's many Go processes take at most an eighth of it, so the others keep
//! their at-kill profiles. A group is a PID namespace below memprof's (`sys::pidns`).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use memprof_common::GoTarget;
use tracing::warn;

use crate::kernel::GoTargets;

/// The most Go processes of one group registered with the kernel.
pub const GO_SHARE: usize = memprof_common::MAX_GO_PROCS as usize / 8;

#[derive(Clone, Default)]
pub struct Shares {
    held: Arc<Mutex<HashMap<u64, usize>>>,
}

/// One registered process's part of its group's share, given back when dropped.
pub struct Ticket {
    shares: Shares,
    group: u64,
}

impl Shares {
    /// Registers process `pid` with the kernel for the at-kill walk, within its group's share:
    /// the part it holds while registered, and what became of it (for its discovery line).
    pub fn register(
        &self,
        kernel: Option<&GoTargets>,
        pid: u32,
        target: GoTarget,
    ) -> (Option<Ticket>, &'static str) {
        let Some(kernel) = kernel else {
            return (None, "unavailable");
        };
        let group = crate::sys::pidns::group_of(pid).unwrap_or(0);
        let Some(ticket) = self.take(group) else {
            warn!(
                pid,
                "the kernel will not walk this heap at the kill: its container has {GO_SHARE} Go \
                 processes registered for that already"
            );
            return (None, "share taken");
        };
        match kernel.register(pid, target) {
            Ok(()) => (Some(ticket), "registered"),
            Err(e) => {
                warn!(pid, "the kernel cannot walk this heap at the kill: {e:#}");
                (None, "full")
            }
        }
    }

    /// A part of `group`'s share, unless it is all taken.
    fn take(&self, group: u64) -> Option<Ticket> {
        let mut held = self.held.lock().expect("shares");
        let n = held.entry(group).or_default();
        if *n >= GO_SHARE {
            return None;
        }
        *n += 1;
        Some(Ticket {
            shares: self.clone(),
            group,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().expect("shares");
        if let Some(n) = held.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_takes_its_share_and_gets_it_back() {
        let shares = Shares::default();
        let mine: Vec<Ticket> = (0..GO_SHARE).map_while(|_| shares.take(1)).collect();
        assert_eq!(mine.len(), GO_SHARE);
        assert!(shares.take(1).is_none());
        assert!(shares.take(2).is_some(), "another group is not held back");
        drop(mine);
        assert!(shares.take(1).is_some());
        assert!(shares.held.lock().unwrap().len() <= 1);
    }
}
