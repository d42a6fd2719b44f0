//! Alerts: one JSON POST to each webhook (`MEMPROF_WEBHOOK_URL`) per OOM kill of a watched
//! process — its record, as stored — and, when asked (`MEMPROF_WEBHOOK_PROFILES`), per stored
//! profile. Each webhook has a spool and retries of its own (`Deliverer`, alerts role): a
//! receiver that is down gets the alert when it is back (memprof restarts included), one that
//! fails forever holds back nothing but its own queue, and nothing here waits on a receiver.
//!
//! Each body has a `text` field, so it can go straight to a Slack (or Mattermost, Teams
//! workflow) incoming webhook; the rest is for programs.
use std::{path::Path, sync::Arc};

use sha2::Digest;

use anyhow::Result;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::{
    bounds::{Keep, Limits},
    metadata::Metadata,
    sink::Sink,
    spool::Spool,
    webhook::{Url, Webhook},
    Deliverer,
};

/// Alerts waiting for one webhook: the newest thousand (an alert is a few KB).
const LIMITS: Limits = Limits {
    max_bytes: 64 << 20,
    max_objects: 1000,
    keep: Keep::Newest,
};

/// Longest piece of a process's own text (command, names) in the `text` field.
const TEXT_PIECE_MAX: usize = 200;

pub struct Alerts {
    hooks: Vec<Arc<Deliverer>>,
    profiles: bool,
}

impl Alerts {
    /// One spool per webhook under `spool_dir/alerts/`, named by a hash of its URL (the URL is
    /// a secret and stays out of file names; a changed URL starts afresh).
    pub fn open(spool_dir: &Path, urls: &[Url], profiles: bool) -> Result<Self> {
        let hooks = urls
            .iter()
            .map(|uri| {
                let digest = sha2::Sha256::digest(uri.0.to_string().as_bytes());
                let name: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                let spool = Spool::open(&spool_dir.join("alerts").join(name))?;
                let sink = Sink::Webhook(Box::new(Webhook::new(uri.0.clone())?));
                Ok(Arc::new(Deliverer::new(spool, sink, LIMITS).for_alerts()))
            })
            .collect::<Result<_>>()?;
        Ok(Self { hooks, profiles })
    }

    /// Retries each webhook's spool for as long as memprof runs (background tasks).
    pub fn spawn_retries(&self) {
        for hook in &self.hooks {
            let hook = Arc::clone(hook);
            tokio::spawn(async move { hook.retry_loop().await });
        }
    }

    /// Alerts about an object just handed to delivery: a kill's record always, a profile when
    /// asked. Returns at once; each webhook is tried in a task of its own.
    pub fn stored(&self, key: &str, meta: &Metadata, kind: &str, bytes: &[u8]) {
        let body = match kind {
            "record" => match serde_json::from_slice::<Value>(bytes) {
                Ok(record) => oom_kill(key, meta, record),
                Err(e) => {
                    warn!(key, "no alert for this record: {e}");
                    return;
                }
            },
            _ if self.profiles => profile_stored(key, meta),
            _ => return,
        };
        let body = serde_json::to_vec(&body).expect("JSON values serialise");
        let id = format!("{key}.alert");
        for hook in &self.hooks {
            let (hook, id, meta, body) = (Arc::clone(hook), id.clone(), meta.clone(), body.clone());
            tokio::spawn(async move {
                match hook.deliver(&id, &meta, &body).await {
                    Ok(()) => info!(webhook = hook.describe(), key = id, "alert sent"),
                    Err(e) => warn!(
                        webhook = hook.describe(),
                        key = id,
                        "alert not sent yet: {e:#}"
                    ),
                }
            });
        }
    }
}

