//! Frames from Go's line table, for binaries without DWARF (`-w`, or stripped): function,
//! file, line and the inlined calls at a PC, resolved as the runtime's own traceback does.
//!
//! The table is read from the executable memprof kept open (a read, not a mapping: a file the
//! tenant truncates after its process died fails a read, where a mapping would fault memprof),
//! within the DWARF budget, and dropped with the symbolizer.
use std::{
    cell::Cell,
    fs::File,
    os::unix::fs::FileExt,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    dwarf,
    pcln_place::PclnPlace,
    pclntab::{Pclntab, FUNCDATA_INLINE, PCDATA_INLINE},
    symbols::Frame,
};

/// Inlined calls followed at one PC (Go inlines a few levels deep).
const INLINE_DEPTH_MAX: usize = 64;
/// How long one profile's symbolization may take: a forged table can make every PC cost
/// milliseconds, and the process chooses its PCs. Frames after it are addresses only.
const BUDGET: Duration = Duration::from_secs(5);

pub struct PclnFrames {
    tab: Pclntab<Vec<u8>>,
    exe: File,
    gofunc: Option<u64>,
    _held: dwarf::Held,
    deadline: Instant,
    out_of_time: Cell<bool>,
}

impl PclnFrames {
    pub fn load(exe: &File, place: &PclnPlace) -> Result<Self> {
        let held = dwarf::hold_bytes(place.len)?;
        let mut table = vec![0; place.len as usize];
        exe.read_exact_at(&mut table, place.offset)
            .context("reading the Go line table")?;
        Ok(Self {
            tab: Pclntab::parse(table, place.text)?,
            exe: exe.try_clone()?,
            gofunc: place.gofunc,
            _held: held,
            deadline: Instant::now() + BUDGET,
            out_of_time: Cell::new(false),
        })
    }

    /// Frames at `addr`, innermost first.
    pub fn frames(&self, addr: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        if self.out_of_time.get() || Instant::now() > self.deadline {
            if !self.out_of_time.replace(true) {
                tracing::info!("Go line table: symbolizing took longer than {BUDGET:?}, the rest of the profile has addresses only");
            }
            return out;
        }
        let Some(f) = self.tab.func_at(addr) else {
            return out;
        };
        let inline = self.gofunc.zip(self.tab.funcdata(&f, FUNCDATA_INLINE));
        let layout = self.tab.inline_layout();
        let mut pc = addr;
        for _ in 0..INLINE_DEPTH_MAX {
            let (file, line) = self.tab.file_line(&f, pc).unwrap_or(("", 0));
            let ix = match inline {
                Some(_) => self.tab.pcdata(&f, PCDATA_INLINE, pc),
                None => -1,
            };
            let call = inline.filter(|_| ix >= 0).and_then(|(base, off)| {
                let mut e = [0u8; 20];
                let at = base
                    .checked_add(u64::from(off))?
                    .checked_add(u64::try_from(ix).ok()? * layout.entry)?;
                self.exe
                    .read_exact_at(&mut e[..layout.entry as usize], at)
                    .ok()?;
                let word = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().unwrap());
                Some((word(layout.name_at), word(layout.parent_pc_at)))
            });
            let name = match call {
                Some((name, _)) => self.tab.name(name),
                None => self.tab.func_name(&f),
            };
            out.push(Frame {
                function: name.unwrap_or("?").to_string(),
                file: file.to_string(),
                line,
            });
            match call {
                Some((_, parent)) => match f.entry.checked_add(u64::from(parent)) {
                    Some(parent) => pc = parent,
                    None => break,
                },
                None => break,
            }
        }
        out
    }
}
