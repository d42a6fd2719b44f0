//! The build IDs of a Go executable. The GNU one goes into the profile's mapping: with it,
//! Pyroscope, Parca or a later `go tool pprof` can find the very binary (or its debug info)
//! and check that it is the one profiled, as for profiles Go's `runtime/pprof` writes. Go's
//! own (`.note.go.buildid`, kept by stripped builds) is named in a comment only: pprof
//! compares a mapping's ID with a file's GNU one, and uses it in paths it searches. Go links a
//! GNU ID in by itself since 1.24 (`-B` or an external linker before).
use object::{Object, ObjectSection};

/// A note's fields are bounded: the tenant wrote the file.
const ID_MAX: usize = 512;
/// `NT_GO_BUILDID` and `NT_GNU_BUILD_ID`, the notes' types.
const GO_NOTE: u32 = 4;
const GNU_NOTE: u32 = 3;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildIds {
    /// Go's, as `go tool buildid` prints it (printable ASCII only).
    pub go: Option<String>,
    /// The GNU one, in hex.
    pub gnu: Option<String>,
}

impl BuildIds {
    pub fn of<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Self {
        // The one note each section holds, read by hand: a library's walk over every note of
        // every note section would be as long as the tenant made them.
        let desc = |section: &str, name: &[u8; 4], kind: u32| {
            let data = elf.section_by_name(section)?.data().ok()?;
            note(data, name, kind).map(<[u8]>::to_vec)
        };
        let gnu = desc(".note.gnu.build-id", b"GNU\0", GNU_NOTE)
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        let go = desc(".note.go.buildid", b"Go\0\0", GO_NOTE)
            .filter(|id| id.iter().all(u8::is_ascii_graphic))
            .map(|id| String::from_utf8_lossy(&id).into_owned());
        Self { go, gnu }
    }

    /// The one a profile's mapping carries: the GNU ID (what pprof, debuginfod and symbol
    /// servers compare with the file's).
    pub fn for_mapping(&self) -> Option<&str> {
        self.gnu.as_deref()
    }

    /// Both, for a profile's comment; `None` when there is neither.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [("Go", &self.go), ("GNU", &self.gnu)]
            .iter()
            .filter_map(|(kind, id)| id.as_ref().map(|id| format!("{kind} {id}")))
            .collect();
        (!parts.is_empty()).then(|| format!("memprof: build IDs: {}", parts.join(", ")))
    }
}

/// The description of the ELF note `{namesz, descsz, type, name, desc}` at the start of
/// `data` (little-endian, as every platform memprof runs on), if it has this 4-byte name
/// (with its NULs) and type; empty or over `ID_MAX` bytes is refused.
fn note<'a>(data: &'a [u8], name: &[u8; 4], kind: u32) -> Option<&'a [u8]> {
    let word = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let (namesz, descsz, ty) = (word(0)? as usize, word(4)? as usize, word(8)?);
    if ty != kind || namesz > 4 || data.get(12..16)? != name || descsz > ID_MAX {
        return None;
    }
    data.get(16..16 + descsz).filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend((name.len() as u32).to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(kind.to_le_bytes());
        n.extend(name);
        n.extend(desc);
        n
    }

    #[test]
    fn a_note_is_read_and_a_forged_one_refused() {
        let id: &[u8] = b"abc/def/ghi/jkl";
        let go = |n: &[u8]| note(n, b"Go\0\0", GO_NOTE).map(<[u8]>::to_vec);
        assert_eq!(go(&make(b"Go\0\0", 4, id)).as_deref(), Some(id));
        assert_eq!(go(&make(b"GNU\0", 4, id)), None);
        assert_eq!(go(&make(b"Go\0\0", 3, id)), None);
        let mut short = make(b"Go\0\0", 4, id);
        short.truncate(20);
        assert_eq!(go(&short), None);
        assert_eq!(go(&make(b"Go\0\0", 4, &[b'a'; ID_MAX + 1])), None);
        assert_eq!(go(&make(b"Go\0\0", 4, b"")), None);
    }

    #[test]
    fn only_the_gnu_id_goes_into_the_mapping() {
        let both = BuildIds {
            go: Some("g".into()),
            gnu: Some("ab12".into()),
        };
        assert_eq!(both.for_mapping(), Some("ab12"));
        assert_eq!(
            both.describe().as_deref(),
            Some("memprof: build IDs: Go g, GNU ab12")
        );
        let go_only = BuildIds {
            go: Some("g".into()),
            gnu: None,
        };
        assert_eq!(go_only.for_mapping(), None);
        assert_eq!(BuildIds::default().describe(), None);
    }
}
