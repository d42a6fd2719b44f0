//! What an executable says of the Go program in it — release, heap layout, where its profiler
//! keeps its state — the same for every process that runs it, so it is parsed once per file
//! (device, inode, size, mtime) and shared by forks and replicas.
//!
//! The executable is the tenant's, so what parsing it may cost is bounded before it starts:
//! its size, how much of it is on disk (a sparse file of a terabyte would be faulted through
//! page by page), its section count, the time spent on its symbol table, and for a stripped
//! binary the segments scanned for its line table and module record (`pcln_place`) and the
//! size of the functions decoded (`locate`).
use std::{collections::HashMap, fs::File, os::unix::fs::MetadataExt, sync::Mutex};

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSegment};

use super::{
    build_id::BuildIds,
    buildinfo::go_version,
    layout::Layout,
    locate::{self, Variables},
    memstats::{self, StatsPlace},
    pcln_place::{self, PclnPlace},
    pclntab::Pclntab,
    symtab,
};

/// The largest executable parsed (Go services are tens to a few hundred MiB).
const EXE_MAX: u64 = 1 << 30;
/// An executable with less than this share of its size on disk is sparse: refused.
const ON_DISK_MIN_PART: u64 = 8;
/// Go binaries have a few dozen sections.
const SECTIONS_MAX: usize = 1024;
/// Executables remembered; the table starts afresh beyond this.
const PROGRAMS_MAX: usize = 4096;

/// An executable file: device, inode, size, mtime and ctime (a file rewritten in place with
/// its mtime set back still has a new ctime, which no process can set).
pub type FileId = (u64, u64, u64, i64, i64, i64);

pub fn file_id(m: &std::fs::Metadata) -> FileId {
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.ctime(),
        m.ctime_nsec(),
    )
}
static PROGRAMS: Mutex<Option<HashMap<FileId, Result<Program, Verdict>>>> = Mutex::new(None);

/// A Go program whose heap profile can be read from memory: link-time addresses.
#[derive(Clone, Debug)]
pub struct Program {
    pub version: String,
    pub layout: Layout,
    pub mbuckets: u64,
    pub cycle: u64,
    pub rate: u64,
    /// `.text`, from which the kernel's walk sends PC offsets.
    pub text: u64,
    /// The Go linker turned heap profiling off (see `GoProc::profiler_off`).
    pub profiler_off: bool,
    /// Position-independent: where the kernel mapped it is read per process.
    pub dynamic: bool,
    /// The link-time address of the segment at file offset 0.
    pub first_vaddr: u64,
    pub build_ids: BuildIds,
    /// Found by decoding the runtime's code, not named by a symbol table: checked against each
    /// process before it is trusted.
    pub located: bool,
    /// Go's line table, for symbolizing without DWARF.
    pub pcln: Option<PclnPlace>,
    /// `runtime.memstats`, for the memory accounting.
    pub stats: Option<StatsPlace>,
}

/// Why an executable yields no readable heap.
#[derive(Clone, Debug)]
pub enum Verdict {
    NotGo,
    /// A Go program whose heap cannot be read from memory, and why.
    Unreadable {
        version: String,
        reason: String,
    },
    /// Not parsed, and why (too large, sparse, too many sections, too slow).
    Refused(String),
}

/// What `exe` says, parsed now or found from an earlier parse of the same file.
pub fn of(exe: &File) -> Result<Result<Program, Verdict>> {
    let m = exe.metadata().context("the executable's metadata")?;
    let id = file_id(&m);
    if let Some(known) = PROGRAMS
        .lock()
        .expect("programs")
        .get_or_insert_default()
        .get(&id)
    {
        return Ok(known.clone());
    }
    let parsed = match admissible(&m) {
        Ok(()) => parse(exe)?,
        Err(why) => Err(Verdict::Refused(why)),
    };
    let mut all = PROGRAMS.lock().expect("programs");
    let all = all.get_or_insert_default();
    if all.len() >= PROGRAMS_MAX {
        all.clear();
    }
    all.insert(id, parsed.clone());
    Ok(parsed)
}

