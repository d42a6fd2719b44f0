//! The build IDs of a Go executable, for the profile's mapping: with one, Pyroscope, Parca or
//! a later `go tool pprof` can find the very binary (or its debug info) and check that it is
//! the one profiled. Go's own (`.note.go.buildid`, also in stripped builds) is always there;
//! the GNU one only when the linker was asked for it (`-B`, or an external linker).
use object::{Object, ObjectSection};

/// A note's fields are bounded: the tenant wrote the file.
const ID_MAX: usize = 512;
/// `NT_GO_BUILDID`, the type of the Go linker's note.
const GO_NOTE: u32 = 4;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildIds {
    /// Go's, as `go tool buildid` prints it.
    pub go: Option<String>,
    /// The GNU one, in hex.
    pub gnu: Option<String>,
}

impl BuildIds {
    pub fn of<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Self {
        let gnu = elf
            .build_id()
            .ok()
            .flatten()
            .filter(|id| !id.is_empty() && id.len() <= ID_MAX)
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        let go = elf
            .section_by_name(".note.go.buildid")
            .and_then(|s| s.data().ok())
            .and_then(go_note);
        Self { go, gnu }
    }

    /// The one a profile's mapping carries: the GNU ID where there is one (what debuginfod
    /// and symbol servers key on), else Go's.
    pub fn for_mapping(&self) -> Option<&str> {
        self.gnu.as_deref().or(self.go.as_deref())
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

/// The ID in an ELF note `{namesz, descsz, type, "Go\0\0", desc}` (little-endian, as every
/// platform memprof runs on): printable ASCII only, since it ends up in logs and profiles.
fn go_note(data: &[u8]) -> Option<String> {
    let word = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let (namesz, descsz, kind) = (word(0)? as usize, word(4)? as usize, word(8)?);
    if kind != GO_NOTE || namesz != 4 || data.get(12..16)? != b"Go\0\0" || descsz > ID_MAX {
        return None;
    }
    let desc = data.get(16..16 + descsz)?;
    desc.iter()
        .all(|b| b.is_ascii_graphic())
        .then(|| String::from_utf8_lossy(desc).into_owned())
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend((name.len() as u32).to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(kind.to_le_bytes());
        n.extend(name);
        n.extend(desc);
        n
    }

    #[test]
    fn the_go_note_is_read_and_a_forged_one_refused() {
        let id = b"abc/def/ghi/jkl";
        assert_eq!(
            go_note(&note(b"Go\0\0", 4, id)).as_deref(),
            Some("abc/def/ghi/jkl")
        );
        assert_eq!(go_note(&note(b"GNU\0", 4, id)), None);
        assert_eq!(go_note(&note(b"Go\0\0", 3, id)), None);
        assert_eq!(go_note(&note(b"Go\0\0", 4, b"a\x1b[2Jb")), None);
        let mut short = note(b"Go\0\0", 4, id);
        short.truncate(20);
        assert_eq!(go_note(&short), None);
        assert_eq!(go_note(&note(b"Go\0\0", 4, &[b'a'; ID_MAX + 1])), None);
    }

    #[test]
    fn the_gnu_id_goes_into_the_mapping_when_there_is_one() {
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
        assert_eq!(go_only.for_mapping(), Some("g"));
        assert_eq!(BuildIds::default().describe(), None);
    }
}
