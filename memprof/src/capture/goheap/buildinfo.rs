//! The Go release an executable was built with, from its build information, which stripped
//! binaries keep: the `.go.buildinfo` section, or, where section headers are gone, its magic in
//! the writable data (the linker aligns it to 16 bytes).
use object::{elf::PF_W, Object, ObjectSection, ObjectSegment, SegmentFlags};

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Writable segments searched (a Go binary has one or two).
const SEGMENTS_MAX: usize = 4;
/// The longest release name taken (`go1.27.3`, `devel go1.28-abcdef Mon …`).
const VERSION_MAX: usize = 128;

/// The release, like `go1.27.3`, for Go 1.18+ binaries (the inline format: a 32-byte header,
/// then the version as a varint-prefixed string).
pub fn go_version<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Option<String> {
    if let Some(s) = elf.section_by_name(".go.buildinfo") {
        return version_in(s.data().ok()?);
    }
    // Without section headers only (a binary that has them and no such section is not Go):
    // every 16-byte-aligned match in the first writable segments, the first that parses.
    if elf.sections().next().is_some() {
        return None;
    }
    elf.segments()
        .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_W != 0))
        .take(SEGMENTS_MAX)
        .find_map(|seg| {
            let bytes = seg.data().ok()?;
            (0..bytes.len())
                .step_by(16)
                .filter(|&at| bytes[at..].starts_with(MAGIC))
                .find_map(|at| version_in(&bytes[at..]))
        })
}

fn version_in(data: &[u8]) -> Option<String> {
    if !data.starts_with(MAGIC) || data.get(15)? & 2 == 0 {
        return None;
    }
    let rest = data.get(32..)?;
    let (len, used) = uvarint(rest)?;
    let len = usize::try_from(len).ok().filter(|&l| l <= VERSION_MAX)?;
    let v = rest.get(used..used.checked_add(len)?)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn varints_decode() {
        assert_eq!(super::uvarint(&[8]), Some((8, 1)));
        assert_eq!(super::uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(super::uvarint(&[0x80]), None);
    }
}
