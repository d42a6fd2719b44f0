//! What grew before the kill: each heap profile memprof stores is summarized as it is stored
//! (`inuse_space` per call path, decoded with prost from Go's own format), and the OOM record
//! compares the process's first profile with its last (the at-kill profile when there is one):
//! the functions whose in-use bytes grew most, each with the call path that grew most.
//!
//! A profile is the process's to shape (an endpoint serves what it likes): what is decoded is
//! bounded in size, and what is kept per profile is bounded in paths and frames.
use std::{
    collections::HashMap,
    io::Read,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::{goheap::proto, Capturer, Profile};
use crate::assess::ProcKey;

/// Profiles larger than this (gzip'd) are not summarized.
const PROFILE_MAX: usize = 64 << 20;
/// Uncompressed.
const INFLATED_MAX: u64 = 256 << 20;
/// Call paths kept per profile (those holding the most), and frames per path.
const PATHS_MAX: usize = 4096;
const FRAMES_MAX: usize = 32;
/// Functions the record names.
const TOP: usize = 5;
/// Processes whose profiles are summarized at once.
const PROCS_MAX: usize = 1024;

/// In-use bytes per call path (leaf first).
#[derive(Debug, Default)]
pub struct Summary(HashMap<Vec<String>, i64>);

/// One function that grew, for the OOM record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grower {
    pub function: String,
    /// Growth of the in-use bytes allocated in it (as the leaf).
    pub bytes: i64,
    /// Its share of all growth, in percent.
    pub share: f64,
    /// The call path (leaf first) that grew most.
    pub path: Vec<String>,
}

impl Grower {
    /// "main.leakyRetain +180.4 MB (97 %)", for a log line.
    pub fn phrase(&self) -> String {
        format!(
            "{} +{:.1} MB ({:.0} %)",
            self.function,
            self.bytes as f64 / 1e6,
            self.share
        )
    }
}

impl Summary {
    /// A summary of these paths (leaf first), for tests of what reads summaries.
    #[cfg(test)]
    pub fn from_paths(paths: &[(&[&str], i64)]) -> Self {
        Summary(
            paths
                .iter()
                .map(|(p, b)| (p.iter().map(|s| s.to_string()).collect(), *b))
                .collect(),
        )
    }

    /// Each call path (leaf first) and its in-use bytes.
    pub fn paths(&self) -> impl Iterator<Item = (&[String], i64)> {
        self.0.iter().map(|(p, b)| (p.as_slice(), *b))
    }
}

impl Eq for Summary {}
impl PartialEq for Summary {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}

/// A gzip'd pprof profile's `inuse_space` per call path.
pub fn summarize(gz: &[u8]) -> Result<Summary> {
    summarize_within(gz, PATHS_MAX, FRAMES_MAX)
}

/// As `summarize`, keeping `paths` paths of `frames` frames at most (those nearest the leaf).
pub fn summarize_within(gz: &[u8], paths_max: usize, frames_max: usize) -> Result<Summary> {
    anyhow::ensure!(
        gz.len() <= PROFILE_MAX,
        "profile larger than {PROFILE_MAX} bytes"
    );
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(INFLATED_MAX)
        .read_to_end(&mut raw)
        .context("gunzip")?;
    let p = proto::Profile::decode(raw.as_slice()).context("decoding the profile")?;
    let s = |i: i64| p.string_table.get(i as usize).map_or("", String::as_str);
    let inuse = p
        .sample_type
        .iter()
        .position(|t| s(t.r#type) == "inuse_space")
        .context("no inuse_space in the profile")?;
    let functions: HashMap<u64, &str> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locations: HashMap<u64, Vec<&str>> = p
        .location
        .iter()
        .map(|l| {
            let names = l
                .line
                .iter()
                .map(|line| functions.get(&line.function_id).copied().unwrap_or("?"))
                .collect();
            (l.id, names)
        })
        .collect();
    let mut paths: HashMap<Vec<String>, i64> = HashMap::new();
    for sample in &p.sample {
        let Some(&bytes) = sample.value.get(inuse) else {
            continue;
        };
        let path: Vec<String> = sample
            .location_id
            .iter()
            .flat_map(|id| locations.get(id).into_iter().flatten())
            .take(frames_max)
            .map(|f| f.to_string())
            .collect();
        let held = paths.entry(path).or_default();
        *held = held.saturating_add(bytes);
    }
    let mut kept: Vec<(Vec<String>, i64)> = paths.into_iter().collect();
    kept.sort_unstable_by_key(|(_, b)| std::cmp::Reverse(*b));
    kept.truncate(paths_max);
    Ok(Summary(kept.into_iter().collect()))
}

/// The functions whose in-use bytes grew most from `first` to `last`, most first.
pub fn grew(first: &Summary, last: &Summary) -> Vec<Grower> {
    let mut by_path: HashMap<&Vec<String>, i64> = HashMap::new();
    for (path, b) in &last.0 {
        *by_path.entry(path).or_default() += b;
    }
    for (path, b) in &first.0 {
        *by_path.entry(path).or_default() -= b;
    }
    let mut by_function: HashMap<&str, (i64, &Vec<String>, i64)> = HashMap::new();
    for (path, &delta) in &by_path {
        let leaf = path.first().map_or("?", String::as_str);
        let e = by_function.entry(leaf).or_insert((0, path, i64::MIN));
        e.0 = e.0.saturating_add(delta);
        if delta > e.2 {
            (e.1, e.2) = (path, delta);
        }
    }
    let total: i64 = by_function.values().map(|e| e.0.max(0)).sum();
    let mut out: Vec<Grower> = by_function
        .into_iter()
        .filter(|(_, e)| e.0 > 0)
        .map(|(f, (bytes, path, _))| Grower {
            function: f.to_string(),
            bytes,
            share: (1000.0 * bytes as f64 / total.max(1) as f64).round() / 10.0,
            path: path.clone(),
        })
        .collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.function.cmp(&b.function)));
    out.truncate(TOP);
    out
}

