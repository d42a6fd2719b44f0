//! Where a Go executable keeps its line table and what symbolizing from it needs, found once
//! per file: the `.gopclntab` section, or, where section headers are gone, the table's magic
//! in the read-only data; `runtime.text`; and `runtime.gofunc`, the base of the inlined-call
//! tables, which only the runtime's module record (`runtime.firstmoduledata`) holds.
use std::time::{Duration, Instant};

use object::{
    elf::{PF_W, PF_X},
    Object, ObjectSection, ObjectSegment, SegmentFlags,
};

use super::pclntab::{self, Pclntab, FUNCDATA_INLINE};

/// Where the line table is, as file offsets (read again at each symbolization, so nothing of it
/// is held between captures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PclnPlace {
    pub offset: u64,
    pub len: u64,
    /// Link-time address of `runtime.text`.
    pub text: u64,
    /// File offset of `runtime.gofunc`, if the module record was found.
    pub gofunc: Option<u64>,
}

/// The largest line table read (a 200 MiB Go service's is about 60 MiB).
pub const PCLN_MAX: u64 = 256 << 20;
/// Where `gofunc` may sit in the module record, in words: 38 in Go 1.18 and 1.19, 40 in 1.20
/// to 1.25, 43 in 1.27.
const GOFUNC_WORDS: std::ops::RangeInclusive<usize> = 38..=50;
/// Functions with inlined calls a `gofunc` candidate is tried on.
const GOFUNC_TRIES: usize = 64;
/// Segments looked through for the table's magic and the module record (a Go binary has four
/// loadable ones), and how long that may take.
const SEGMENTS_MAX: usize = 16;
const SCAN_BUDGET: Duration = Duration::from_secs(1);

/// The line table in `data` (the mapped executable), with what `elf` says of it.
pub fn find<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    data: &[u8],
) -> Option<PclnPlace> {
    let deadline = Instant::now() + SCAN_BUDGET;
    // Its own section; in position-independent builds (Go 1.18 to 1.25) a relocatable one, or
    // (linked by the system's linker) merged into `.data.rel.ro`, which only its magic finds.
    let section = [".gopclntab", ".data.rel.ro.gopclntab"]
        .iter()
        .find_map(|name| elf.section_by_name(name));
    let (offset, len, addr) = match section {
        Some(s) => {
            let (o, l) = s.file_range()?;
            (o, l, s.address())
        }
        None => scan(elf, data, deadline)?,
    };
    if len > PCLN_MAX {
        return None;
    }
    let table = data.get(offset as usize..offset.checked_add(len)? as usize)?;
    let module = module_record(elf, addr, table, deadline);
    // `runtime.text`: the `.text` section starts there unless the program was linked by the
    // system's linker (cgo), which puts C start-up code first. Go 1.18 to 1.25 also write it
    // in the table's header. The module record's `minpc` (the first function) confirms it.
    let header_text = u64::from_le_bytes(table.get(8 + 2 * 8..8 + 3 * 8)?.try_into().ok()?);
    let first = u64::from(u32::from_le_bytes(
        table.get(functab(table)?..)?.get(..4)?.try_into().ok()?,
    ));
    let text = match (module, header_text) {
        (Some(m), _) => (m[22].checked_add(first) == Some(m[20])).then_some(m[22])?,
        (None, t) if t != 0 => t,
        (None, _) => elf.section_by_name(".text")?.address(),
    };
    if !executable_at(elf, text.checked_add(first)?) {
        return None;
    }
    let tab = Pclntab::parse(table, text).ok()?;
    let gofunc = module.and_then(|m| gofunc(elf, data, &tab, m));
    Some(PclnPlace {
        offset,
        len,
        text,
        gofunc,
    })
}

/// Offset of the function table in the table (the header's eighth word).
fn functab(table: &[u8]) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(
        table.get(8 + 7 * 8..8 + 8 * 8)?.try_into().ok()?,
    ))
    .ok()
}

/// Whether `addr` is aligned to `align` in a writable segment.
pub fn writable_at<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    addr: u64,
    align: u64,
) -> bool {
    addr.is_multiple_of(align)
        && elf.segments().any(|s| {
            matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_W != 0)
                && addr >= s.address()
                && addr - s.address() < s.size()
        })
}

/// Whether link-time address `addr` is in an executable segment.
fn executable_at<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>, addr: u64) -> bool {
    elf.segments().any(|s| {
        matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0)
            && addr >= s.address()
            && addr - s.address() < s.size()
    })
}

/// The segments scanned: the first `SEGMENTS_MAX`, each file range once (segments may
/// overlap), as (file offset, bytes, address, writable).
fn segments<'d, 'a, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    data: &'a [u8],
) -> Vec<(u64, &'a [u8], u64, bool)> {
    let mut out: Vec<(u64, &[u8], u64, bool)> = Vec::new();
    for seg in elf.segments().take(SEGMENTS_MAX) {
        let (start, size) = seg.file_range();
        let Some(bytes) = start
            .checked_add(size)
            .and_then(|end| data.get(start as usize..end as usize))
        else {
            continue;
        };
        if out
            .iter()
            .any(|(s, b, ..)| *s == start && b.len() == bytes.len())
        {
            continue;
        }
        out.push((start, bytes, seg.address(), writable(&seg)));
    }
    out
}

