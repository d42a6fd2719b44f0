//! One results table for every benchmark: each measurement adds its modes as rows (samples in
//! one unit, optionally compared with a baseline mode of the same measurement), each group is
//! printed as it completes, and the run ends with the whole table, dated and with the commit
//! it measured, ready to be quoted in docs/costs.md.
use super::stamp;

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
    /// Tables of their own shape (the race table) and their figures.
    pub sections: Vec<Section>,
}

/// A table in markdown under its title, and the SVG figures that go with it.
pub struct Section {
    pub title: String,
    pub markdown: String,
    /// File name, caption, document.
    pub figures: Vec<(String, String, String)>,
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

    /// A table of its own shape, in markdown, for the written report.
    pub fn table(&mut self, title: &str, markdown: String) {
        self.sections.push(Section {
            title: title.to_string(),
            markdown,
            figures: Vec::new(),
        });
    }

    /// A figure for the written report, shown under the table added last.
    pub fn figure(&mut self, file: &str, caption: &str, svg: String) {
        if let Some(section) = self.sections.last_mut() {
            section
                .figures
                .push((file.to_string(), caption.to_string(), svg));
        }
    }

    /// The rows as markdown tables, one per measurement, in the order they were measured.
    pub fn markdown(&self) -> String {
        let mut benches: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !benches.contains(&r.bench) {
                benches.push(r.bench);
            }
        }
        let mut out = String::new();
        for bench in benches {
            out += &format!(
                "\n### {bench}\n\n| mode | n | median | min | max | unit | vs base | note |\n|---|---|---|---|---|---|---|---|\n"
            );
            for r in self.rows.iter().filter(|r| r.bench == bench) {
                let (median, min, max) = summary(&r.samples);
                out += &format!(
                    "| {} | {} | {median:.2} | {min:.2} | {max:.2} | {} | {} | {} |\n",
                    r.mode,
                    r.samples.len(),
                    r.unit,
                    versus(r, median),
                    r.note
                );
            }
        }
        out
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
        let (date, commit) = (stamp::date(), stamp::commit());
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
        let vs = versus(r, median);
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

/// The median against the baseline's, in percent.
fn versus(r: &Row, median: f64) -> String {
    match r.base {
        Some(base) if base > 0.0 => format!("{:+.1}%", (median / base - 1.0) * 100.0),
        _ => String::new(),
    }
}