/// Each process's first and last heap profile's summaries, and when the last came.
#[derive(Default)]
pub struct Episodes(HashMap<ProcKey, (Summary, Option<Summary>, Instant)>);

/// How long a dead process's summaries outlive it (its record and at-kill line use them).
const AFTER_DEATH: Duration = Duration::from_secs(60);

impl Episodes {
    /// Forgets the processes `alive` does not keep, once their last profile is old.
    pub fn retain(&mut self, alive: impl Fn(&ProcKey) -> bool) {
        self.0
            .retain(|k, e| alive(k) || e.2.elapsed() < AFTER_DEATH);
    }
}

impl Capturer {
    /// Summarizes a heap profile as it is stored (off the async threads).
    pub(super) async fn note_profile(&self, key: ProcKey, profile: &Profile) {
        if profile.kind != "heap"
            || profile.extension != "pb.gz"
            || profile.bytes.len() > PROFILE_MAX
        {
            return;
        }
        let bytes = profile.bytes.clone();
        let Ok(Ok(summary)) = tokio::task::spawn_blocking(move || summarize(&bytes)).await else {
            return;
        };
        let mut episodes = self.episodes.lock().expect("episodes");
        if episodes.0.len() >= PROCS_MAX && !episodes.0.contains_key(&key) {
            episodes.0.clear();
        }
        match episodes.0.get_mut(&key) {
            Some(e) => (e.1, e.2) = (Some(summary), Instant::now()),
            None => {
                episodes.0.insert(key, (summary, None, Instant::now()));
            }
        }
    }

    /// What grew between the process's first and last stored heap profiles (nothing with one).
    pub(super) fn grew_of(&self, key: ProcKey) -> Vec<Grower> {
        match self.episodes.lock().expect("episodes").0.get(&key) {
            Some((first, Some(last), _)) => grew(first, last),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(paths: &[(&[&str], i64)]) -> Summary {
        Summary::from_paths(paths)
    }

    #[test]
    fn the_leak_grew_most() {
        let first = summary(&[
            (&["main.leak", "main.main"], 10),
            (&["json.decode", "main.serve"], 50),
        ]);
        let last = summary(&[
            (&["main.leak", "main.main"], 400),
            (&["main.leak", "main.other"], 10),
            (&["json.decode", "main.serve"], 40),
            (&["bytes.grow", "main.serve"], 90),
        ]);
        let g = grew(&first, &last);
        assert_eq!(g[0].function, "main.leak");
        assert_eq!(g[0].bytes, 400);
        assert_eq!(g[0].path, ["main.leak", "main.main"]);
        assert_eq!(g[0].share, 81.6);
        assert_eq!(g[1].function, "bytes.grow");
        assert_eq!(g.len(), 2, "what shrank is not named: {g:?}");
    }
}
