//! The report as one self-contained HTML page: styles, script and graphs inline, nothing
//! fetched when it is viewed (its Content-Security-Policy forbids it, and allows only its own
//! script by hash). Every name on it came from a tenant (functions, commands, pods): all of it
//! is escaped.
use std::fmt::Write;

use base64::Engine;
use serde_json::Value;
use sha2::Digest;

use super::{flame, gather::Incident, timeline};

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// `text` safe inside HTML and its attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Nor may a name move or reorder what is printed after it.
            c if crate::logs::unprintable(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `54.6 MB`, signless.
pub fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `256 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The page, from each incident's `section` in the order they were read (oldest first).
pub fn html(sections: &[String], from: &str, generated: &str) -> String {
    let hash =
        |text: &str| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text));
    let mut body: String = sections.iter().rev().map(String::as_str).collect();
    if sections.is_empty() {
        body.push_str("<p>Nothing stored matches the selection.</p>");
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'sha256-{css}'; script-src 'sha256-{js}'; base-uri 'none'; form-action 'none'">
<title>memprof report: {n} incident(s)</title>
<style>{CSS}</style>
<script>{JS}</script>
</head><body>
<header><h1>memprof report: {n} incident(s) from {from}</h1>
<input id="search" type="search" placeholder="search functions" aria-label="search functions">
<span id="search-status"></span></header>
<p>Generated {generated}. Newest first. Click a frame to zoom into it, the top frame (or reset) to zoom out.</p>
{body}
</body></html>
"#,
        n = sections.len(),
        css = hash(CSS),
        js = hash(JS),
        from = esc(from),
        generated = esc(generated),
    )
}

/// One incident's part of the page; `i` numbers its graphs' ids.
pub fn section(i: usize, inc: &Incident) -> String {
    let mut text = String::new();
    let out = &mut text;
    let o = inc.series.first();
    let comm = inc
        .record
        .as_ref()
        .and_then(|r| r.get("comm")?.as_str())
        .unwrap_or(&o.name);
    let what = match &inc.kill {
        Some(k) => format!("OOM kill at {}", k.time.format("%Y-%m-%d %H:%M:%S%.3f UTC")),
        None => format!(
            "{} capture(s), {} to {}",
            inc.series.objects.len(),
            o.time.format("%Y-%m-%d %H:%M:%S"),
            inc.series.last().time.format("%H:%M:%S UTC")
        ),
    };
    let _ = write!(
        out,
        r#"<section class="incident" id="incident-{i}"><h2>{} — pid {} ({}) — {}</h2>"#,
        esc(&inc.who()),
        o.pid,
        esc(comm),
        esc(&what)
    );
    for p in &inc.problems {
        let _ = write!(out, r#"<p class="problem">Not read: {}</p>"#, esc(p));
    }
    facts(out, inc);
    out.push_str("<h3>Timeline</h3>");
    out.push_str(&timeline::svg(&inc.points, inc.kill.as_ref()));
    if let Some(a) = inc.record.as_ref().and_then(|r| r.get("memory_accounting")) {
        accounting(out, a);
    }
    growers(out, inc);
    flames(out, i, inc);
    out.push_str("<h3>Objects</h3><ul class=\"keys\">");
    for o in &inc.series.objects {
        let _ = write!(out, "<li>{}</li>", esc(&o.key));
    }
    out.push_str("</ul></section>\n");
    text
}

fn facts(out: &mut String, inc: &Incident) {
    out.push_str("<h3>Facts</h3><table class=\"facts\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    let Some(r) = &inc.record else {
        row(
            "record",
            "none (no OOM kill recorded for this series)".into(),
        );
        out.push_str("</table>");
        return;
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => "–".into(),
        other => other.to_string(),
    };
    for (field, label) in [
        ("killed_at", "killed at"),
        ("comm", "command"),
        ("cmdline", "command line"),
        ("pid", "pid"),
        ("host_pid", "host pid"),
        ("cgroup", "cgroup"),
        ("limit_source", "limit from"),
        ("oom_score_adj", "oom_score_adj"),
        ("profiled_before_kill", "profiled before the kill"),
        ("memprof_version", "memprof"),
    ] {
        if let Some(v) = r.get(field) {
            row(label, text(v));
        }
    }
    for (field, label) in [
        ("limit_bytes", "limit"),
        ("rss_bytes", "RSS at the last reading"),
        ("working_set_bytes", "working set at the kill"),
    ] {
        if let Some(v) = r.get(field).and_then(Value::as_u64) {
            row(label, format!("{} ({v} bytes)", mib(v)));
        }
    }
    out.push_str("</table>");
}

fn accounting(out: &mut String, a: &Value) {
    const PARTS: [(&str, &str, &str); 7] = [
        ("go_heap_in_use", "Go heap in use", "#c62828"),
        ("go_heap_free", "Go heap free", "#ef9a9a"),
        ("go_stacks", "Go stacks", "#f9a825"),
        ("go_runtime_other", "Go runtime, other", "#ffcc80"),
        ("non_go_anon", "outside Go (anonymous)", "#6a1b9a"),
        ("file", "page cache", "#90a4ae"),
        ("kernel", "kernel", "#455a64"),
    ];
    let total = a.get("total").and_then(Value::as_u64).unwrap_or(0).max(1) as f64;
    out.push_str("<h3>Where the memory went at the kill</h3><svg class=\"accounting\" viewBox=\"0 0 1200 28\" width=\"100%\">");
    let mut x = 0.0;
    for (field, label, colour) in PARTS {
        let v = a.get(field).and_then(Value::as_u64).unwrap_or(0);
        let w = v as f64 / total * 1200.0;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="0" width="{w:.1}" height="28" fill="{colour}"><title>{label}: {}</title></rect>"#,
            mib(v)
        );
        x += w;
    }
    out.push_str("</svg><table>");
    for (field, label, colour) in PARTS {
        let v = a.get(field).and_then(Value::as_u64).unwrap_or(0);
        let _ = write!(
            out,
            r#"<tr><td><svg width="10" height="10"><rect width="10" height="10" fill="{colour}"/></svg> {label}</td><td class="num">{}</td><td class="num">{:.1} %</td></tr>"#,
            mib(v),
            100.0 * v as f64 / total
        );
    }
    out.push_str("</table>");
    for note in a
        .get("notes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = write!(out, "<p>{}</p>", esc(note.as_str().unwrap_or("")));
    }
}

fn growers(out: &mut String, inc: &Incident) {
    out.push_str("<h3>What grew, first profile to last</h3>");
    if inc.grew.is_empty() {
        out.push_str("<p>Nothing to compare: fewer than two heap profiles, or nothing grew.</p>");
        return;
    }
    out.push_str("<table class=\"grew\"><tr><th>function</th><th>grew</th><th>share</th><th>call path</th></tr>");
    for g in &inc.grew {
        let _ = write!(
            out,
            r#"<tr><td><code>{}</code></td><td class="num">+{}</td><td class="num">{:.1} %</td><td><code>{}</code></td></tr>"#,
            esc(&g.function),
            mb(g.bytes),
            g.share,
            esc(&g.path.iter().rev().cloned().collect::<Vec<_>>().join(" → "))
        );
    }
    out.push_str("</table>");
}

fn flames(out: &mut String, i: usize, inc: &Incident) {
    let newest = inc.last.as_ref().or(inc.first.as_ref());
    let Some((key, summary)) = newest else {
        out.push_str("<p>No heap profile in this series.</p>");
        return;
    };
    let root = flame::tree(summary, None);
    let _ = write!(
        out,
        r#"<h3>Heap in use, last profile <button class="reset" data-for="flame-{i}">reset zoom</button></h3><p class="keys">{}</p>{}"#,
        esc(key),
        flame::svg(&root, &format!("flame-{i}"), false)
    );
    if let (Some((first_key, first)), Some((last_key, last))) = (&inc.first, &inc.last) {
        let root = flame::tree(last, Some(first));
        let _ = write!(
            out,
            r#"<h3>What changed, first → last (red grew, blue shrank) <button class="reset" data-for="diff-{i}">reset zoom</button></h3><p class="keys">{} → {}</p>{}"#,
            esc(first_key),
            esc(last_key),
            flame::svg(&root, &format!("diff-{i}"), true)
        );
    }
}
