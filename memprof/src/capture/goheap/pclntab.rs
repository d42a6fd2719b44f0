//! Go's own line table (`runtime.pclntab`), which every Go binary keeps for its tracebacks:
//! stripping (`-s`) and `-w` leave it. It lists the program's functions, and per function
//! the tables that give, at any PC, the file, the line and the inlined call the PC is in.
//! Layouts of Go 1.18 and 1.19 (magic `0xfffffff0`) and Go 1.20 on (`0xfffffff1`) are read.
//!
//! The table is the tenant's: every offset is checked against the bytes there are, names are
//! cut at `NAME_MAX`, and a value table is followed for at most `STEPS_MAX` steps.
use anyhow::{bail, ensure, Result};

/// Go 1.18's and Go 1.20's magic numbers (little-endian, as on amd64 and arm64).
const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;
/// The header: magic, two zero bytes, instruction size, pointer size, then eight words.
const HEADER: usize = 8 + 8 * 8;
/// The longest name kept (Go's longest are a few hundred bytes).
pub const NAME_MAX: usize = 1024;
/// Steps followed in one value table (the largest in Go's runtime has about 5,100).
const STEPS_MAX: usize = 1 << 14;
/// `_PCDATA_InlTreeIndex` and `_FUNCDATA_InlTree`.
pub const PCDATA_INLINE: u32 = 2;
pub const FUNCDATA_INLINE: u32 = 3;

/// A parsed header over the table's bytes `D`, which start at the header.
pub struct Pclntab<D> {
    data: D,
    /// Go 1.20 and later (`_func` has `startLine`; inline entries are 16 bytes).
    go120: bool,
    quantum: u64,
    nfunc: usize,
    /// Run-time (link-time) address entry offsets are relative to: `runtime.text`.
    text: u64,
    funcnames: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

/// One function's record: where it is in the table and what of it lookups need.
#[derive(Clone, Copy, Debug)]
pub struct Func {
    at: usize,
    pub entry: u64,
    /// Its `_func` fields as words (entryOff, nameOff, args, deferreturn, pcsp, pcfile, pcln,
    /// npcdata, cuOffset).
    w: [u32; 9],
    nfuncdata: u8,
}

/// A function's inlined calls' table: entry size, and where name and parent PC are in one.
pub struct InlineLayout {
    pub entry: u64,
    pub name_at: usize,
    pub parent_pc_at: usize,
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The NUL-terminated string at `at`, cut at `NAME_MAX`; `None` when it is not UTF-8.
pub fn c_str(d: &[u8], at: usize) -> Option<&str> {
    let rest = d.get(at..)?;
    let rest = &rest[..rest.len().min(NAME_MAX)];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()
}

/// Whether `d` starts like a Go 1.18+ line table for 64-bit code.
pub fn looks_like(d: &[u8]) -> bool {
    matches!(u32_at(d, 0), Some(MAGIC_118 | MAGIC_120))
        && d.get(4..8)
            .is_some_and(|h| h[0] == 0 && h[1] == 0 && matches!(h[2], 1 | 2 | 4) && h[3] == 8)
}

impl<D: AsRef<[u8]>> Pclntab<D> {
    /// The table in `data`, whose functions' entries are relative to `text`.
    pub fn parse(data: D, text: u64) -> Result<Self> {
        let d = data.as_ref();
        ensure!(looks_like(d), "not a Go 1.18+ line table of 64-bit code");
        let word = |i: usize| u64_at(d, 8 + 8 * i).unwrap_or(u64::MAX);
        let offset = |i: usize| -> Result<usize> {
            let o = word(i);
            ensure!(
                o >= HEADER as u64 && o < d.len() as u64,
                "line table offset out of range"
            );
            Ok(o as usize)
        };
        let nfunc = word(0);
        let (funcnames, cutab, filetab, pctab, functab) =
            (offset(3)?, offset(4)?, offset(5)?, offset(6)?, offset(7)?);
        // nfunc + 1 entries of two u32, the last one the end of the text.
        if nfunc == 0 || nfunc.saturating_add(1).saturating_mul(8) > (d.len() - functab) as u64 {
            bail!("line table lists {nfunc} functions, more than it has room for");
        }
        Ok(Self {
            go120: u32_at(d, 0) == Some(MAGIC_120),
            quantum: u64::from(d[6]),
            nfunc: nfunc as usize,
            text,
            funcnames,
            cutab,
            filetab,
            pctab,
            functab,
            data,
        })
    }