/// The kill's alert: the record itself, and a line for people. Command lines carry secrets
/// (`--db-password=…`) and a chat channel is read more widely than the bucket: they stay in
/// the stored objects.
fn oom_kill(key: &str, meta: &Metadata, mut record: Value) -> Value {
    if let Some(r) = record.as_object_mut() {
        r.remove("cmdline");
    }
    let n = |f: &str| record.get(f).and_then(Value::as_u64);
    let mut text = format!(
        "OOM kill: {} (pid {}) in {} on {}",
        piece(record.get("comm").and_then(Value::as_str).unwrap_or("?")),
        n("pid").unwrap_or(0),
        who(meta),
        piece(meta.get("node").unwrap_or("?")),
    );
    if let (Some(rss), Some(limit)) = (n("rss_bytes"), n("limit_bytes")) {
        text += &format!(", RSS {} of its {} limit", mib(rss), mib(limit));
    }
    let profiles = record
        .get("profiles")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let before = record.get("profiled_before_kill").and_then(Value::as_bool) == Some(true);
    text += &format!(
        ". {profiles} profile(s), {} the kill.",
        if before {
            "taken before"
        } else {
            "none before"
        }
    );
    if let Some(top) = record.get("grew").and_then(|g| g.get(0)) {
        text += &format!(
            " Grew most: {} +{:.1} MB ({:.0} %).",
            piece(top.get("function").and_then(Value::as_str).unwrap_or("?")),
            top.get("bytes").and_then(Value::as_f64).unwrap_or(0.0) / 1e6,
            top.get("share").and_then(Value::as_f64).unwrap_or(0.0),
        );
    }
    text += &format!(" Record: {}", piece(key));
    json!({ "event": "oom_kill", "id": key, "text": text, "record": record })
}

/// A stored profile's alert: its key and metadata.
fn profile_stored(key: &str, meta: &Metadata) -> Value {
    let mut meta = meta.clone();
    meta.remove("cmdline");
    let meta = &meta;
    // Numbers are memprof's own; printed only when they parse as numbers.
    let pid = meta.get("pid").and_then(|p| p.parse::<u32>().ok());
    let percent = meta.get("percent").and_then(|p| p.parse::<f64>().ok());
    let text = format!(
        "Heap profile of {} (pid {}) in {} at {} of its limit: {}",
        piece(meta.get("comm").unwrap_or("?")),
        pid.map_or("?".into(), |p| p.to_string()),
        who(meta),
        percent.map_or("?".into(), |p| format!("{p:.1} %")),
        piece(key),
    );
    json!({ "event": "profile_stored", "id": key, "text": text, "key": key, "metadata": meta })
}

fn who(meta: &Metadata) -> String {
    let part = |f| piece(meta.get(f).unwrap_or("-"));
    format!(
        "{}/{}/{}",
        part("namespace"),
        part("pod"),
        part("container")
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// A process's own text made safe for a chat message: cut, control characters and backticks
/// dropped, Slack's three control characters escaped (`<!channel>` in a command name must not
/// ping), inside a code span (no mention, link or markup of Slack's or Mattermost's applies).
fn piece(s: &str) -> String {
    let mut out = String::from("`");
    for c in s
        .chars()
        .filter(|c| !c.is_control() && *c != '`')
        .take(TEXT_PIECE_MAX)
    {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_read_well_carry_no_command_line_and_escape_the_tenant() {
        let mut meta = Metadata::new();
        meta.set("namespace", "shop")
            .set("pod", "cart-1")
            .set("container", "app")
            .set("node", "n1");
        let record = json!({
            "comm": "<!channel>\u{1b}[31m`", "pid": 7, "cmdline": ["app", "--token=x"], "rss_bytes": 500u64 << 20,
            "limit_bytes": 512u64 << 20, "profiles": ["a", "b"], "profiled_before_kill": true,
            "grew": [{"function": "main.leak", "bytes": 54_600_000, "share": 100.0, "path": []}],
        });
        let body = oom_kill("k/x_oom.record.json", &meta, record.clone());
        assert_eq!(body["record"]["pid"], 7);
        assert!(body["record"].get("cmdline").is_none(), "{body}");
        assert_eq!(body["event"], "oom_kill");
        assert_eq!(
            body["text"],
            "OOM kill: `&lt;!channel&gt;[31m` (pid 7) in `shop`/`cart-1`/`app` on `n1`, RSS 500 \
             MiB of its 512 MiB limit. 2 profile(s), taken before the kill. Grew most: \
             `main.leak` +54.6 MB (100 %). Record: `k/x_oom.record.json`"
        );
        meta.set("comm", "app")
            .set("pid", "7")
            .set("percent", "80.1");
        meta.set("cmdline", "app --token=x");
        let body = profile_stored("k/x_80pct.heap.pb.gz", &meta);
        assert_eq!(body["event"], "profile_stored");
        assert_eq!(body["metadata"]["pod"], "cart-1");
        assert!(body["metadata"].get("cmdline").is_none(), "{body}");
        assert_eq!(
            body["text"],
            "Heap profile of `app` (pid 7) in `shop`/`cart-1`/`app` at 80.1 % of its limit: \
             `k/x_80pct.heap.pb.gz`"
        );
    }
}
