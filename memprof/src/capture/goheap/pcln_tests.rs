//! The line table's answers against what the same binary's symbol table and DWARF say, for each
//! Go release `cargo xtask setup` builds the test programs with.
use std::{fs::File, path::PathBuf};

use object::{Object, ObjectSymbol};

use super::{locate, memstats, pcln_place, pclntab::Pclntab, program, symbols::Symbolizer, symtab};

/// The unstripped test programs, one per Go release built (`target/testapps/go-*/leaky`).
fn programs() -> Vec<PathBuf> {
    let dir = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .join("testapps");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with("-stripped"))
        .map(|e| e.path().join("leaky"))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    if std::env::var("CI").is_ok() {
        for built in [
            "go-system",
            "go-middle",
            "go-current",
            "arm64-go-system",
            "arm64-go-current",
        ] {
            assert!(
                out.contains(&dir.join(built).join("leaky")),
                "{built}/leaky not built in {} (cargo xtask vm-test builds them)",
                dir.display()
            );
        }
    }
    out
}

#[test]
fn the_code_names_the_variables_the_symbol_table_names() {
    for path in programs() {
        let file = File::open(&path).unwrap();
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let elf = object::File::parse(&*map).unwrap();
        let named = symtab::variables(&elf).unwrap();
        let place = pcln_place::find(&elf, &map).expect("line table");
        let table = &map[place.offset as usize..(place.offset + place.len) as usize];
        let tab = Pclntab::parse(table, place.text).unwrap();
        let code = |addr: u64, len: u64| {
            let at = pcln_place::file_offset(&elf, addr)? as usize;
            map.get(at..at + len as usize)
        };
        let arch = match elf.architecture() {
            object::Architecture::Aarch64 => locate::Arch::Arm64,
            _ => locate::Arch::Amd64,
        };
        let runtime = locate::Runtime::new(&tab, arch, code);
        let found = locate::variables(&runtime).unwrap();
        // `runtime.memstats` and its layout, from `readmemstats_m`'s code.
        let refs = runtime.refs("runtime.readmemstats_m").unwrap();
        let stats = memstats::locate(&refs).expect("runtime.memstats in readmemstats_m");
        let named_stats = elf.symbols().find(|s| s.name() == Ok("runtime.memstats"));
        assert_eq!(
            Some(stats.addr),
            named_stats.map(|s| s.address()),
            "{}",
            path.display()
        );
        assert_eq!(named.memstats, Some(stats.addr), "{}", path.display());
        println!("{}: {stats:x?}", path.display());
        println!("{}: {found:x?} gofunc {:?}", path.display(), place.gofunc);
        assert_eq!(Some(found), named.variables, "{}", path.display());
        // The module record's `gofunc` is the linker's `go:func.*` (`go.func.*` before 1.20).
        let gofunc = elf
            .symbols()
            .find(|s| matches!(s.name(), Ok("go:func.*" | "go.func.*")))
            .and_then(|s| pcln_place::file_offset(&elf, s.address()));
        assert!(gofunc.is_some(), "{}", path.display());
        assert_eq!(place.gofunc, gofunc, "{}", path.display());
    }
}

#[test]
fn the_line_table_agrees_with_dwarf() {
    for path in programs() {
        let file = File::open(&path).unwrap();
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let elf = object::File::parse(&*map).unwrap();
        let place = pcln_place::find(&elf, &map).unwrap();
        let dwarf = Symbolizer::load(&file, None).unwrap();
        let pcln = super::pcln_frames::PclnFrames::load(&file, &place).unwrap();
        let tab = Pclntab::parse(
            &map[place.offset as usize..(place.offset + place.len) as usize],
            place.text,
        )
        .unwrap();
        let (mut same, mut all, mut inlined) = (0, 0, 0);
        for i in (0..tab.len() - 1).step_by(7) {
            let (f, next) = (tab.func(i).unwrap(), tab.func(i + 1).unwrap().entry);
            for pc in (f.entry..next).step_by(13) {
                let (a, b) = (dwarf.frames(pc), pcln.frames(pc));
                // C code linked in (cgo) has no line table.
                if !a.first().is_some_and(|f| f.file.ends_with(".go")) {
                    continue;
                }
                all += 1;
                inlined += usize::from(b.len() > 1);
                if a == b {
                    same += 1;
                } else if all - same < 3 {
                    println!("{pc:#x}: dwarf {a:?}\n  pcln {b:?}");
                }
            }
        }
        println!(
            "{}: {same} of {all} PCs alike, {inlined} in inlined code",
            path.display()
        );
        assert!(
            same * 100 >= all * 99 && inlined > 100,
            "{}",
            path.display()
        );
    }
}

/// A Go program Debian built and stripped (no symbol table, no DWARF): its runtime's variables
/// are found in its code, and its line table names its functions with files and lines.
#[test]
fn a_stripped_debian_go_program_is_readable() {
    let path = "/usr/bin/podman";
    let Ok(file) = File::open(path) else {
        assert!(
            std::env::var("CI").is_err(),
            "{path} missing (cargo xtask setup)"
        );
        return eprintln!("SKIPPED: {path} missing");
    };
    let p = program::of(&file).unwrap().expect("readable");
    println!("{}: {p:x?}", p.version);
    assert!(p.located, "podman is stripped: found by its code");
    let sym = Symbolizer::load(&file, p.pcln.as_ref()).unwrap();
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let elf = object::File::parse(&*map).unwrap();
    assert!(elf.symbols().next().is_none(), "{path} has a symbol table");
    let place = p.pcln.unwrap();
    let tab = Pclntab::parse(
        &map[place.offset as usize..(place.offset + place.len) as usize],
        place.text,
    )
    .unwrap();
    let own = (0..tab.len())
        .filter_map(|i| tab.func(i))
        .find(|f| {
            tab.func_name(f)
                .is_some_and(|n| n.starts_with("github.com/containers/podman/"))
        })
        .expect("a function of podman's own packages");
    let frames = sym.frames(own.entry + 1);
    println!("{frames:?}");
    assert!(frames[0]
        .function
        .starts_with("github.com/containers/podman/"));
    assert!(
        frames[0].file.ends_with(".go") && frames[0].line > 0,
        "{frames:?}"
    );
}
