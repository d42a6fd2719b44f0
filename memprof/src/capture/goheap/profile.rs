//! Raw buckets → the pprof heap profile Go's own `/debug/pprof/heap` writes: the same four
//! sample types, period, scaling, `bytes` label and hidden runtime frames at the leaf, with
//! every location symbolized (function, file, line, inlined frames) so that `go tool pprof`
//! needs no binary.
use std::{collections::HashMap, io::Write};

use anyhow::Result;
use flate2::{write::GzEncoder, Compression};
use prost::Message;

use super::{
    layout::{published, scale, RawBucket},
    proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType},
    symbols::Symbolizer,
};

/// What a reader produced, ready to become a profile.
pub struct HeapRead<'a> {
    pub buckets: &'a [RawBucket],
    pub rate: u64,
    /// Run-time minus link-time address.
    pub bias: u64,
    /// Lines for the profile's comments (`go tool pprof -comments`).
    pub comments: Vec<String>,
}

#[derive(Clone, Copy)]
struct Loc {
    id: u64,
    /// The innermost function at the PC is the runtime's.
    runtime: bool,
}

#[derive(Default)]
struct Builder {
    p: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    /// Run-time PC → its location, or `None` at `runtime.goexit`.
    locations: HashMap<u64, Option<Loc>>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, t: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(t),
            unit: self.string(unit),
        }
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (name.to_string(), file.to_string());
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.p.function.len() as u64 + 1;
        let (name, filename) = (self.string(name), self.string(file));
        self.p.function.push(Function {
            id,
            name,
            system_name: name,
            filename,
        });
        self.functions.insert(key, id);
        id
    }

    fn location(&mut self, pc: u64, bias: u64, sym: &Symbolizer) -> Option<Loc> {
        if let Some(&l) = self.locations.get(&pc) {
            return l;
        }
        // A return PC points after the call; the call itself is one byte before.
        let frames = sym.frames(pc.wrapping_sub(bias).wrapping_sub(1));
        if frames
            .first()
            .is_some_and(|f| f.function == "runtime.goexit")
        {
            self.locations.insert(pc, None);
            return None;
        }
        let runtime = frames.first().is_some_and(|f| {
            f.function.starts_with("runtime.") || f.function.starts_with("internal/runtime/")
        });
        let line = frames
            .iter()
            .map(|f| Line {
                function_id: self.function(&f.function, &f.file),
                line: i64::from(f.line),
            })
            .collect();
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(Location {
            id,
            mapping_id: 1,
            address: pc.wrapping_sub(1),
            line,
        });
        let loc = Loc { id, runtime };
        self.locations.insert(pc, Some(loc));
        Some(loc)
    }
}

/// Builds the gzip'd profile.
pub fn build(
    read: &HeapRead,
    sym: &Symbolizer,
    exe_name: &str,
    build_id: Option<&str>,
) -> Result<Vec<u8>> {
    let mut b = Builder::default();
    b.string("");
    let sample_types = [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ];
    b.p.sample_type = sample_types
        .iter()
        .map(|(t, u)| b.value_type(t, u))
        .collect();
    b.p.period_type = Some(b.value_type("space", "bytes"));
    b.p.period = read.rate as i64;
    b.p.time_nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let filename = b.string(exe_name);
    let build_id = build_id.map_or(0, |id| b.string(id));
    b.p.mapping.push(Mapping {
        id: 1,
        filename,
        build_id,
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
        ..Default::default()
    });
    let bytes_key = b.string("bytes");
    let counts = published(read.buckets);
    for (bucket, c) in read.buckets.iter().zip(counts) {
        // As Go does: a stack ends at `runtime.goexit` (the goroutine's base frame).
        let locs: Vec<Loc> = bucket
            .stack
            .iter()
            .map_while(|&pc| b.location(pc, read.bias, sym))
            .collect();
        // As Go does: leaf frames inside the runtime (malloc itself) are hidden, unless the
        // whole stack is the runtime's.
        let first_user = locs.iter().position(|l| !l.runtime).unwrap_or(0);
        let (alloc_objects, alloc_space) = scale(c.allocs, bucket.size, read.rate);
        let (inuse_objects, inuse_space) =
            scale(c.allocs.saturating_sub(c.frees), bucket.size, read.rate);
        b.p.sample.push(Sample {
            location_id: locs[first_user..].iter().map(|l| l.id).collect(),
            value: vec![alloc_objects, alloc_space, inuse_objects, inuse_space],
            label: vec![Label {
                key: bytes_key,
                num: bucket.size as i64,
                ..Default::default()
            }],
        });
    }
    let comments: Vec<i64> = read.comments.iter().map(|c| b.string(c)).collect();
    b.p.comment = comments;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&b.p.encode_to_vec())?;
    Ok(gz.finish()?)
}
