//! The report for a terminal (`--format text`): the same facts, the timeline's points and the
//! top growers, one incident after another. Tenants' text is escaped as the log escapes it.
use std::fmt::Write;

use serde_json::Value;

use super::{
    gather::Incident,
    page::{mb, mib},
};
use crate::logs::escape;

/// The whole text, from each incident's in the order they were read.
pub fn text(incidents: &[String], from: &str) -> String {
    let head = format!(
        "memprof report: {} incident(s) from {}\n",
        incidents.len(),
        escape(from)
    );
    head + &incidents.concat()
}

/// One incident's text.
pub fn incident(inc: &Incident) -> String {
    let mut text = String::new();
    let out = &mut text;
    let o = inc.series.first();
    let r = inc.record.as_ref();
    let field = |f: &str| r.and_then(|r| r.get(f));
    let _ = writeln!(out, "\n== {} pid {}", escape(&inc.who()), o.pid);
    match &inc.kill {
        Some(k) => {
            let _ = writeln!(
                out,
                "OOM kill at {}",
                k.time.format("%Y-%m-%d %H:%M:%S%.3f UTC")
            );
        }
        None => {
            let _ = writeln!(out, "no OOM kill recorded");
        }
    }
    if let Some(c) = field("comm").and_then(Value::as_str) {
        let _ = writeln!(out, "command: {}", escape(c));
    }
    if let (Some(limit), Some(rss)) = (
        field("limit_bytes").and_then(Value::as_u64),
        field("rss_bytes").and_then(Value::as_u64),
    ) {
        let _ = writeln!(
            out,
            "limit: {}, RSS at the last reading: {}",
            mib(limit),
            mib(rss)
        );
    }
    if let Some(b) = field("profiled_before_kill").and_then(Value::as_bool) {
        let _ = writeln!(
            out,
            "profiled before the kill: {}",
            if b { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out, "captures:");
    for p in &inc.points {
        let pct = match (p.rss, p.limit) {
            (Some(r), Some(l)) if l > 0 => format!("{:.1} %", 100.0 * r as f64 / l as f64),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "  {}  {:<16} RSS {:>9}  working set {:>9}  {pct}",
            p.time
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default(),
            escape(&p.level),
            p.rss.map(mib).unwrap_or_else(|| "–".into()),
            p.working_set.map(mib).unwrap_or_else(|| "–".into()),
        );
    }
    if let Some(a) = field("memory_accounting") {
        let part = |f: &str| {
            a.get(f)
                .and_then(Value::as_u64)
                .map(mib)
                .unwrap_or_else(|| "–".into())
        };
        let _ = writeln!(
            out,
            "memory at the kill: Go heap {} in use, {} free; stacks {}; runtime {}; outside Go {}; page cache {}; kernel {}",
            part("go_heap_in_use"),
            part("go_heap_free"),
            part("go_stacks"),
            part("go_runtime_other"),
            part("non_go_anon"),
            part("file"),
            part("kernel"),
        );
    }
    if inc.grew.is_empty() {
        let _ = writeln!(out, "grew: nothing to compare");
    } else {
        let _ = writeln!(out, "grew most, first profile to last:");
        for g in &inc.grew {
            let path: Vec<String> = g.path.iter().rev().map(|f| escape(f)).collect();
            let _ = writeln!(
                out,
                "  +{:>10}  {:>5.1} %  {}\n      {}",
                mb(g.bytes),
                g.share,
                escape(&g.function),
                path.join(" → ")
            );
        }
    }
    for p in &inc.problems {
        let _ = writeln!(out, "not read: {}", escape(p));
    }
    let _ = writeln!(out, "objects:");
    for o in &inc.series.objects {
        let _ = writeln!(out, "  {}", escape(&o.key));
    }
    text
}
