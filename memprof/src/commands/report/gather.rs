//! Reads what a report needs of each series, streaming: every object's metadata (RSS, limit,
//! working set at its capture), the OOM record, and only the first and last heap profiles,
//! each summarized as it arrives and then dropped — a long series costs reads, not memory.
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::{
    incident::{Object, Series},
    source::Source,
    timeline::{Kill, Point},
};
use crate::capture::{
    grew::{self, Grower},
    summary::{self, Keep, Summary},
};

/// Requests in flight at once (S3 latency, not bandwidth, bounds a long series).
const PARALLEL: usize = 8;
/// What a flame graph shows of a profile: the heaviest call paths, deep enough for any
/// service's stacks (deeper ones are cut at the root end, marked `…`).
const KEEP: Keep = Keep {
    paths: 20_000,
    frames: 128,
};
/// Largest OOM record read.
const RECORD_MAX: usize = 16 << 20;

/// One series, read.
pub struct Incident {
    pub series: Series,
    pub points: Vec<Point>,
    pub kill: Option<Kill>,
    pub record: Option<Value>,
    /// The first and last heap profiles' keys and summaries (the same one when alone).
    pub first: Option<(String, Summary)>,
    pub last: Option<(String, Summary)>,
    pub grew: Vec<Grower>,
    /// What could not be read, for the page to say.
    pub problems: Vec<String>,
}

impl Incident {
    /// `namespace/pod/container`.
    pub fn who(&self) -> String {
        let o = self.series.first();
        format!("{}/{}/{}", o.namespace, o.pod, o.name)
    }
}

/// The reads `read` makes across `all`, for the progress bar: each object's metadata (the
/// record's body instead of its metadata), and the first and last heap profiles.
pub fn reads(all: &[Series]) -> u64 {
    all.iter()
        .map(|s| (s.objects.len() + s.heaps().count().min(2)) as u64)
        .sum()
}

pub fn progress(total: u64) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} reading {pos}/{len} objects {wide_bar} {eta}")
            .expect("a valid template"),
    );
    bar
}

pub async fn read(source: &Arc<Source>, series: Series, bar: &ProgressBar) -> Incident {
    let mut problems = Vec::new();
    let metas: Vec<(Object, Result<crate::deliver::metadata::Metadata>)> =
        futures_util::stream::iter(series.objects.iter().filter(|o| !o.is_record()).cloned())
            .map(|o| {
                let source = Arc::clone(source);
                async move {
                    let m = source.metadata(&o.key).await;
                    (o, m)
                }
            })
            .buffered(PARALLEL)
            .inspect(|_| bar.inc(1))
            .collect()
            .await;
    let mut points = Vec::new();
    for (o, meta) in metas {
        let meta = meta.unwrap_or_else(|e| {
            problems.push(format!("{}: {e:#}", o.key));
            Default::default()
        });
        let n = |f: &str| meta.get(f).and_then(|v| v.parse::<u64>().ok());
        points.push(Point {
            time: meta
                .get("captured-at")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .or(Some(o.time)),
            level: o.level.clone(),
            rss: n("rss"),
            working_set: n("working-set"),
            limit: n("limit"),
        });
    }
    let record = match series.record() {
        Some(o) => {
            bar.inc(1);
            match record(source, &o.key).await {
                Ok(r) => Some(r),
                Err(e) => {
                    problems.push(format!("{}: {e:#}", o.key));
                    None
                }
            }
        }
        None => None,
    };
    let heaps: Vec<&Object> = series.heaps().collect();
    let first = summary(source, heaps.first().copied(), &mut problems, bar).await;
    let last = match heaps.len() {
        0 | 1 => None,
        _ => summary(source, heaps.last().copied(), &mut problems, bar).await,
    };
    let kill = record.as_ref().and_then(kill_of);
    let grew = match record.as_ref().and_then(|r| r.get("grew")) {
        Some(g) => serde_json::from_value(g.clone()).unwrap_or_default(),
        None => match (&first, &last) {
            (Some(f), Some(l)) => grew::grew(&f.1, &l.1),
            _ => Vec::new(),
        },
    };
    Incident {
        series,
        points,
        kill,
        record,
        first,
        last,
        grew,
        problems,
    }
}

async fn record(source: &Source, key: &str) -> Result<Value> {
    let bytes = source.get(key).await?;
    anyhow::ensure!(bytes.len() <= RECORD_MAX, "larger than {RECORD_MAX} bytes");
    serde_json::from_slice(&bytes).context("not JSON")
}

async fn summary(
    source: &Source,
    o: Option<&Object>,
    problems: &mut Vec<String>,
    bar: &ProgressBar,
) -> Option<(String, Summary)> {
    let o = o?;
    bar.inc(1);
    let read = async {
        let bytes = source.get(&o.key).await?;
        tokio::task::spawn_blocking(move || summary::summarize(&bytes, KEEP)).await?
    };
    match read.await {
        Ok(s) => Some((o.key.clone(), s)),
        Err(e) => {
            problems.push(format!("{}: {e:#}", o.key));
            None
        }
    }
}

fn kill_of(record: &Value) -> Option<Kill> {
    let time = DateTime::parse_from_rfc3339(record.get("killed_at")?.as_str()?).ok()?;
    Some(Kill {
        time: time.with_timezone(&Utc),
        rss: record.get("rss_bytes").and_then(Value::as_u64),
        working_set: record.get("working_set_bytes").and_then(Value::as_u64),
    })
}
