//! Tenants whose DWARF is a trap, in a real pod with a memprof sidecar in 128 MiB: a Go service
//! whose `.debug_info` is a compressed bomb (200 MiB of zeros in 200 KiB, within the per-section
//! cap), and one whose entries nest a million deep (the DWARF reader recurses once per level).
//! Both have no endpoint, so memprof reads their heaps from memory and symbolizes them: each
//! is profiled before its OOM kill with names from Go's line table, one line says why its
//! DWARF was not used, and memprof stays alive within its limit (decompressing the bomb alone
//! would take more than all of it).
use std::{io::Write, os::unix::fs::PermissionsExt, path::Path};

use object::{Object, ObjectSection};

use crate::common::{sidecar::*, *};

/// `SHF_COMPRESSED`: the section starts with an `Elf64_Chdr`.
const SHF_COMPRESSED: u64 = 0x800;

#[test]
fn a_forged_dwarf_costs_memprof_only_its_names() {
    let Some(leaky) = go_service() else { return };
    let Some(s) = setup("hostile-dwarf", 64, &[]) else {
        return;
    };
    let dir = s.pod.work_dir();
    let bomb = dir.join("leaky-bomb");
    forge(
        &leaky,
        &bomb,
        &[(".debug_info", zlib_bomb(200 << 20), true)],
    );
    let deep = dir.join("leaky-deep");
    let (info, abbrev) = nested(1_000_000);
    forge(
        &leaky,
        &deep,
        &[
            (".debug_info", info, false),
            (".debug_abbrev", abbrev, false),
        ],
    );

    let (limit, rate) = scaled(256, 50);
    for (bin, why) in [
        (&bomb, "do not fit memprof's DWARF budget"),
        (&deep, "nest deeper than 256 levels"),
    ] {
        let name = bin.file_name().unwrap().to_str().unwrap();
        let trap = s.program(bin, name, limit * MIB, &["-addr", "", "-rate", &rate]);
        let key = s.next_key(&trap, &[]);
        assert!(key.ends_with(".heap.pb.gz"), "{key}");
        let line = s
            .memprof
            .wait_for_log(why, std::time::Duration::from_secs(30));
        println!("{name}: profiled as {key}; {line}");
        assert!(line.contains(name), "{line}");
        trap.wait_oom_kill();
    }

    println!("honest: {}", s.honest_service_profiled());
    s.memprof_survived("dwarf");
}

/// A copy of `bin` whose named sections hold new contents, appended to the file and pointed
/// at by their section headers (`SHF_COMPRESSED` set or cleared as given).
fn forge(bin: &Path, to: &Path, sections: &[(&str, Vec<u8>, bool)]) {
    let mut bytes = std::fs::read(bin).unwrap();
    let elf = object::File::parse(&*bytes).unwrap();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let shoff = u64_at(&bytes, 0x28) as usize;
    let shentsize = u16::from_le_bytes(bytes[0x3a..0x3c].try_into().unwrap()) as usize;
    let headers: Vec<usize> = sections
        .iter()
        .map(|(name, ..)| {
            let s = elf.section_by_name(name).unwrap();
            shoff + s.index().0 * shentsize
        })
        .collect();
    for (header, (_, data, compressed)) in headers.into_iter().zip(sections) {
        bytes.resize(bytes.len().next_multiple_of(8), 0);
        let offset = bytes.len() as u64;
        bytes.extend_from_slice(data);
        let flags = u64_at(&bytes, header + 8);
        let flags = if *compressed {
            flags | SHF_COMPRESSED
        } else {
            flags & !SHF_COMPRESSED
        };
        bytes[header + 8..header + 16].copy_from_slice(&flags.to_le_bytes());
        bytes[header + 24..header + 32].copy_from_slice(&offset.to_le_bytes());
        bytes[header + 32..header + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
    }
    std::fs::write(to, &bytes).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A compressed section (`Elf64_Chdr`, zlib) that inflates to `size` zero bytes.
fn zlib_bomb(size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes()); // ELFCOMPRESS_ZLIB
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
    let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..size >> 20 {
        z.write_all(&zeros).unwrap();
    }
    z.finish().unwrap()
}

/// One DWARF 4 unit whose entries nest `depth` levels (a compile unit holding an inlined call
/// holding the next), and its abbreviations.
fn nested(depth: usize) -> (Vec<u8>, Vec<u8>) {
    // Code 1: compile unit with children; 2: inlined subroutine with children.
    let abbrev = vec![1, 0x11, 1, 0, 0, 2, 0x1d, 1, 0, 0, 0];
    let mut dies = vec![1u8];
    dies.extend(std::iter::repeat_n(2u8, depth - 1));
    dies.extend(std::iter::repeat_n(0u8, depth));
    let mut info = Vec::new();
    info.extend_from_slice(&((2 + 4 + 1 + dies.len()) as u32).to_le_bytes());
    info.extend_from_slice(&4u16.to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    info.push(8);
    info.extend(dies);
    (info, abbrev)
}