    fn d(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// Function `i` of the table (in order of address).
    pub fn func(&self, i: usize) -> Option<Func> {
        if i >= self.nfunc {
            return None;
        }
        let d = self.d();
        let entry = u32_at(d, self.functab + 8 * i)?;
        let at = self
            .functab
            .checked_add(u32_at(d, self.functab + 8 * i + 4)? as usize)?;
        let mut w = [0u32; 9];
        for (k, v) in w.iter_mut().enumerate() {
            *v = u32_at(d, at + 4 * k)?;
        }
        let nfuncdata = *d.get(at + self.func_size() - 1)?;
        Some(Func {
            at,
            entry: self.text.checked_add(u64::from(entry))?,
            w,
            nfuncdata,
        })
    }

    /// Function `i`'s entry address; `i == len()` is the end of the last function.
    pub fn entry(&self, i: usize) -> Option<u64> {
        (i <= self.nfunc)
            .then(|| u32_at(self.d(), self.functab.checked_add(i.checked_mul(8)?)?))?
            .and_then(|e| self.text.checked_add(u64::from(e)))
    }

    pub fn len(&self) -> usize {
        self.nfunc
    }

    fn func_size(&self) -> usize {
        if self.go120 {
            44
        } else {
            40
        }
    }

    /// The function `pc` is in.
    pub fn func_at(&self, pc: u64) -> Option<Func> {
        let off = u32::try_from(pc.checked_sub(self.text)?).ok()?;
        let d = self.d();
        let entry = |i: usize| u32_at(d, self.functab + 8 * i).unwrap_or(u32::MAX);
        if off >= entry(self.nfunc) {
            return None;
        }
        // The last function whose entry is at or before `off`.
        let (mut lo, mut hi) = (0, self.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if entry(mid) <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.func(lo.checked_sub(1)?)
    }

    /// The name at `off` in the function-name table.
    pub fn name(&self, off: u32) -> Option<&str> {
        c_str(self.d(), self.funcnames.checked_add(off as usize)?)
    }

    pub fn func_name(&self, f: &Func) -> Option<&str> {
        self.name(f.w[1])
    }

    /// File and line at `pc` inside `f`.
    pub fn file_line(&self, f: &Func, pc: u64) -> Option<(&str, u32)> {
        let file = self.value(f, f.w[5], pc)?;
        let line = self.value(f, f.w[6], pc)?;
        let cu = (f.w[8] as usize).checked_add(usize::try_from(file).ok()?)?;
        let file_off = u32_at(self.d(), self.cutab.checked_add(cu.checked_mul(4)?)?)?;
        let name = c_str(self.d(), self.filetab.checked_add(file_off as usize)?)?;
        Some((name, u32::try_from(line).unwrap_or(0)))
    }

    /// The value of `f`'s PC-data table `table` at `pc` (-1 where it says nothing).
    pub fn pcdata(&self, f: &Func, table: u32, pc: u64) -> i32 {
        if table >= f.w[7] {
            return -1;
        }
        u32_at(self.d(), f.at + self.func_size() + 4 * table as usize)
            .and_then(|off| self.value(f, off, pc))
            .unwrap_or(-1)
    }

    /// `f`'s function data `i`: an offset from `runtime.gofunc`, if it has one.
    pub fn funcdata(&self, f: &Func, i: u32) -> Option<u32> {
        if i >= u32::from(f.nfuncdata) {
            return None;
        }
        let at = f.at + self.func_size() + 4 * (f.w[7] as usize + i as usize);
        u32_at(self.d(), at).filter(|&off| off != u32::MAX)
    }

    pub fn inline_layout(&self) -> InlineLayout {
        if self.go120 {
            InlineLayout {
                entry: 16,
                name_at: 4,
                parent_pc_at: 8,
            }
        } else {
            InlineLayout {
                entry: 20,
                name_at: 12,
                parent_pc_at: 16,
            }
        }
    }

    /// Go's `pcvalue`: the value a table at `off` in `pctab` gives `pc` inside `f`.
    fn value(&self, f: &Func, off: u32, target: u64) -> Option<i32> {
        if off == 0 {
            return None;
        }
        let mut p = self.d().get(self.pctab.checked_add(off as usize)?..)?;
        let (mut pc, mut val) = (f.entry, -1i32);
        for step in 0..STEPS_MAX {
            let (dv, n) = uvarint32(p)?;
            if dv == 0 && step > 0 {
                return None;
            }
            val = val.wrapping_add((-((dv & 1) as i32)) ^ ((dv >> 1) as i32));
            let (dpc, m) = uvarint32(p.get(n..)?)?;
            p = p.get(n + m..)?;
            pc = pc.checked_add(u64::from(dpc) * self.quantum)?;
            if target < pc {
                return Some(val);
            }
        }
        None
    }
}

/// A varint of at most 32 bits (5 bytes) and its length.
fn uvarint32(b: &[u8]) -> Option<(u32, usize)> {
    let mut v = 0u32;
    for (i, &byte) in b.iter().enumerate().take(5) {
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}
