//! A heap profile in brief: its `inuse_space` per call path, decoded with prost from Go's own
//! format, for what grew before a kill (`grew`) and for `memprof report`'s flame graphs.
//!
//! A profile is the process's to shape (an endpoint serves what it likes). Before prost builds
//! anything, the encoded message is walked once (`cost`) and refused when decoding it would
//! take more memory than `DECODED_MAX`: a few hundred kilobytes of gzip can describe millions
//! of empty samples, or packed IDs that grow eightfold as they are decoded. What is kept is
//! bounded too: the heaviest paths, the frames nearest the allocation, names cut short and
//! shared between paths.
use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    io::Read,
    sync::Arc,
};

use anyhow::{bail, ensure, Context, Result};
use prost::{
    bytes::Buf,
    encoding::{decode_key, decode_varint, WireType},
    Message,
};

use super::goheap::proto;

/// Profiles larger than this (gzip'd) are not summarized.
pub const PROFILE_MAX: usize = 64 << 20;
/// Uncompressed.
const INFLATED_MAX: u64 = 64 << 20;
/// Memory prost may take for the decoded profile (estimated by `cost`, twice for growth).
const DECODED_MAX: u64 = 96 << 20;
/// Longest function name kept.
const NAME_MAX: usize = 256;
/// What stands for the frames cut from a path's root end.
pub const CUT: &str = "…";

/// How much of a profile a summary keeps.
#[derive(Clone, Copy, Debug)]
pub struct Keep {
    /// The heaviest call paths.
    pub paths: usize,
    /// Frames per path, nearest the allocation.
    pub frames: usize,
}

/// In-use bytes per call path (leaf first).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    paths: HashMap<Vec<Arc<str>>, i64>,
    /// Bytes this summary holds, roughly (paths, frames, names).
    weight: usize,
}

impl Summary {
    /// Each call path (leaf first) and its in-use bytes.
    pub fn paths(&self) -> impl Iterator<Item = (&[Arc<str>], i64)> {
        self.paths.iter().map(|(p, b)| (p.as_slice(), *b))
    }

    pub fn weight(&self) -> usize {
        self.weight
    }

    /// A summary of these paths (leaf first), for tests of what reads summaries.
    #[cfg(test)]
    pub fn from_paths(paths: &[(&[&str], i64)]) -> Self {
        Summary {
            paths: paths
                .iter()
                .map(|(p, b)| (p.iter().map(|s| Arc::from(*s)).collect(), *b))
                .collect(),
            weight: 0,
        }
    }
}

