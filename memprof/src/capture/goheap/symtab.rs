//! The runtime's variables by name, in the executable's symbol table (a binary not stripped
//! with `-s`). Read within a time budget: each name is found by scanning for its end, and a
//! forged table can make that megabytes.
use std::time::{Duration, Instant};

use object::{Object, ObjectSymbol};

use super::{locate::Variables, program::Verdict};

/// How long the symbol table may take (a large Go service's takes milliseconds).
const SYMBOLS_BUDGET: Duration = Duration::from_secs(2);

/// What the symbol table names: the runtime's variables (`None` when it lacks any of the
/// three the heap profile needs) and `runtime.memstats`.
pub struct Named {
    pub variables: Option<Variables>,
    pub memstats: Option<u64>,
}

/// The runtime's variables by name in the symbol table, in one pass within a time budget.
pub fn variables<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Result<Named, Verdict> {
    let mut found = [None; 5];
    let deadline = Instant::now() + SYMBOLS_BUDGET;
    for s in elf.symbols() {
        // Each name is found by scanning for its end: a forged table can make that megabytes.
        if Instant::now() > deadline {
            return Err(Verdict::Refused(format!(
                "its symbol table takes longer than {SYMBOLS_BUDGET:?}"
            )));
        }
        let slot = match s.name() {
            Ok("runtime.mbuckets") => 0,
            Ok("runtime.mProfCycle") => 1,
            Ok("runtime.MemProfileRate") => 2,
            Ok("runtime.disableMemoryProfiling") => 3,
            Ok("runtime.memstats") => 4,
            _ => continue,
        };
        found[slot] = Some(s.address());
    }
    let variables = match found {
        [Some(mbuckets), Some(cycle), Some(rate), disable, _] => Some(Variables {
            mbuckets,
            cycle,
            rate,
            disable,
        }),
        _ => None,
    };
    Ok(Named {
        variables,
        memstats: found[4],
    })
}
