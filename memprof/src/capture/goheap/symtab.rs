//! The runtime's variables by name, in the executable's symbol table (a binary not stripped
//! with `-s`). Read within a time budget: each name is found by scanning for its end, and a
//! forged table can make that megabytes.
use std::time::{Duration, Instant};

use object::{Object, ObjectSymbol};

use super::{locate::Variables, program::Verdict};

/// How long the symbol table may take (a large Go service's takes milliseconds).
const SYMBOLS_BUDGET: Duration = Duration::from_secs(2);

/// The runtime's variables by name in the symbol table; `None` when it has none of them.
pub fn variables<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
) -> Result<Option<Variables>, Verdict> {
    let mut found = [None; 4];
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
            _ => continue,
        };
        found[slot] = Some(s.address());
    }
    let [Some(mbuckets), Some(cycle), Some(rate), disable] = found else {
        return Ok(None);
    };
    Ok(Some(Variables {
        mbuckets,
        cycle,
        rate,
        disable,
    }))
}

/// The address of the symbol `name`, if the table has it (looked for within the time budget).
pub fn address_of<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    name: &str,
) -> Option<u64> {
    let deadline = Instant::now() + SYMBOLS_BUDGET;
    elf.symbols()
        .take_while(|_| Instant::now() <= deadline)
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
}
