//! The Go release an executable was built with, from its build information, which stripped
//! binaries keep: the `.go.buildinfo` section, or, where section headers are gone, its magic in
//! the writable data (the linker aligns it to 16 bytes).
use object::{Object, ObjectSection, ObjectSegment};

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// The longest release name taken (`go1.27.3`, `devel go1.28-abcdef Mon …`).
const VERSION_MAX: usize = 128;

/// The release, like `go1.27.3`, for Go 1.18+ binaries (the inline format: a 32-byte header,
/// then the version as a varint-prefixed string).
pub fn go_version<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Option<String> {
    let data = match elf.section_by_name(".go.buildinfo") {
        Some(s) => s.data().ok()?,
        None => scan(elf)?,
    };
    if !data.starts_with(MAGIC) || data.get(15)? & 2 == 0 {
        return None;
    }
    let rest = data.get(32..)?;
    let (len, used) = uvarint(rest)?;
    let len = usize::try_from(len).ok().filter(|&l| l <= VERSION_MAX)?;
    let v = rest.get(used..used + len)?;
    String::from_utf8(v.to_vec())
        .ok()
        .filter(|v| v.starts_with("go"))
}

/// The build information's bytes, found by its magic in a segment.
fn scan<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Option<&'d [u8]> {
    elf.segments().find_map(|seg| {
        let bytes = seg.data().ok()?;
        (0..bytes.len())
            .step_by(16)
            .find(|&at| bytes[at..].starts_with(MAGIC))
            .map(|at| &bytes[at..])
    })
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
