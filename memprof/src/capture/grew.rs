//! What grew before the kill: each heap profile memprof stores is summarized as it is stored
//! (`summary`), and the OOM record compares the process's first profile with its last (the
//! at-kill profile when there is one): the functions whose in-use bytes grew most, each with
//! the call path that grew most. What is kept is bounded in all: summaries are made one at a
//! time, and the stalest are forgotten past `KEPT_MAX` bytes.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    summary::{self, Keep, Summary},
    Capturer, Profile,
};
use crate::assess::ProcKey;

/// What a summary keeps: the record names five functions and their paths.
const KEEP: Keep = Keep {
    paths: 4096,
    frames: 32,
};
/// Functions the record names.
const TOP: usize = 5;
/// Bytes all summaries may hold (each is far smaller: paths, frames, names of 256 bytes at
/// most).
const KEPT_MAX: usize = 32 << 20;

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

/// The functions whose in-use bytes grew most from `first` to `last`, most first.
pub fn grew(first: &Summary, last: &Summary) -> Vec<Grower> {
    let mut by_path: HashMap<&[Arc<str>], i64> = HashMap::new();
    for (path, b) in last.paths() {
        let e = by_path.entry(path).or_default();
        *e = e.saturating_add(b);
    }
    for (path, b) in first.paths() {
        let e = by_path.entry(path).or_default();
        *e = e.saturating_sub(b);
    }
    let mut by_function: HashMap<&str, (i64, &[Arc<str>], i64)> = HashMap::new();
    for (&path, &delta) in &by_path {
        let leaf = path.first().map_or("?", |f| &**f);
        let e = by_function.entry(leaf).or_insert((0, path, i64::MIN));
        e.0 = e.0.saturating_add(delta);
        if delta > e.2 {
            (e.1, e.2) = (path, delta);
        }
    }
    let total: i64 = by_function
        .values()
        .map(|e| e.0.max(0))
        .fold(0, i64::saturating_add);
    let mut out: Vec<Grower> = by_function
        .into_iter()
        .filter(|(_, e)| e.0 > 0)
        .map(|(f, (bytes, path, _))| Grower {
            function: f.to_string(),
            bytes,
            share: (1000.0 * bytes as f64 / total.max(1) as f64).round() / 10.0,
            path: path.iter().map(|f| f.to_string()).collect(),
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

    /// Keeps `summary` as the process's first, or its last; then forgets the processes whose
    /// last profile is stalest until all fit in `KEPT_MAX` (one tenant's many processes push
    /// out the stalest, not everyone's).
    fn note(&mut self, key: ProcKey, summary: Summary) {
        match self.0.get_mut(&key) {
            Some(e) => (e.1, e.2) = (Some(summary), Instant::now()),
            None => {
                self.0.insert(key, (summary, None, Instant::now()));
            }
        }
        let weight = |e: &(Summary, Option<Summary>, Instant)| {
            e.0.weight() + e.1.as_ref().map_or(0, Summary::weight)
        };
        let mut held: usize = self.0.values().map(weight).sum();
        while held > KEPT_MAX && self.0.len() > 1 {
            let (&stalest, e) = self
                .0
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.2)
                .expect("more than one");
            held -= weight(e);
            self.0.remove(&stalest);
        }
    }
}

impl Capturer {
    /// Summarizes a heap profile as it is stored, one at a time, off the async threads.
    pub(super) async fn note_profile(&self, key: ProcKey, profile: &Profile) {
        if profile.kind != "heap"
            || profile.extension != "pb.gz"
            || profile.bytes.len() > summary::PROFILE_MAX
        {
            return;
        }
        let Ok(_one) = self.summarizing.acquire().await else {
            return;
        };
        let bytes = profile.bytes.clone();
        let summary = tokio::task::spawn_blocking(move || summary::summarize(&bytes, KEEP)).await;
        match summary {
            Ok(Ok(summary)) => self.episodes.lock().expect("episodes").note(key, summary),
            Ok(Err(e)) => tracing::debug!(pid = key.pid, "profile not summarized: {e:#}"),
            Err(_) => {}
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