/// The table's magic in a segment: (file offset, length to the segment's end, address).
fn scan<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    data: &[u8],
    deadline: Instant,
) -> Option<(u64, u64, u64)> {
    for (start, bytes, addr, _) in segments(elf, data) {
        for at in (0..bytes.len().saturating_sub(64)).step_by(8) {
            if at.is_multiple_of(1 << 20) && Instant::now() > deadline {
                return None;
            }
            if pclntab::looks_like(&bytes[at..]) && Pclntab::parse(&bytes[at..], 0).is_ok() {
                return Some((
                    start + at as u64,
                    bytes.len() as u64 - at as u64,
                    addr.checked_add(at as u64)?,
                ));
            }
        }
    }
    None
}

fn writable<'d, 'f, R: object::ReadRef<'d>>(seg: &object::Segment<'d, 'f, R>) -> bool {
    matches!(seg.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_W != 0)
}

/// The words of `runtime.firstmoduledata`: in writable data, a pointer to the table followed by
/// the function-name table's slice (pointer at the header's offset, length).
fn module_record<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    table_addr: u64,
    table: &[u8],
    deadline: Instant,
) -> Option<[u64; 64]> {
    let names = table_addr.checked_add(u64::from_le_bytes(
        table.get(8 + 3 * 8..8 + 4 * 8)?.try_into().ok()?,
    ))?;
    for seg in elf.segments().filter(writable).take(SEGMENTS_MAX) {
        let Ok(bytes) = seg.data() else { continue };
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        for at in (0..bytes.len().saturating_sub(64 * 8)).step_by(8) {
            if at.is_multiple_of(1 << 20) && Instant::now() > deadline {
                return None;
            }
            if word(at) == table_addr && word(at + 8) == names {
                let mut m = [0u64; 64];
                for (i, w) in m.iter_mut().enumerate() {
                    *w = word(at + 8 * i);
                }
                return Some(m);
            }
        }
    }
    None
}

/// File offset of link-time address `addr`, if the file holds it.
pub fn file_offset<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    addr: u64,
) -> Option<u64> {
    elf.segments().find_map(|s| {
        let (off, size) = s.file_range();
        (addr >= s.address() && addr - s.address() < size)
            .then(|| off.wrapping_add(addr - s.address()))
    })
}

/// The module record's `gofunc`: the word among `GOFUNC_WORDS` from which the first inlined
/// call of functions that have some names a function (a name's first byte in the name table)
/// and is called from within the function (its parent PC is inside it).
fn gofunc<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    data: &[u8],
    tab: &Pclntab<&[u8]>,
    module: [u64; 64],
) -> Option<u64> {
    let layout = tab.inline_layout();
    // (the table's offset, the function's size)
    let inlined: Vec<(u32, u64)> = (0..tab.len())
        .filter_map(|i| {
            let f = tab.func(i)?;
            let size = tab.func(i + 1)?.entry.checked_sub(f.entry)?;
            Some((tab.funcdata(&f, FUNCDATA_INLINE)?, size))
        })
        .take(GOFUNC_TRIES)
        .collect();
    if inlined.is_empty() {
        return None;
    }
    let names_well = |base: u64| {
        inlined
            .iter()
            .filter(|&&(off, size)| {
                let word = |at: usize| {
                    let at = (base as usize).checked_add(off as usize)?.checked_add(at)?;
                    Some(u32::from_le_bytes(
                        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
                    ))
                };
                let (Some(name), Some(parent)) = (word(layout.name_at), word(layout.parent_pc_at))
                else {
                    return false;
                };
                let starts = name == 0 || tab.name(name - 1) == Some("");
                starts
                    && tab.name(name).is_some_and(|n| n.contains('.'))
                    && u64::from(parent) < size
            })
            .count()
    };
    // `gofunc` follows `rodata`, the start of the read-only data it lies in: other words that
    // point there too (`etypes`) can hold what looks like inlined calls.
    let segment = |addr: u64| {
        elf.segments()
            .position(|s| addr >= s.address() && addr - s.address() < s.size())
    };
    let mut best: Option<(usize, u64)> = None;
    for i in GOFUNC_WORDS {
        let (rodata, word) = (module[i - 1], module[i]);
        if rodata > word || segment(rodata).is_none() || segment(rodata) != segment(word) {
            continue;
        }
        let Some(base) = file_offset(elf, word) else {
            continue;
        };
        let n = names_well(base);
        if n * 10 >= inlined.len() * 9 && best.is_none_or(|(m, _)| n > m) {
            best = Some((n, base));
        }
    }
    best.map(|(_, base)| base)
}
