//! A tenant's DWARF, within bounds. It may declare gigabytes behind a small compressed section,
//! or nest entries a million deep (the DWARF reader recurses once per level). So the declared
//! sizes are bounded before anything is decompressed, and the nesting is walked once per file,
//! without recursion and within a time budget, before the reader may recurse. DWARF that fails
//! either is not used (names then come from the symbol table).
//!
//! What every DWARF held at once may take is one budget, a quarter of memprof's own memory
//! limit (`limit_to`): a tenant's bomb, or a few large services captured together, find it
//! spent and are symbolized from their symbol tables instead of taking memprof down.
use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    rc::Rc,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use object::{Object, ObjectSection};

use super::program::{file_id, FileId};

pub type Reader = gimli::EndianRcSlice<gimli::RunTimeEndian>;

/// All DWARF sections together, decompressed (a large Go service has tens of MiB), and what
/// all DWARF held at once may take when memprof has no memory limit.
const DWARF_MAX: u64 = 512 << 20;
/// The budget of decompressed DWARF held at once, and what is held now.
static BUDGET: AtomicU64 = AtomicU64::new(DWARF_MAX);
static HELD: AtomicU64 = AtomicU64::new(0);
/// One section, decompressed.
const SECTION_MAX: u64 = 256 << 20;
/// The abbreviation table, parsed per unit (Go's is a few KiB).
const ABBREV_MAX: u64 = 1 << 20;
/// Nesting deeper than this is refused: Go's DWARF nests a unit, a function, its inlined calls
/// and their blocks, a dozen levels at most.
const DEPTH_MAX: isize = 256;
/// How long the nesting walk may take (a large Go service's takes well under a second).
const WALK_BUDGET: Duration = Duration::from_secs(5);
/// Files whose DWARF was walked: the verdict, kept for forks and replicas; at most this many.
const CHECKED_MAX: usize = 4096;
type Verdict = Arc<OnceLock<Result<(), String>>>;
static CHECKED: Mutex<Option<HashMap<FileId, Verdict>>> = Mutex::new(None);
/// Background vetting, one file at a time (a fork storm of new programs must not load the DWARF
/// of each at once).
static VETTING: Mutex<()> = Mutex::new(());

/// Sets the DWARF budget from memprof's own memory limit: a quarter of it, at most `DWARF_MAX`.
pub fn limit_to(own_limit: u64) {
    BUDGET.store((own_limit / 4).min(DWARF_MAX), Ordering::Relaxed);
}

/// Decompressed DWARF counted against the budget until dropped.
pub struct Held(u64);

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Takes `bytes` of the budget for other tables the tenant's executable has (Go's line table).
pub fn hold_bytes(bytes: u64) -> Result<Held> {
    hold(bytes, 1, "line table")
}

/// Takes `bytes` of the budget, or says why not (nothing taken); `share`: how much of the
/// budget may then be held (vetting ahead of a capture leaves captures half of it).
fn hold(bytes: u64, share: u64, what: &str) -> Result<Held> {
    let budget = BUDGET.load(Ordering::Relaxed) / share;
    HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        held.checked_add(bytes).filter(|&total| total <= budget)
    })
    .map_err(|held| {
        anyhow::anyhow!(
            "its {bytes} bytes of {what} do not fit memprof's DWARF budget ({held} of {budget} \
             bytes held; the budget is a quarter of memprof's memory limit)"
        )
    })?;
    Ok(Held(bytes))
}

/// The executable's DWARF, when it has some within the bounds and the budget and its nesting
/// passed (walked now, or for an earlier process of the same file); held against the budget
/// until the `Held` is dropped.
pub fn load<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    exe: &File,
) -> Result<Option<(gimli::Dwarf<Reader>, Held)>> {
    if elf.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    // A file already found wanting is not inflated again.
    if let Some(Err(e)) = verdict(exe) {
        return Err(e);
    }
    let held = hold(declared(elf)?, 1, "DWARF")?;
    let dwarf = sections(elf)?;
    checked(exe, || check_nesting(&dwarf, Instant::now() + WALK_BUDGET))?;
    Ok(Some((dwarf, held)))
}

/// Vets the executable's DWARF ahead of the first capture: once per file, one file at a time.
/// Not now when it would take more than half the budget (the capture's `load` vets it then).
pub fn vet(exe: &File) -> Result<()> {
    let _one = VETTING.lock().expect("vetting");
    // SAFETY: read-only mapping of an executable, which cannot be written while it runs.
    let data = unsafe { memmap2::Mmap::map(exe) }.context("mapping the executable")?;
    let elf = object::File::parse(&*data).context("parsing the executable")?;
    if elf.section_by_name(".debug_info").is_none() {
        return Ok(());
    }
    let size = match declared(&elf) {
        Ok(size) => size,
        Err(e) => return checked(exe, || Err(e)),
    };
    let _held = hold(size, 2, "DWARF")?;
    checked(exe, || {
        check_nesting(&sections(&elf)?, Instant::now() + WALK_BUDGET)
    })
}