fn parse(exe: &File) -> Result<Result<Program, Verdict>> {
    // SAFETY: the mapping is only read; an executable being run cannot be written to
    // (ETXTBSY), so the bytes do not change under the parser.
    let map = unsafe { memmap2::Mmap::map(exe) }.context("mapping the executable")?;
    // Only the pages parsed are read from disk (headers, build info, symbol table; for a
    // stripped binary its line table, module record and the functions decoded).
    let Ok(elf) = object::File::parse(&*map) else {
        return Ok(Err(Verdict::NotGo));
    };
    if elf.sections().nth(SECTIONS_MAX).is_some() {
        return Ok(Err(Verdict::Refused(format!(
            "the executable has more than {SECTIONS_MAX} sections"
        ))));
    }
    let Some(version) = go_version(&elf) else {
        return Ok(Err(Verdict::NotGo));
    };
    let unreadable = |reason: &str| {
        Ok(Err(Verdict::Unreadable {
            version: version.clone(),
            reason: reason.into(),
        }))
    };
    let layout = match Layout::for_version(&version) {
        Ok(l) => l,
        Err(e) => return unreadable(&e.to_string()),
    };
    let pcln = pcln_place::find(&elf, &map);
    let arch = match elf.architecture() {
        object::Architecture::X86_64 => Some(locate::Arch::Amd64),
        object::Architecture::Aarch64 => Some(locate::Arch::Arm64),
        _ => None,
    };
    let code = |addr: u64, len: u64| {
        let at = pcln_place::file_offset(&elf, addr)? as usize;
        map.get(at..at.checked_add(len as usize)?)
    };
    let tab = pcln.as_ref().and_then(|place| {
        let table = &map[place.offset as usize..(place.offset + place.len) as usize];
        Pclntab::parse(table, place.text).ok()
    });
    // The runtime functions memprof decodes, found in one pass over the line table.
    let runtime = tab
        .as_ref()
        .zip(arch)
        .map(|(tab, arch)| locate::Runtime::new(tab, arch, code));
    let named = match symtab::variables(&elf) {
        Err(refused) => return Ok(Err(refused)),
        Ok(named) => named,
    };
    let (vars, located) = match named.variables {
        Some(vars) => (vars, false),
        // No symbol table (`-s`), or one without the runtime's variables: the runtime's code.
        None => {
            let Some(runtime) = &runtime else {
                return unreadable(
                    "the binary has no symbol table, and no Go line table or code memprof decodes",
                );
            };
            match locate::variables(runtime) {
                Ok(vars) if !writable_words(&elf, &vars) => {
                    return unreadable(
                        "the binary has no symbol table (stripped with -s), and what its code \
                         names as the profiler's variables are not aligned words of its data",
                    )
                }
                Ok(vars) => (vars, true),
                Err(why) => {
                    return unreadable(&format!(
                        "the binary has no symbol table (stripped with -s), and {why}"
                    ))
                }
            }
        }
    };
    // The runtime's own memory statistics, for the memory accounting (not needed to read the
    // heap: a binary whose code does not match goes without).
    let stats = runtime
        .as_ref()
        .and_then(|rt| rt.refs("runtime.readmemstats_m").ok())
        .and_then(|refs| memstats::locate(&refs))
        // An aligned word of writable data, and where the symbol table says, if it says.
        .filter(|s| pcln_place::writable_at(&elf, s.addr, 8))
        .filter(|s| named.memstats.is_none_or(|a| a == s.addr));
    let profiler_off = vars
        .disable
        .is_some_and(|addr| initial_byte(&elf, addr) == Some(1));
    let program = Program {
        layout,
        mbuckets: vars.mbuckets,
        cycle: vars.cycle,
        rate: vars.rate,
        text: elf
            .section_by_name(".text")
            .map(|s| s.address())
            .or(pcln.as_ref().map(|p| p.text))
            .unwrap_or(0),
        located,
        pcln,
        stats,
        profiler_off,
        dynamic: elf.kind() == object::ObjectKind::Dynamic,
        first_vaddr: elf
            .segments()
            .filter(|s| s.file_range().0 == 0)
            .map(|s| s.address())
            .min()
            .unwrap_or(0),
        build_ids: BuildIds::of(&elf),
        version,
    };
    Ok(Ok(program))
}

/// Whether the variables are aligned words in writable segments, as the runtime's are.
fn writable_words<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>, v: &Variables) -> bool {
    pcln_place::writable_at(elf, v.mbuckets, 8)
        && pcln_place::writable_at(elf, v.cycle, 4)
        && pcln_place::writable_at(elf, v.rate, 8)
}

/// The byte a variable at `addr` starts with in the file (0 for one in `.bss`, which the file
/// does not hold): the linker writes `runtime.disableMemoryProfiling` there.
fn initial_byte<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>, addr: u64) -> Option<u8> {
    let seg = elf
        .segments()
        .find(|s| (s.address()..s.address().saturating_add(s.size())).contains(&addr))?;
    let data = seg.data().ok()?;
    Some(
        data.get((addr - seg.address()) as usize)
            .copied()
            .unwrap_or(0),
    )
}

/// Whether an executable is worth parsing at all: a regular file, not too large, and on disk
/// rather than a sparse file's holes.
fn admissible(m: &std::fs::Metadata) -> Result<(), String> {
    if !m.is_file() {
        return Err("the executable is not a regular file".into());
    }
    if m.size() > EXE_MAX {
        return Err(format!(
            "the executable is larger than {} MiB",
            EXE_MAX >> 20
        ));
    }
    if m.blocks().saturating_mul(512) < m.size() / ON_DISK_MIN_PART {
        return Err(format!(
            "the executable is sparse ({} of its {} bytes on disk)",
            m.blocks() * 512,
            m.size()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_and_sparse_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exe");
        std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        let meta = || std::fs::metadata(&path).unwrap();
        assert_eq!(super::admissible(&meta()), Ok(()));
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        assert!(super::admissible(&meta()).unwrap_err().contains("sparse"));
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        assert!(super::admissible(&meta()).unwrap_err().contains("larger"));
        let dir_meta = std::fs::metadata(dir.path()).unwrap();
        assert!(super::admissible(&dir_meta).is_err());
    }
}
