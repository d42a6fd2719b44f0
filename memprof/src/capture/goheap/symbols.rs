//! Symbolization from the executable memprof kept open since discovery: function, file, line
//! and inlined frames from the DWARF the Go linker writes by default; function names only
//! from the ELF symbol table when the binary was linked without DWARF (`-ldflags=-w`).
//!
//! The executable is the tenant's: its DWARF may declare gigabytes behind a small compressed
//! section, or nest entries a million deep (the DWARF reader recurses once per level). So the
//! declared sizes are bounded before anything is decompressed, and the nesting is walked once
//! per executable, without recursion and within a time budget, before the reader may recurse;
//! DWARF that fails either is not used (names come from the symbol table).
use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    os::unix::fs::MetadataExt,
    rc::Rc,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::program::FileId;

/// All DWARF sections together, decompressed (a large Go service has tens of MiB).
const DWARF_MAX: u64 = 512 << 20;
/// Nesting deeper than this is refused: Go's DWARF nests a unit, a function, its inlined calls
/// and their blocks, a dozen levels at most.
const DEPTH_MAX: isize = 256;
/// How long the nesting walk may take (a large Go service's takes well under a second).
const WALK_BUDGET: Duration = Duration::from_secs(5);
/// Executables whose DWARF was walked (device, inode, size, mtime): the verdict, kept for
/// forks and replicas; at most this many.
const CHECKED_MAX: usize = 4096;
type Verdict = Arc<OnceLock<Result<(), String>>>;
static CHECKED: Mutex<Option<HashMap<FileId, Verdict>>> = Mutex::new(None);

type Reader = gimli::EndianRcSlice<gimli::RunTimeEndian>;

/// One frame at a PC; a PC inside inlined code has several, innermost first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

pub struct Symbolizer {
    dwarf: Option<addr2line::Context<Reader>>,
    /// Function symbols sorted by address: (start, size, name).
    symbols: Vec<(u64, u64, String)>,
}

impl Symbolizer {
    pub fn load(exe: &File) -> Result<Self> {
        // SAFETY: read-only mapping of an executable, which cannot be written while it runs;
        // after the process died, nothing else writes the file it ran from either.
        let data = unsafe { memmap2::Mmap::map(exe) }.context("mapping the executable")?;
        let elf = object::File::parse(&*data).context("parsing the executable")?;
        let mut symbols: Vec<(u64, u64, String)> = elf
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
            .collect();
        symbols.sort_unstable_by_key(|s| s.0);
        let dwarf = match load_dwarf(&elf, exe) {
            Ok(dwarf) => dwarf,
            Err(e) => {
                tracing::info!("DWARF of {} not used: {e:#}", exe_name(exe));
                None
            }
        };
        Ok(Self { dwarf, symbols })
    }

    /// Frames at link-time address `addr` (for a return PC, pass the call instruction's
    /// address, `pc - 1`).
    pub fn frames(&self, addr: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        if let Some(ctx) = &self.dwarf {
            if let Ok(mut it) = ctx.find_frames(addr).skip_all_loads() {
                while let Ok(Some(f)) = it.next() {
                    let Some(name) = f.function.as_ref().and_then(|n| n.raw_name().ok()) else {
                        continue;
                    };
                    let (file, line) = f
                        .location
                        .map(|l| (l.file.unwrap_or("").to_string(), l.line.unwrap_or(0)))
                        .unwrap_or_default();
                    out.push(Frame {
                        function: name.into_owned(),
                        file,
                        line,
                    });
                }
            }
        }
        if out.is_empty() {
            if let Some(name) = self.symbol(addr) {
                out.push(Frame {
                    function: name.to_string(),
                    file: String::new(),
                    line: 0,
                });
            }
        }
        out
    }

    #[cfg(test)]
    fn has_dwarf(&self) -> bool {
        self.dwarf.is_some()
    }

    fn symbol(&self, addr: u64) -> Option<&str> {
        let i = self
            .symbols
            .partition_point(|s| s.0 <= addr)
            .checked_sub(1)?;
        let (start, size, name) = &self.symbols[i];
        (size == &0 || addr < start + size).then_some(name.as_str())
    }
}

