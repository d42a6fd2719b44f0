//! What travels with each profile: who the process was and why it was captured. Stored as S3
//! user metadata (`x-amz-meta-*`) and, in local mode, as `<object>.meta.json` beside it, so
//! an object found the morning after explains itself without memprof's log.
use std::collections::BTreeMap;

/// Field name → value; names are lower-case with dashes, as S3 returns them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

/// What ends a value that was cut.
pub const CUT: &str = "[…cut]";

/// S3 refuses more than 2 KB of user metadata per object (names and values), and a refusal
/// would keep the profile from ever being stored: a long value (command line, cgroup path) is
/// cut to this many bytes there. The local JSON keeps it whole.
const S3_VALUE_MAX: usize = 400;

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.0.insert(name.to_string(), value.to_string());
        self
    }

    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a map of strings serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// The metadata as JSON of at most `max` bytes: the longest values are cut (ending in
    /// `CUT`) until it fits, so a process with megabytes of arguments full of bytes JSON
    /// escapes six-fold cannot make a spool header memprof cannot read back. (Only names
    /// alone longer than `max` could still exceed it; memprof's own are short.)
    pub fn json_within(&self, max: usize) -> Vec<u8> {
        let mut m = self.clone();
        let mut keep = 4096;
        loop {
            let json = serde_json::to_vec(&m).expect("a map of strings serialises");
            if json.len() <= max || keep == 0 {
                return json;
            }
            for v in m.0.values_mut().filter(|v| v.len() > keep) {
                v.truncate(v.floor_char_boundary(keep));
                v.push_str(CUT);
            }
            keep /= 2;
        }
    }

    /// As S3 user metadata: HTTP header values are printable ASCII, so anything else is
    /// percent-encoded (`%XX` per byte) and long values are cut, ending in `...`.
    pub fn for_s3(&self) -> std::collections::HashMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), header_value(v)))
            .collect()
    }
}

fn header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if out.len() >= S3_VALUE_MAX {
            out.push_str("...");
            break;
        }
        match b {
            b'%' => out.push_str("%25"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_roundtrips_and_s3_values_are_printable_ascii() {
        let mut m = Metadata::new();
        m.set("pid", 42).set("cmdline", "app --name=zürich\t%x");
        assert_eq!(Metadata::from_json(&m.to_json()), Some(m.clone()));
        assert_eq!(m.for_s3()["cmdline"], "app --name=z%C3%BCrich%09%25x");
        m.set("cmdline", "x".repeat(5000));
        let cut = &m.for_s3()["cmdline"];
        assert!(
            cut.len() <= S3_VALUE_MAX + 3 && cut.ends_with("..."),
            "{cut}"
        );
    }

    #[test]
    fn json_within_a_bound_cuts_the_longest_values() {
        let mut m = Metadata::new();
        m.set("pid", 42).set("cmdline", "\u{1b}é".repeat(4000));
        assert!(m.to_json().len() > 16 << 10);
        let json = m.json_within(4096);
        assert!(json.len() <= 4096, "{}", json.len());
        let back = Metadata::from_json(&json).unwrap();
        assert_eq!(back.get("pid"), Some("42"));
        assert!(back.get("cmdline").unwrap().ends_with(CUT));
        assert_eq!(m.json_within(1 << 20), serde_json::to_vec(&m).unwrap());
    }
}