/// What the DWARF sections declare they take decompressed, once each is within its bound, and
/// the largest once more (a section is copied once after it is decompressed).
fn declared<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Result<u64> {
    let (mut total, mut largest) = (0u64, 0u64);
    for s in elf.sections() {
        let Ok(name) = s.name() else { continue };
        if !(name.starts_with(".debug_") || name.starts_with(".zdebug_")) {
            continue;
        }
        let size = s
            .compressed_data()
            .map_or(s.size(), |c| c.uncompressed_size);
        let max = if name.ends_with("_abbrev") {
            ABBREV_MAX
        } else {
            SECTION_MAX
        };
        if size > max {
            bail!("its {name} declares {size} bytes, more than {max}");
        }
        total = total.saturating_add(size);
        largest = largest.max(size);
    }
    if total > DWARF_MAX {
        bail!("its sections declare {total} bytes, more than {DWARF_MAX}");
    }
    Ok(total + largest)
}

/// The DWARF sections, decompressed (`declared` bounds them first: a section whose stream
/// inflates beyond what it declares is an error, never a larger buffer).
fn sections<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Result<gimli::Dwarf<Reader>> {
    let endian = if elf.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Reader> {
        let bytes = match elf.section_by_name(id.name()) {
            Some(s) => s.uncompressed_data()?,
            None => Cow::Borrowed(&[][..]),
        };
        Ok(Reader::new(Rc::from(&*bytes), endian))
    };
    gimli::Dwarf::load(load)
}

/// The verdict on this executable's DWARF, when one was reached.
fn verdict(exe: &File) -> Option<Result<()>> {
    let id = file_id(&exe.metadata().ok()?);
    let all = CHECKED.lock().expect("checked");
    let known = all.as_ref()?.get(&id)?.get()?.clone();
    Some(known.map_err(anyhow::Error::msg))
}

/// `check`'s verdict for this executable, from an earlier one when it is the same file (one
/// under way is waited for: discovery starts it in the background, a capture may need it).
fn checked(exe: &File, check: impl FnOnce() -> Result<()>) -> Result<()> {
    let id = file_id(&exe.metadata()?);
    let verdict = {
        let mut all = CHECKED.lock().expect("checked");
        let all = all.get_or_insert_default();
        if all.len() >= CHECKED_MAX && !all.contains_key(&id) {
            all.clear();
        }
        Arc::clone(all.entry(id).or_default())
    };
    verdict
        .get_or_init(|| check().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Walks every entry of every unit without recursing: an error when entries nest deeper than
/// `DEPTH_MAX` or the walk outlasts `deadline` (checked per unit and every 256 entries).
fn check_nesting<R: gimli::Reader>(dwarf: &gimli::Dwarf<R>, deadline: Instant) -> Result<()> {
    let mut units = dwarf.units();
    let mut seen = 0u64;
    let over = || Instant::now() > deadline;
    while let Some(header) = units.next()? {
        if over() {
            bail!("walking it took longer than {WALK_BUDGET:?}");
        }
        let abbrevs = dwarf.abbreviations(&header)?;
        let mut entries = header.entries_raw(&abbrevs, None)?;
        while !entries.is_empty() {
            if entries.next_depth() > DEPTH_MAX {
                bail!("its entries nest deeper than {DEPTH_MAX} levels");
            }
            seen += 1;
            if seen.is_multiple_of(256) && over() {
                bail!("walking it took longer than {WALK_BUDGET:?}");
            }
            match entries.read_abbreviation()? {
                Some(abbrev) => entries.skip_attributes(abbrev.attributes())?,
                None => continue,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Slice = gimli::EndianSlice<'static, gimli::LittleEndian>;

    /// One unit: a compile unit, then `dies` (abbreviation codes; 0 ends a list of children).
    fn unit(dies: Vec<u8>) -> gimli::Dwarf<Slice> {
        // Code 1: compile unit with children; 2: inlined subroutine with children; 3: one
        // without.
        let abbrev: &'static [u8] = &[1, 0x11, 1, 0, 0, 2, 0x1d, 1, 0, 0, 3, 0x1d, 0, 0, 0, 0];
        let mut info = Vec::new();
        info.extend_from_slice(&((2 + 4 + 1 + dies.len()) as u32).to_le_bytes());
        info.extend_from_slice(&4u16.to_le_bytes());
        info.extend_from_slice(&0u32.to_le_bytes());
        info.push(8);
        info.extend(dies);
        let info: &'static [u8] = Box::leak(info.into_boxed_slice());
        let le = gimli::LittleEndian;
        gimli::Dwarf {
            debug_info: gimli::DebugInfo::new(info, le),
            debug_abbrev: gimli::DebugAbbrev::new(abbrev, le),
            ..Default::default()
        }
    }

    /// Entries nested `depth` levels, each inlined call holding the next.
    fn nested(depth: usize) -> gimli::Dwarf<Slice> {
        let mut dies = vec![1u8];
        dies.extend(std::iter::repeat_n(2u8, depth - 1));
        dies.extend(std::iter::repeat_n(0u8, depth));
        unit(dies)
    }

    /// `n` entries side by side, one level deep.
    fn wide(n: usize) -> gimli::Dwarf<Slice> {
        let mut dies = vec![1u8];
        dies.extend(std::iter::repeat_n(3u8, n));
        dies.push(0);
        unit(dies)
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let later = Instant::now() + WALK_BUDGET;
        check_nesting(&nested(12), later).unwrap();
        let err = check_nesting(&nested(1_000_000), later).unwrap_err();
        assert!(err.to_string().contains("nest deeper"), "{err}");
    }

    #[test]
    fn a_walk_keeps_to_its_time_budget() {
        check_nesting(&wide(100_000), Instant::now() + WALK_BUDGET).unwrap();
        let err = check_nesting(&wide(100_000), Instant::now()).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