/// The executable's DWARF for addr2line, when it has some within the bounds.
fn load_dwarf<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    exe: &File,
) -> Result<Option<addr2line::Context<Reader>>> {
    if elf.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    let declared: u64 = elf
        .sections()
        .filter(|s| {
            s.name()
                .is_ok_and(|n| n.starts_with(".debug_") || n.starts_with(".zdebug_"))
        })
        .map(|s| {
            s.compressed_data()
                .map_or(s.size(), |c| c.uncompressed_size)
        })
        .fold(0, u64::saturating_add);
    if declared > DWARF_MAX {
        bail!("its sections declare {declared} bytes, more than {DWARF_MAX}");
    }
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
    let dwarf = gimli::Dwarf::load(load)?;
    checked(exe, || check_nesting(&dwarf, Instant::now() + WALK_BUDGET))?;
    Ok(Some(
        addr2line::Context::from_dwarf(dwarf).context("reading DWARF")?,
    ))
}

/// `check`'s verdict for this executable, from an earlier one when it is the same file (one
/// under way is waited for: discovery starts it in the background, a capture may need it).
fn checked(exe: &File, check: impl FnOnce() -> Result<()>) -> Result<()> {
    let m = exe.metadata()?;
    let id = (m.dev(), m.ino(), m.size(), m.mtime());
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
/// `DEPTH_MAX` or the walk outlasts `deadline`.
fn check_nesting<R: gimli::Reader>(dwarf: &gimli::Dwarf<R>, deadline: Instant) -> Result<()> {
    let mut units = dwarf.units();
    let mut seen = 0u64;
    while let Some(header) = units.next()? {
        let abbrevs = dwarf.abbreviations(&header)?;
        let mut entries = header.entries_raw(&abbrevs, None)?;
        while !entries.is_empty() {
            if entries.next_depth() > DEPTH_MAX {
                bail!("its entries nest deeper than {DEPTH_MAX} levels");
            }
            seen += 1;
            if seen.is_multiple_of(4096) && Instant::now() > deadline {
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

/// The executable's path as memprof sees it, for a log line.
fn exe_name(exe: &File) -> String {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", exe.as_raw_fd()))
        .map(|p| p.display().to_string().escape_debug().to_string())
        .unwrap_or_else(|_| "the executable".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit whose entries nest `depth` levels (a compile unit, then inlined calls, each
    /// holding the next), with no attributes.
    fn nested(depth: usize) -> gimli::Dwarf<gimli::EndianSlice<'static, gimli::LittleEndian>> {
        // Code 1: compile unit with children; code 2: inlined subroutine with children.
        let abbrev: &'static [u8] = &[1, 0x11, 1, 0, 0, 2, 0x1d, 1, 0, 0, 0];
        let mut dies = vec![1u8];
        dies.extend(std::iter::repeat_n(2u8, depth - 1));
        dies.extend(std::iter::repeat_n(0u8, depth));
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

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let later = Instant::now() + WALK_BUDGET;
        check_nesting(&nested(12), later).unwrap();
        let err = check_nesting(&nested(1_000_000), later).unwrap_err();
        assert!(err.to_string().contains("nest deeper"), "{err}");
        let err = check_nesting(&nested(200_000), Instant::now()).unwrap_err();
        assert!(
            err.to_string().contains("nest deeper") || err.to_string().contains("longer"),
            "{err}"
        );
    }

    /// A real Go program's DWARF passes the walk, and its frames have files and lines.
    #[test]
    fn a_go_program_s_dwarf_passes() {
        let exe = std::env::current_exe().unwrap();
        let leaky = exe
            .ancestors()
            .nth(3)
            .unwrap()
            .join("testapps/go-system/leaky");
        let Ok(file) = File::open(&leaky) else {
            assert!(
                std::env::var("CI").is_err(),
                "{} not built",
                leaky.display()
            );
            return eprintln!("SKIPPED: {} not built (cargo xtask setup)", leaky.display());
        };
        let started = Instant::now();
        let sym = Symbolizer::load(&file).unwrap();
        println!("loaded and walked in {:?}", started.elapsed());
        assert!(sym.has_dwarf());
    }
}
