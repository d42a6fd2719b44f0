//! Symbolization from the executable memprof kept open since discovery: function, file, line
//! and inlined frames from the DWARF the Go linker writes by default, or from Go's own line
//! table when the binary was linked without DWARF (`-ldflags=-w`); function names from the ELF
//! symbol table when neither answers.
//!
//! The executable is the tenant's: its DWARF is used only within the bounds `dwarf` sets, its
//! symbol table is read within a time budget, and every name kept is cut to `NAME_MAX` bytes
//! (a forged table can point thousands of symbols at one string of megabytes).
use std::{
    fs::File,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use object::{Object, ObjectSymbol, SymbolKind};

use super::{
    dwarf::{self, Reader},
    pcln_frames::PclnFrames,
    pcln_place::PclnPlace,
};

/// The longest function or file name kept (Go's longest are a few hundred bytes).
const NAME_MAX: usize = 1024;
/// How long the symbol table may take.
const SYMBOLS_BUDGET: Duration = Duration::from_secs(2);

/// One frame at a PC; a PC inside inlined code has several, innermost first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

pub struct Symbolizer {
    dwarf: Option<addr2line::Context<Reader>>,
    /// The DWARF's share of the budget, given back when the symbolizer is dropped.
    _held: Option<dwarf::Held>,
    /// Go's line table, where there is no DWARF.
    pcln: Option<PclnFrames>,
    /// Function symbols sorted by address: (start, size, name).
    symbols: Vec<(u64, u64, String)>,
}

impl Symbolizer {
    pub fn load(exe: &File, pcln: Option<&PclnPlace>) -> Result<Self> {
        // SAFETY: read-only mapping of an executable, which cannot be written while it runs;
        // after the process died, nothing else writes the file it ran from either.
        let data = unsafe { memmap2::Mmap::map(exe) }.context("mapping the executable")?;
        let elf = object::File::parse(&*data).context("parsing the executable")?;
        let deadline = Instant::now() + SYMBOLS_BUDGET;
        let mut symbols = Vec::new();
        for s in elf.symbols() {
            if Instant::now() > deadline {
                tracing::info!(
                    "symbol table of {} read in part: longer than {SYMBOLS_BUDGET:?}",
                    exe_name(exe)
                );
                break;
            }
            if s.kind() == SymbolKind::Text && s.address() != 0 {
                if let Ok(name) = s.name() {
                    symbols.push((s.address(), s.size(), cut(name)));
                }
            }
        }
        symbols.sort_unstable_by_key(|s| s.0);
        let (dwarf, _held) = match dwarf::load(&elf, exe) {
            Ok(Some((dwarf, held))) => (
                Some(addr2line::Context::from_dwarf(dwarf).context("reading DWARF")?),
                Some(held),
            ),
            Ok(None) => (None, None),
            Err(e) => {
                tracing::info!("DWARF of {} not used: {e:#}", exe_name(exe));
                (None, None)
            }
        };
        // Without DWARF, Go's line table has what the symbol table lacks: files, lines and
        // inlined calls (and the names a stripped binary has nowhere else).
        let pcln = match (&dwarf, pcln) {
            (None, Some(place)) => PclnFrames::load(exe, place)
                .inspect_err(|e| {
                    tracing::info!("Go line table of {} not used: {e:#}", exe_name(exe))
                })
                .ok(),
            _ => None,
        };
        Ok(Self {
            dwarf,
            _held,
            pcln,
            symbols,
        })
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
                        .map(|l| (cut(l.file.unwrap_or("")), l.line.unwrap_or(0)))
                        .unwrap_or_default();
                    out.push(Frame {
                        function: cut(&name),
                        file,
                        line,
                    });
                }
            }
        }
        if out.is_empty() {
            if let Some(pcln) = &self.pcln {
                out = pcln.frames(addr);
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

/// `name`, at most `NAME_MAX` bytes of it.
fn cut(name: &str) -> String {
    name[..name.floor_char_boundary(NAME_MAX)].to_string()
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
        let sym = Symbolizer::load(&file, None).unwrap();
        println!("loaded and walked in {:?}", started.elapsed());
        assert!(sym.has_dwarf());
    }
}
