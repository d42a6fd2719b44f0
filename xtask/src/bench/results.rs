//! One results table for every benchmark: each measurement adds its modes as rows (samples in
//! one unit, optionally compared with a baseline mode of the same measurement), each group is
//! printed as it completes, and the run ends with the whole table, dated and with the commit
//! it measured, ready to be quoted in docs/costs.md.
use std::process::Command;

use crate::workspace_root;

struct Row {
    bench: &'static str,
    mode: String,
    unit: &'static str,
    samples: Vec<f64>,
    /// The baseline's median, for the "vs base" column.
    base: Option<f64>,
    note: String,
}

#[derive(Default)]
pub struct Results {
    rows: Vec<Row>,
}

impl Results {
    /// Adds one mode of a measurement; `base` is the median it is compared with.
    pub fn add(
        &mut self,
        bench: &'static str,
        mode: &str,
        unit: &'static str,
        samples: &[f64],
        base: Option<f64>,
    ) {
        self.rows.push(Row {
            bench,
            mode: mode.to_string(),
            unit,
            samples: samples.to_vec(),
            base,
            note: String::new(),
        });
    }

    /// A note on the row added last (e.g. how many kernel programs were attached).
    pub fn note(&mut self, note: String) {
        if let Some(row) = self.rows.last_mut() {
            row.note = note;
        }
    }

    /// Prints the rows of one measurement.
    pub fn print_group(&self, bench: &str) {
        print_rows(self.rows.iter().filter(|r| r.bench == bench));
    }

    /// Prints every row, under the date and the commit measured.
    pub fn print(&self) {
        if self.rows.is_empty() {
            return;
        }
        let commit = Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(workspace_root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        println!("\nall results, {date}, commit {commit}");
        print_rows(self.rows.iter());
    }
}

/// The median, least and greatest of `v` (NaN when empty).
pub fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(&min), Some(&max)) => (v[v.len() / 2], min, max),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

fn print_rows<'a>(rows: impl Iterator<Item = &'a Row>) {
    println!(
        "{:<18} {:<42} {:>4} {:>10} {:>10} {:>10} {:<6} {:>8}  note",
        "benchmark", "mode", "n", "median", "min", "max", "unit", "vs base"
    );
    for r in rows {
        let (median, min, max) = summary(&r.samples);
        let vs = match r.base {
            Some(base) if base > 0.0 => format!("{:+.1}%", (median / base - 1.0) * 100.0),
            _ => String::new(),
        };
        println!(
            "{:<18} {:<42} {:>4} {median:>10.2} {min:>10.2} {max:>10.2} {:<6} {vs:>8}  {}",
            r.bench,
            r.mode,
            r.samples.len(),
            r.unit,
            r.note
        );
    }
}
