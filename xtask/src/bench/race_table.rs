//! What the race's trials add up to: the race table (per detector, level and rate: stored
//! before the kill, the median margin, at-kill profiles), the detection latency's percentiles,
//! and the two figures a reader would rather look at (a heat map of the table, the latency's
//! CDF).
use super::{
    plots,
    race::{DETECTORS, LEVELS, RATES},
    Results,
};

/// One level of one trial, on CLOCK_MONOTONIC (seconds).
pub struct Outcome {
    /// When the service's RSS reached the level (none: killed before it did).
    pub crossed: Option<f64>,
    /// When memprof decided to capture, and when the profile was stored.
    pub decided: Option<f64>,
    pub stored: Option<f64>,
}

impl Outcome {
    /// From the crossing to the decision, ms.
    fn latency(&self) -> Option<f64> {
        Some((self.decided? - self.crossed?) * 1e3)
    }
}

pub struct Trial {
    pub mode: &'static str,
    pub rate: u32,
    /// The rate the service reached, MiB/s.
    pub achieved: f64,
    /// The kernel's `mark_victim`.
    pub kill: Option<f64>,
    pub levels: [Outcome; 2],
    pub at_kill: bool,
}

impl Trial {
    /// Stored before the kill, with the margin in ms.
    fn margin(&self, level: usize) -> Option<f64> {
        let m = (self.kill? - self.levels[level].stored?) * 1e3;
        (m > 0.0).then_some(m)
    }

    pub fn line(&self) -> String {
        let each = |i: usize| match (self.margin(i), self.levels[i].stored) {
            (Some(m), _) => format!(
                "{}% {m:.0} ms before (decided {:.1} ms after the crossing)",
                LEVELS[i],
                self.levels[i].latency().unwrap_or(f64::NAN)
            ),
            (None, Some(_)) => format!("{}% after the kill", LEVELS[i]),
            (None, None) => format!("{}% none", LEVELS[i]),
        };
        format!(
            "{:<12} {:>4} MiB/s (reached {:>5.0}): {}, {}, at-kill {}",
            self.mode,
            self.rate,
            self.achieved,
            each(0),
            each(1),
            if self.at_kill { "yes" } else { "no" }
        )
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn report(all: &[Trial], results: &mut Results) {
    let cells = |mode: &str, rate: u32| -> Vec<&Trial> {
        all.iter()
            .filter(|t| t.mode == mode && t.rate == rate)
            .collect()
    };
    let mut table = String::from("| detector | level |");
    for rate in RATES {
        table += &format!(" {rate} MiB/s |");
    }
    table += "\n|---|---|";
    table += &"---|".repeat(RATES.len());
    let mut heat = Vec::new();
    for (mode, _) in DETECTORS {
        for (l, level) in LEVELS.iter().enumerate() {
            table += &format!("\n| {mode} | {level} % |");
            let mut row = Vec::new();
            for rate in RATES {
                let trials = cells(mode, rate);
                let mut margins: Vec<f64> = trials.iter().filter_map(|t| t.margin(l)).collect();
                margins.sort_by(f64::total_cmp);
                let won = margins.len();
                let median = percentile(&margins, 50.0);
                table += &match won {
                    0 => format!(" 0/{} |", trials.len()),
                    _ => format!(" {won}/{}, {median:.0} ms |", trials.len()),
                };
                let label = match won {
                    0 => format!("0/{}", trials.len()),
                    _ => format!("{won}/{} · {median:.0} ms", trials.len()),
                };
                row.push((won as f64 / trials.len().max(1) as f64, label));
            }
            heat.push((format!("{mode}, {level} %"), row));
        }
        table += &format!("\n| {mode} | at-kill |");
        for rate in RATES {
            let trials = cells(mode, rate);
            let got = trials.iter().filter(|t| t.at_kill).count();
            table += &format!(" {got}/{} |", trials.len());
        }
    }
    let mut reached = String::from("\n\nRates the service reached (median MiB/s):");
    for rate in RATES {
        let mut r: Vec<f64> = all
            .iter()
            .filter(|t| t.rate == rate)
            .map(|t| t.achieved)
            .collect();
        r.sort_by(f64::total_cmp);
        reached += &format!(" {rate} → {:.0};", percentile(&r, 50.0));
    }
    println!("\nthe race (stored before the kill, of trials; median margin stored → kill)\n{table}{reached}");
    results.table(
        "The race against the OOM killer",
        format!(
            "Cells: trials whose profile of that level was stored (in S3) before the kernel \
             chose the victim, of all trials, and the median margin from stored to the kill. \
             `at-kill`: trials whose at-kill profile (the kernel's walk of the dead process's \
             heap) was stored.\n\n{table}{reached}"
        ),
    );
    let columns: Vec<String> = RATES.iter().map(|r| format!("{r} MiB/s")).collect();
    results.figure(
        "race.svg",
        "The race table: share of trials stored before the kill",
        plots::heat_map(&columns, &heat),
    );
    latency(all, results);
}

fn latency(all: &[Trial], results: &mut Results) {
    let mut table = String::from(
        "| detector | crossings | decided | p50 | p99 | max | stored p50 | stored p99 | stored max |\n|---|---|---|---|---|---|---|---|---|",
    );
    let mut curves = Vec::new();
    for (mode, _) in DETECTORS {
        let crossings: Vec<&Outcome> = all
            .iter()
            .filter(|t| t.mode == mode)
            .flat_map(|t| t.levels.iter())
            .filter(|o| o.crossed.is_some())
            .collect();
        let ms = |f: fn(&Outcome) -> Option<f64>| {
            let mut v: Vec<f64> = crossings
                .iter()
                .filter_map(|o| Some((f(o)? - o.crossed?) * 1e3))
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let decided = ms(|o| o.decided);
        let stored = ms(|o| o.stored);
        let p = |v: &[f64], q| percentile(v, q);
        table += &format!(
            "\n| {mode} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            crossings.len(),
            decided.len(),
            p(&decided, 50.0),
            p(&decided, 99.0),
            p(&decided, 100.0),
            p(&stored, 50.0),
            p(&stored, 99.0),
            p(&stored, 100.0)
        );
        results.add("detection latency", mode, "ms", &decided, None);
        results.note(format!(
            "p99 {:.2}, decided for {} of {} crossings",
            p(&decided, 99.0),
            decided.len(),
            crossings.len()
        ));
        curves.push((mode.to_string(), decided, crossings.len()));
    }
    println!("\ndetection latency (crossing → decision, and → stored in S3), ms\n{table}");
    results.table(
        "Detection latency",
        format!(
            "From the moment the service's RSS crossed the level (the service's own \
             CLOCK_MONOTONIC timestamps, interpolated within its 10 ms step) to memprof's \
             decision to capture, and to the profile stored in S3; every crossing of the race's \
             trials. A crossing without a decision is one the service was killed before memprof \
             acted on.\n\n{table}"
        ),
    );
    results.figure(
        "latency.svg",
        "Detection latency, crossing → decision: the share of crossings decided within x ms",
        plots::cdf(&curves),
    );
}
