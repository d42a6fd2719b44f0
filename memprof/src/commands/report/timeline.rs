//! The episode's timeline as inline SVG: RSS at each capture and the container's working set
//! against the limit and the armed levels, up to the kill.
use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::page::{esc, mib};

const W: f64 = 1200.0;
const H: f64 = 280.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 140.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

/// One capture as its metadata states it.
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub time: Option<DateTime<Utc>>,
    pub level: String,
    pub rss: Option<u64>,
    pub working_set: Option<u64>,
    pub limit: Option<u64>,
}

/// The kill, as the record states it.
#[derive(Clone, Debug)]
pub struct Kill {
    pub time: DateTime<Utc>,
    pub rss: Option<u64>,
    pub working_set: Option<u64>,
}

pub fn svg(points: &[Point], kill: Option<&Kill>) -> String {
    // The at-kill profile is the kill's own point (the kernel read it as SIGKILL arrived;
    // its metadata's time is when it was stored): the kill's markers stand for it.
    let points: Vec<&Point> = points
        .iter()
        .filter(|p| kill.is_none() || p.level != "oom")
        .collect();
    let times: Vec<DateTime<Utc>> = points
        .iter()
        .filter_map(|p| p.time)
        .chain(kill.map(|k| k.time))
        .collect();
    let (Some(&t0), Some(&t1)) = (times.iter().min(), times.iter().max()) else {
        return String::new();
    };
    let span = ((t1 - t0).num_milliseconds() as f64).max(1000.0);
    let limit = points.iter().filter_map(|p| p.limit).max();
    let top = points
        .iter()
        .flat_map(|p| [p.rss, p.working_set])
        .chain(kill.into_iter().flat_map(|k| [k.rss, k.working_set]))
        .flatten()
        .chain(limit)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.08;
    let x =
        |t: DateTime<Utc>| LEFT + (t - t0).num_milliseconds() as f64 / span * (W - LEFT - RIGHT);
    let y = |b: u64| TOP + (1.0 - b as f64 / top) * (H - TOP - BOTTOM);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="timeline" viewBox="0 0 {W} {H}" width="100%" xmlns="http://www.w3.org/2000/svg"><line class="axis" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/>"#,
        b = H - BOTTOM,
        r = W - RIGHT,
    );
    // Bytes on the left: four steps.
    for i in 0..=4 {
        let v = (top / 1.08 * f64::from(i) / 4.0) as u64;
        let _ = write!(
            out,
            r#"<text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{}</text>"#,
            mib(v),
            tx = LEFT - 6.0,
            ty = y(v) + 4.0
        );
    }
    // Seconds from the first capture along the bottom.
    for i in 0..=5 {
        let ms = span * f64::from(i) / 5.0;
        let _ = write!(
            out,
            r#"<text class="tick" x="{tx:.1}" y="{ty}" text-anchor="middle">+{:.1} s</text>"#,
            ms / 1000.0,
            tx = LEFT + ms / span * (W - LEFT - RIGHT),
            ty = H - BOTTOM + 18.0
        );
    }
    if let Some(limit) = limit {
        let _ = write!(
            out,
            r#"<line class="limit" x1="{LEFT}" y1="{ly:.1}" x2="{r}" y2="{ly:.1}"/><text class="limit" x="{tx}" y="{ty:.1}">limit {}</text>"#,
            mib(limit),
            ly = y(limit),
            r = W - RIGHT,
            tx = W - RIGHT + 6.0,
            ty = y(limit) + 4.0
        );
        let mut levels: Vec<u64> = points
            .iter()
            .filter_map(|p| {
                p.level
                    .strip_suffix("pct")?
                    .rsplit('-')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        levels.sort_unstable();
        levels.dedup();
        for pct in levels.into_iter().filter(|p| *p < 100) {
            let ly = y(limit / 100 * pct);
            let _ = write!(
                out,
                r#"<line class="level" x1="{LEFT}" y1="{ly:.1}" x2="{r}" y2="{ly:.1}"/><text class="level" x="{tx}" y="{ty:.1}">level {pct} %</text>"#,
                r = W - RIGHT,
                tx = W - RIGHT + 6.0,
                ty = ly + 4.0
            );
        }
    }
    let series = |pick: fn(&Point) -> Option<u64>, class: &str, out: &mut String| {
        let pts: Vec<(f64, f64, &Point)> = points
            .iter()
            .filter_map(|p| Some((x(p.time?), y(pick(p)?), *p)))
            .collect();
        let line: Vec<String> = pts
            .iter()
            .map(|(a, b, _)| format!("{a:.1},{b:.1}"))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="{class}" points="{}"/>"#,
            line.join(" ")
        );
        for (px, py, p) in pts {
            let _ = write!(
                out,
                r#"<circle class="{class}" cx="{px:.1}" cy="{py:.1}" r="4"><title>{}: {} at {}</title></circle>"#,
                esc(&p.level),
                mib(pick(p).unwrap_or(0)),
                p.time
                    .map(|t| t.format("%H:%M:%S%.3f").to_string())
                    .unwrap_or_default()
            );
        }
    };
    series(|p| p.working_set, "working-set", &mut out);
    series(|p| p.rss, "rss", &mut out);
    // Each level named where it was first reached (a long series repeats it).
    let mut named = std::collections::HashSet::new();
    for p in &points {
        if !named.insert(p.level.as_str()) {
            continue;
        }
        if let (Some(t), Some(r)) = (p.time, p.rss) {
            let _ = write!(
                out,
                r#"<text class="capture" x="{tx:.1}" y="{ty:.1}" text-anchor="middle">{}</text>"#,
                esc(&p.level),
                tx = x(t),
                ty = y(r) - 9.0
            );
        }
    }
    if let Some(k) = kill {
        let kx = x(k.time);
        let _ = write!(
            out,
            r#"<line class="kill" x1="{kx:.1}" y1="{TOP}" x2="{kx:.1}" y2="{b}"/><text class="kill" x="{tx:.1}" y="{ty}" text-anchor="end">OOM kill</text>"#,
            b = H - BOTTOM,
            tx = kx - 5.0,
            ty = H - BOTTOM - 8.0
        );
        for (v, class) in [(k.rss, "rss"), (k.working_set, "working-set")] {
            if let Some(v) = v {
                let _ = write!(
                    out,
                    r#"<circle class="{class} at-kill" cx="{kx:.1}" cy="{cy:.1}" r="5"><title>at the kill: {}</title></circle>"#,
                    mib(v),
                    cy = y(v)
                );
            }
        }
    }
    let _ = write!(
        out,
        r#"<g class="legend"><circle class="rss" cx="{lx}" cy="{a}" r="4"/><text x="{tx}" y="{ta}">RSS</text><circle class="working-set" cx="{lx}" cy="{b}" r="4"/><text x="{tx}" y="{tb}">working set</text></g></svg>"#,
        lx = W - RIGHT + 12.0,
        tx = W - RIGHT + 22.0,
        a = H - 60.0,
        ta = H - 56.0,
        b = H - 44.0,
        tb = H - 40.0,
    );
    out
}
