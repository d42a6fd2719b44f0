//! `memprof report`: the morning after, one page per selection. Reads what memprof stored
//! (`source`: a directory or S3), groups it into incidents (`incident`), reads each series
//! streaming (`gather`) and writes a self-contained HTML page (`page`: facts, `timeline`,
//! `flame` graphs, the memory accounting, the keys) or text for a terminal (`text`).
mod flame;
mod gather;
mod incident;
mod page;
mod source;
mod text;
mod timeline;

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::config::{ReportArgs as Options, ReportFormat};
use incident::Selection;
use source::Source;

pub async fn run(o: Options) -> Result<ExitCode> {
    let (selection, out) = match check(&o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("memprof: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let source = Arc::new(Source::open(&o.from).await?);
    let keys = source
        .keys()
        .await
        .with_context(|| format!("reading {}", source.describe()))?;
    let all = incident::series(&keys, &selection);
    let bar = gather::progress(gather::reads(&all));
    let count = all.len();
    // Each incident is written as soon as it is read, and dropped: only its text is kept.
    let mut sections = Vec::with_capacity(count);
    for (i, s) in all.into_iter().enumerate() {
        let incident = gather::read(&source, s, &bar).await;
        sections.push(match o.format {
            ReportFormat::Text => text::incident(&incident),
            ReportFormat::Html => page::section(i, &incident),
        });
    }
    bar.finish_and_clear();
    if count == 0 {
        eprintln!(
            "memprof: nothing stored in {} matches the selection ({} objects there)",
            source.describe(),
            keys.len()
        );
    }
    match o.format {
        ReportFormat::Text => print!("{}", text::text(&sections, &source.describe())),
        ReportFormat::Html => {
            let generated = Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string();
            let html = page::html(&sections, &source.describe(), &generated);
            let out = out.expect("checked: html has a file");
            std::fs::write(&out, html).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("memprof: {count} incident(s) written to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The options checked: the selection, and where the page goes.
fn check(o: &Options) -> Result<(Selection, Option<PathBuf>), String> {
    let when = |v: &Option<String>, flag: &str| -> Result<Option<DateTime<Utc>>, String> {
        let Some(v) = v.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(v) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        age(v)
            .map(|d| Some(Utc::now() - d))
            .ok_or_else(|| {
                format!("invalid --{flag}: {v:?} is not a time (2026-12-05T08:00:00Z) nor an age (90m, 6h, 2d)")
            })
    };
    let selection = Selection {
        namespace: o.namespace.clone(),
        pod: o.pod.clone(),
        process: o.process.clone(),
        since: when(&o.since, "since")?,
        until: when(&o.until, "until")?,
    };
    let out = match (o.format, &o.out) {
        (ReportFormat::Html, None) => Some(PathBuf::from("memprof-report.html")),
        (ReportFormat::Html, Some(p)) => Some(p.clone()),
        (ReportFormat::Text, Some(_)) => {
            return Err("--out is for the HTML page; --format text prints to the terminal".into())
        }
        (ReportFormat::Text, None) => None,
    };
    Ok((selection, out))
}

/// `90m`, `6h`, `2d`, `45s`.
fn age(v: &str) -> Option<chrono::TimeDelta> {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    match unit {
        "s" => chrono::TimeDelta::try_seconds(n),
        "m" => chrono::TimeDelta::try_minutes(n),
        "h" => chrono::TimeDelta::try_hours(n),
        "d" => chrono::TimeDelta::try_days(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            from: "/tmp".into(),
            namespace: None,
            pod: None,
            process: None,
            since: None,
            until: None,
            out: None,
            format: ReportFormat::Html,
        }
    }

    #[test]
    fn times_are_instants_or_ages_and_nothing_else() {
        assert_eq!(age("90m"), chrono::TimeDelta::try_minutes(90));
        assert_eq!(age("2d"), chrono::TimeDelta::try_days(2));
        assert!(age("6 hours").is_none() && age("h").is_none() && age("").is_none());
        let o = Options {
            since: Some("2026-12-05T08:00:00Z".into()),
            until: Some("1h".into()),
            ..options()
        };
        let (s, out) = check(&o).unwrap();
        assert_eq!(s.since.unwrap().to_rfc3339(), "2026-12-05T08:00:00+00:00");
        assert!(s.until.unwrap() < Utc::now());
        assert_eq!(out.unwrap(), PathBuf::from("memprof-report.html"));
        let bad = Options {
            since: Some("yesterday".into()),
            ..options()
        };
        assert!(check(&bad).unwrap_err().contains("invalid --since"));
        let text_to_file = Options {
            format: ReportFormat::Text,
            out: Some("x".into()),
            ..options()
        };
        assert!(check(&text_to_file).is_err());
    }
}
