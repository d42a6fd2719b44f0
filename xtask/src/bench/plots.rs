//! The report's figures as plain SVG (no library: two simple charts, written so they render
//! the same in any browser and on GitHub).
use std::fmt::Write;

const FONT: &str = "font-family=\"sans-serif\" font-size=\"12\"";

/// A heat map: one row per label, one column per `columns`; each cell a share (0–1, red to
/// green) and the text written in it.
pub fn heat_map(columns: &[String], rows: &[(String, Vec<(f64, String)>)]) -> String {
    let (left, top, w, h) = (130.0, 30.0, 130.0, 34.0);
    let width = left + w * columns.len() as f64 + 10.0;
    let height = top + h * rows.len() as f64 + 10.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" {FONT}>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (c, name) in columns.iter().enumerate() {
        let x = left + w * (c as f64 + 0.5);
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"20\" text-anchor=\"middle\">{}</text>",
            esc(name)
        );
    }
    for (r, (label, cells)) in rows.iter().enumerate() {
        let y = top + h * r as f64;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + h / 2.0 + 4.0,
            esc(label)
        );
        for (c, (share, text)) in cells.iter().enumerate() {
            let x = left + w * c as f64;
            let _ = writeln!(
                s,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"white\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                w,
                h,
                color(*share),
                x + w / 2.0,
                y + h / 2.0 + 4.0,
                esc(text)
            );
        }
    }
    s + "</svg>\n"
}

/// Red (0) through yellow to green (1).
fn color(share: f64) -> String {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (r, g) = if share < 0.5 {
        (240.0, 110.0 + 260.0 * share)
    } else {
        (240.0 - 300.0 * (share - 0.5), 240.0)
    };
    format!("rgb({:.0},{:.0},110)", r.max(60.0), g.min(240.0))
}

/// Cumulative distributions on a logarithmic x axis (ms): per curve its sorted values and the
/// count they are a share of (values missing from it never reach 1).
pub fn cdf(curves: &[(String, Vec<f64>, usize)]) -> String {
    let (left, top, w, h) = (60.0, 20.0, 560.0, 260.0);
    let positive = curves.iter().flat_map(|c| c.1.iter()).filter(|v| **v > 0.0);
    let lo = positive.clone().fold(f64::INFINITY, |a, b| a.min(*b));
    let hi = positive.fold(0.0, |a: f64, b| a.max(*b));
    let (lo, hi) = match lo.is_finite() && hi > 0.0 {
        true => (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
        ),
        false => (0.01, 10.0),
    };
    let x = |v: f64| left + w * (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10());
    let y = |share: f64| top + h * (1.0 - share);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" {FONT}>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        left + w + 180.0,
        top + h + 50.0
    );
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" x2=\"{0}\" y1=\"{top}\" y2=\"{1}\" stroke=\"#ddd\"/>\n<text x=\"{0}\" y=\"{2}\" text-anchor=\"middle\">{decade}</text>",
            x(decade),
            top + h,
            top + h + 16.0
        );
        decade *= 10.0;
    }
    for share in [0.0, 0.5, 0.9, 1.0] {
        let (right, at, label_x) = (left + w, y(share), left - 6.0);
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{right}\" y1=\"{at}\" y2=\"{at}\" stroke=\"#ddd\"/>\n<text x=\"{label_x}\" y=\"{}\" text-anchor=\"end\">{share}</text>",
            at + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">ms (log scale); y: share of all crossings</text>",
        left + w / 2.0,
        top + h + 36.0
    );
    let palette = ["#1b7837", "#d6604d", "#4393c3", "#8073ac"];
    for (i, (name, values, total)) in curves.iter().enumerate() {
        let colour = palette[i % palette.len()];
        let mut points = format!("{:.1},{:.1}", x(lo), y(0.0));
        for (k, v) in values.iter().enumerate() {
            let before = k as f64 / (*total).max(1) as f64;
            let after = (k + 1) as f64 / (*total).max(1) as f64;
            let _ = write!(
                points,
                " {:.1},{:.1} {:.1},{:.1}",
                x(*v),
                y(before),
                x(*v),
                y(after)
            );
        }
        let last = values.len() as f64 / (*total).max(1) as f64;
        let _ = write!(points, " {:.1},{:.1}", x(hi), y(last));
        let _ = writeln!(
            s,
            "<polyline points=\"{points}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{} ({}/{})</text>",
            left + w + 10.0,
            top + 16.0 + 18.0 * i as f64,
            esc(name),
            values.len(),
            total
        );
    }
    s + "</svg>\n"
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
