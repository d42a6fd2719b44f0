//! Symbolization from the executable memprof kept open since discovery: function, file, line
//! and inlined frames from the DWARF the Go linker writes by default; function names only
//! from the ELF symbol table when the binary was linked without DWARF (`-ldflags=-w`).
use std::{borrow::Cow, fs::File, rc::Rc};

use anyhow::{Context as _, Result};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

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
        let dwarf = if elf.section_by_name(".debug_info").is_some() {
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
            Some(addr2line::Context::from_dwarf(dwarf).context("reading DWARF")?)
        } else {
            None
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

    fn symbol(&self, addr: u64) -> Option<&str> {
        let i = self
            .symbols
            .partition_point(|s| s.0 <= addr)
            .checked_sub(1)?;
        let (start, size, name) = &self.symbols[i];
        (size == &0 || addr < start + size).then_some(name.as_str())
    }
}
