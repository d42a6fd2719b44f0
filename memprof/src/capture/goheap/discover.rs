//! Discovery: is this process Go, and where does it keep its heap profile? Done once when
//! memprof first sees a process. The executable stays open for as long as the process is
//! watched, because `/proc/PID/exe` is gone once the process dies and the at-kill profile is
//! symbolized after that.
use std::{fs::File, os::unix::fs::MetadataExt};

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::layout::Layout;

/// A Go process whose heap profile can be read from its memory.
#[derive(Debug)]
pub struct GoProc {
    pub exe: File,
    /// The executable's path as the process sees it (for the profile's mapping).
    pub path: String,
    pub version: String,
    pub layout: Layout,
    /// Run-time addresses (load bias added) of `runtime.mbuckets`, `runtime.mProfCycle` and
    /// `runtime.MemProfileRate`.
    pub mbuckets: u64,
    pub cycle: u64,
    pub rate: u64,
    /// Run-time address minus link-time address (0 unless the binary is PIE).
    pub bias: u64,
    /// Run-time address of `.text`, from which the kernel's walk sends PC offsets.
    pub text_base: u64,
    /// The Go linker turned heap profiling off (`runtime.disableMemoryProfiling`): nothing
    /// references the memory profiler, so `MemProfileRate` is set to 0 at start-up and the
    /// heap profile stays empty unless the program sets the rate itself.
    pub profiler_off: bool,
}

/// What discovery concluded.
#[derive(Debug)]
pub enum Discovery {
    Go(GoProc),
    /// Not a Go program: nothing to say.
    NotGo,
    /// A Go program whose heap cannot be read from memory, and why.
    Unreadable {
        version: String,
        reason: String,
    },
}

pub fn discover(pid: u32) -> Result<Discovery> {
    let exe = File::open(format!("/proc/{pid}/exe")).context("opening the executable")?;
    // SAFETY: the mapping is only read; an executable being run cannot be written to
    // (ETXTBSY), so the bytes do not change under the parser.
    let map = unsafe { memmap2::Mmap::map(&exe) }.context("mapping the executable")?;
    // Only the pages parsed (headers, build info, symbol table) are read from disk.
    let Ok(elf) = object::File::parse(&*map) else {
        return Ok(Discovery::NotGo);
    };
    let Some(version) = go_version(&elf) else {
        return Ok(Discovery::NotGo);
    };
    let unreadable = |reason: &str| {
        Ok(Discovery::Unreadable {
            version: version.clone(),
            reason: reason.into(),
        })
    };
    let release = version.clone();
    let layout = match Layout::for_version(&version) {
        Ok(l) => l,
        Err(e) => return unreadable(&e.to_string()),
    };
    if elf.symbols().next().is_none() {
        return unreadable("the binary has no symbol table (stripped with -s)");
    }
    let mut found = [None; 4];
    for s in elf.symbols() {
        let slot = match s.name() {
            Ok("runtime.mbuckets") => 0,
            Ok("runtime.mProfCycle") => 1,
            Ok("runtime.MemProfileRate") => 2,
            Ok("runtime.disableMemoryProfiling") => 3,
            _ => continue,
        };
        found[slot] = Some(s.address());
    }
    let profiler_off = found[3].is_some_and(|addr| initial_byte(&elf, addr) == Some(1));
    let [Some(mbuckets), Some(cycle), Some(rate), _] = found else {
        return unreadable("the symbol table lacks runtime.mbuckets/mProfCycle/MemProfileRate");
    };
    let bias = load_bias(pid, &exe, &elf)?;
    let text = elf.section_by_name(".text").map_or(0, |s| s.address());
    drop(elf);
    drop(map);
    let path = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let go = GoProc {
        exe,
        path,
        version: release,
        layout,
        mbuckets: mbuckets.wrapping_add(bias),
        cycle: cycle.wrapping_add(bias),
        rate: rate.wrapping_add(bias),
        bias,
        text_base: text.wrapping_add(bias),
        profiler_off,
    };
    Ok(Discovery::Go(go))
}

/// The byte a variable at `addr` starts with in the file (0 for one in `.bss`): the linker
/// writes `runtime.disableMemoryProfiling` there.
fn initial_byte<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>, addr: u64) -> Option<u8> {
    let s = elf
        .sections()
        .find(|s| (s.address()..s.address() + s.size()).contains(&addr))?;
    let data = s.data().ok()?;
    Some(
        data.get((addr - s.address()) as usize)
            .copied()
            .unwrap_or(0),
    )
}

/// The Go release from the `.go.buildinfo` section (Go 1.18+ inline format): a 32-byte
/// header, then the version as a varint-prefixed string.
fn go_version<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Option<String> {
    let data = elf.section_by_name(".go.buildinfo")?.data().ok()?;
    if !data.starts_with(b"\xff Go buildinf:") || data.get(15)? & 2 == 0 {
        return None;
    }
    let rest = data.get(32..)?;
    let (len, used) = uvarint(rest)?;
    let v = rest.get(used..used + len as usize)?;
    String::from_utf8(v.to_vec())
        .ok()
        .filter(|v| v.starts_with("go"))
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Where the kernel mapped the executable: the start of its mapping at file offset 0 minus
/// the link-time address of the segment there. Matched by inode, not by path, because a
/// container's path means nothing in memprof's mount namespace.
fn load_bias<'d, R: object::ReadRef<'d>>(
    pid: u32,
    exe: &File,
    elf: &object::File<'d, R>,
) -> Result<u64> {
    if elf.kind() != object::ObjectKind::Dynamic {
        return Ok(0);
    }
    let meta = exe.metadata()?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let first_vaddr = elf
        .segments()
        .filter(|s| s.file_range().0 == 0)
        .map(|s| s.address())
        .min()
        .unwrap_or(0);
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[2] != "00000000" || f[4].parse::<u64>().ok() != Some(meta.ino()) {
            continue;
        }
        let start = u64::from_str_radix(f[0].split('-').next().unwrap_or(""), 16)?;
        return Ok(start.wrapping_sub(first_vaddr & !0xfff));
    }
    bail!("the executable is not mapped in /proc/{pid}/maps")
}

#[cfg(test)]
mod tests {
    #[test]
    fn varints_decode() {
        assert_eq!(super::uvarint(&[8]), Some((8, 1)));
        assert_eq!(super::uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(super::uvarint(&[0x80]), None);
    }
}