/// A gzip'd pprof profile's `inuse_space` per call path.
pub fn summarize(gz: &[u8], keep: Keep) -> Result<Summary> {
    ensure!(
        gz.len() <= PROFILE_MAX,
        "profile larger than {PROFILE_MAX} bytes"
    );
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(INFLATED_MAX + 1)
        .read_to_end(&mut raw)
        .context("gunzip")?;
    ensure!(
        raw.len() as u64 <= INFLATED_MAX,
        "more than {INFLATED_MAX} bytes inflated"
    );
    let cost = cost(&raw)?;
    ensure!(
        cost * 2 <= DECODED_MAX,
        "decoding it would take about {cost} bytes"
    );
    let p = proto::Profile::decode(raw.as_slice()).context("decoding the profile")?;
    let s = |i: i64| p.string_table.get(i as usize).map_or("", String::as_str);
    let inuse = p
        .sample_type
        .iter()
        .position(|t| s(t.r#type) == "inuse_space")
        .context("no inuse_space in the profile")?;
    let mut names: HashMap<&str, Arc<str>> = HashMap::new();
    let functions: HashMap<u64, Arc<str>> = p
        .function
        .iter()
        .map(|f| {
            let name = s(f.name);
            let short = names.entry(name).or_insert_with(|| shorten(name)).clone();
            (f.id, short)
        })
        .collect();
    let unknown: Arc<str> = Arc::from("?");
    let locations: HashMap<u64, Vec<Arc<str>>> = p
        .location
        .iter()
        .map(|l| {
            let frames = l
                .line
                .iter()
                .map(|line| functions.get(&line.function_id).unwrap_or(&unknown).clone());
            (l.id, frames.collect())
        })
        .collect();
    // Paths are added up by a hash of their kept frames first: only the heaviest are built.
    let mut by_hash: HashMap<u64, (i64, usize)> = HashMap::new();
    for (i, sample) in p.sample.iter().enumerate() {
        let Some(&bytes) = sample.value.get(inuse) else {
            continue;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        frames_of(&locations, sample)
            .take(keep.frames)
            .for_each(|f| f.hash(&mut h));
        let e = by_hash.entry(h.finish()).or_insert((0, i));
        e.0 = e.0.saturating_add(bytes.max(0));
    }
    let mut heaviest: Vec<(i64, usize)> = by_hash.into_values().collect();
    heaviest.sort_unstable_by_key(|(b, i)| (std::cmp::Reverse(*b), *i));
    heaviest.truncate(keep.paths);
    let mut summary = Summary::default();
    for (bytes, i) in heaviest {
        let mut path: Vec<Arc<str>> = frames_of(&locations, &p.sample[i])
            .take(keep.frames + 1)
            .cloned()
            .collect();
        if path.len() > keep.frames {
            path.truncate(keep.frames.saturating_sub(1));
            path.push(Arc::from(CUT));
        }
        summary.weight += 48 + 16 * path.len();
        let held = summary.paths.entry(path).or_default();
        *held = held.saturating_add(bytes);
    }
    summary.weight += names.values().map(|n| n.len() + 32).sum::<usize>();
    Ok(summary)
}

/// A sample's frames, leaf first.
fn frames_of<'a>(
    locations: &'a HashMap<u64, Vec<Arc<str>>>,
    sample: &'a proto::Sample,
) -> impl Iterator<Item = &'a Arc<str>> + 'a {
    sample
        .location_id
        .iter()
        .flat_map(|id| locations.get(id).into_iter().flatten())
}

fn shorten(name: &str) -> Arc<str> {
    if name.len() <= NAME_MAX {
        return Arc::from(name);
    }
    let mut short = name[..name.floor_char_boundary(NAME_MAX)].to_string();
    short.push_str(CUT);
    Arc::from(short)
}

/// Bytes prost would allocate to decode `raw` as a profile, walking its fields without
/// decoding them: per sample, location, line, function, label and string, and per packed
/// number (one byte encoded, eight decoded).
fn cost(raw: &[u8]) -> Result<u64> {
    let mut cost = 0u64;
    for_each_field(raw, |tag, body| {
        cost += match tag {
            2 => 96 + nested(body, &[(1, 8), (2, 8), (3, 64)])?,
            3 => 128,
            4 => 80 + nested(body, &[(4, 40)])?,
            5 => 64,
            6 => 24 + body.len() as u64,
            _ => 16 + 8 * body.len() as u64,
        };
        Ok(())
    })?;
    Ok(cost)
}

/// The cost of a message's repeated fields: `(tag, bytes each)`; packed numbers count one
/// per encoded byte with its high bit clear.
fn nested(raw: &[u8], each: &[(u32, u64)]) -> Result<u64> {
    let mut cost = 0;
    for_each_field(raw, |tag, body| {
        if let Some((_, per)) = each.iter().find(|(t, _)| *t == tag) {
            let numbers = body.iter().filter(|b| *b & 0x80 == 0).count().max(1) as u64;
            cost += if *per == 8 { per * numbers } else { *per };
        }
        Ok(())
    })?;
    Ok(cost)
}

/// Calls `f` with each field's tag and its encoded body (a varint's bytes, a fixed value's, a
/// length-delimited field's contents).
fn for_each_field(mut buf: &[u8], mut f: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
    while buf.has_remaining() {
        let (tag, wire) = decode_key(&mut buf).context("a malformed profile")?;
        let start = buf;
        let len = match wire {
            WireType::Varint => {
                decode_varint(&mut buf).context("a malformed profile")?;
                start.len() - buf.len()
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).context("a malformed profile")?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                ensure!(
                    len <= buf.len(),
                    "a malformed profile: a field runs past its end"
                );
                let body = &buf[..len];
                buf.advance(len);
                f(tag, body)?;
                continue;
            }
            _ => bail!("a malformed profile: groups are not used by pprof"),
        };
        ensure!(
            len <= start.len(),
            "a malformed profile: a field runs past its end"
        );
        f(tag, &start[..len])?;
        buf = &start[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(raw: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_small_gzip_of_millions_of_empty_samples_is_refused_before_decoding() {
        // Field 2 (sample), length 0: two bytes each, 72+ bytes each once decoded.
        let raw = [0x12u8, 0x00].repeat(8 << 20);
        let bomb = gz(&raw);
        assert!(bomb.len() < 200 << 10, "{} bytes", bomb.len());
        let keep = Keep {
            paths: 10,
            frames: 10,
        };
        let e = summarize(&bomb, keep).unwrap_err().to_string();
        assert!(e.contains("decoding it would take"), "{e}");
        // Packed IDs: one byte each encoded, eight decoded.
        let mut sample = vec![0x0a];
        let ids = vec![1u8; 1 << 20];
        prost::encoding::encode_varint(ids.len() as u64, &mut sample);
        sample.extend(&ids);
        let mut raw = Vec::new();
        for _ in 0..8 {
            raw.push(0x12);
            prost::encoding::encode_varint(sample.len() as u64, &mut raw);
            raw.extend(&sample);
        }
        assert!(summarize(&gz(&raw), keep).is_err());
        assert!(
            summarize(&gz(&[0x12, 0x05, 0x00]), keep).is_err(),
            "runs past its end"
        );
    }
}
