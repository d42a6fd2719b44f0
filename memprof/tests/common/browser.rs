//! Headless Chromium driven over the DevTools Protocol (`cdp`), for the tests of pages memprof
//! writes: a page is opened as a user opens it (a file:// URL), clicked and typed into with
//! real input events, and whatever it complained about or fetched is recorded, so that a test
//! can assert it works offline and without errors.
mod cdp;

use std::{path::Path, time::Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use cdp::{Cdp, TIMEOUT};

/// A page in headless chromium; chromium is killed, its profile removed, when dropped.
pub struct Browser {
    cdp: Cdp,
    /// The page's main frame, once a page is opened.
    frame: Value,
}

impl Browser {
    /// Starts headless chromium on a fresh profile and attaches to a new blank page, the
    /// Runtime, Log, Network and Page domains enabled before anything is opened in it.
    pub fn start() -> Result<Browser> {
        let mut cdp = Cdp::start()?;
        for domain in ["Runtime", "Log", "Network", "Page"] {
            cdp.command(&format!("{domain}.enable"), json!({}))?;
        }
        Ok(Browser {
            cdp,
            frame: Value::Null,
        })
    }

    /// Opens file://`path` and waits for its load event.
    pub fn open(&mut self, path: &Path) -> Result<()> {
        let path = path.canonicalize().context(path.display().to_string())?;
        let url = format!("file://{}", path.display());
        // Chromium percent-encodes the rest of a path; these would end it or be read as codes.
        ensure!(
            !url.contains(['#', '?', '%']),
            "{url}: # ? or % in the path"
        );
        let from = self.cdp.events.len();
        let nav = self.cdp.command("Page.navigate", json!({"url": url}))?;
        if let Some(e) = nav.get("errorText") {
            bail!("opening {url}: {e}");
        }
        self.frame = nav["frameId"].clone();
        // The load event after the main frame committed this navigation: the blank page's
        // own may be among the events before it.
        let committed = |e: &Value| {
            is(e, "Page.frameNavigated")
                && e["params"]["frame"]["loaderId"] == nav["loaderId"]
                && e["params"]["frame"].get("parentId").is_none()
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let after = &self.cdp.events[from..];
            let loaded = |at| after[at..].iter().any(|e| is(e, "Page.loadEventFired"));
            if after.iter().position(committed).is_some_and(loaded) {
                return Ok(());
            }
            self.cdp
                .receive(deadline)
                .with_context(|| format!("waiting for {url} to load"))?;
        }
    }

    /// The value of the expression `js` (a promise awaited); an exception is an error.
    pub fn eval(&mut self, js: &str) -> Result<Value> {
        let eval = json!({"expression": js, "returnByValue": true, "awaitPromise": true});
        let r = self.cdp.command("Runtime.evaluate", eval)?;
        if let Some(d) = r.get("exceptionDetails") {
            bail!("{}", exception(d));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Console errors and warnings, uncaught exceptions and the browser's error entries (a
    /// failed or refused load, a CSP violation) since the start, one line each.
    pub fn errors(&mut self) -> Vec<String> {
        self.settle();
        self.cdp.events.iter().filter_map(error_line).collect()
    }

    /// The URLs of the requests the pages made (those a CSP refused too), but for the file://
    /// pages themselves.
    pub fn requests(&mut self) -> Vec<String> {
        self.settle();
        let events = self.cdp.events.iter();
        let sent = events.filter(|e| is(e, "Network.requestWillBeSent"));
        let url = |p: &Value| p["request"]["url"].as_str().unwrap_or_default().to_string();
        let page = |p: &Value| {
            p["type"] == "Document" && p["frameId"] == self.frame && url(p).starts_with("file:")
        };
        sent.map(|e| &e["params"])
            .filter(|p| !page(p))
            .map(url)
            .collect()
    }

    /// A PNG of the page's viewport, written to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let shot = self
            .cdp
            .command("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = shot["data"].as_str().context("a screenshot without data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png).with_context(|| path.display().to_string())
    }

    /// A left click with the mouse, as a user's, at the centre of the first element matching
    /// `selector` (scrolled into view; it must be the element found there, not one over it).
    pub fn click(&mut self, selector: &str) -> Result<()> {
        let sel = serde_json::to_string(selector)?;
        let at = self.eval(&format!(
            "(e => {{
                if (!e) return 'no element matches';
                e.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = e.getBoundingClientRect();
                const [x, y] = [r.left + r.width / 2, r.top + r.height / 2];
                if (!r.width || !r.height) return 'it has no size';
                return e.contains(document.elementFromPoint(x, y)) ? [x, y] : 'it is covered';
            }})(document.querySelector({sel}))"
        ))?;
        let Some([x, y]) = at.as_array().map(Vec::as_slice) else {
            bail!("cannot click {selector}: {at}");
        };
        let (x, y) = (x.clone(), y.clone());
        let left = [("mousePressed", "left"), ("mouseReleased", "left")];
        for (kind, button) in [("mouseMoved", "none")].into_iter().chain(left) {
            let event = json!({"type": kind, "x": x, "y": y, "button": button, "clickCount": 1});
            self.cdp.command("Input.dispatchMouseEvent", event)?;
        }
        Ok(())
    }

    /// Types `text` into the element matching `selector` (focused first), as a keyboard
    /// would: the element sees its input events.
    pub fn type_into(&mut self, selector: &str, text: &str) -> Result<()> {
        let sel = serde_json::to_string(selector)?;
        let focused = self.eval(&format!(
            "(e => (e?.focus(), e !== null && document.activeElement === e))\
             (document.querySelector({sel}))"
        ))?;
        if focused != true {
            bail!("cannot type into {selector}: missing or not focusable");
        }
        self.cdp
            .command("Input.insertText", json!({"text": text}))?;
        Ok(())
    }

    /// A round trip through the page, so that what it reported before is received.
    fn settle(&mut self) {
        let _ = self.eval("0");
    }
}

/// An exception's description (an Error's holds its stack), or the value thrown.
fn exception(d: &Value) -> String {
    match d["exception"]["description"].as_str() {
        Some(description) => description.to_string(),
        None => format!(
            "{} {}",
            d["text"].as_str().unwrap_or(""),
            d["exception"]["value"]
        ),
    }
}

/// The line `errors` gives an event, if it tells of one.
fn error_line(event: &Value) -> Option<String> {
    let p = &event["params"];
    match event["method"].as_str()? {
        "Runtime.consoleAPICalled" => {
            let kind = p["type"].as_str()?;
            if !matches!(kind, "error" | "warning" | "assert") {
                return None;
            }
            let args: Vec<String> = p["args"]
                .as_array()?
                .iter()
                .map(|a| match (a.get("value"), a["description"].as_str()) {
                    (Some(Value::String(s)), _) => s.clone(),
                    (Some(v), _) => v.to_string(),
                    (None, Some(description)) => description.to_string(),
                    (None, None) => a["type"].as_str().unwrap_or("").to_string(),
                })
                .collect();
            Some(format!("console.{kind}: {}", args.join(" ")))
        }
        "Runtime.exceptionThrown" => Some(format!(
            "uncaught exception: {}",
            exception(&p["exceptionDetails"])
        )),
        "Log.entryAdded" if p["entry"]["level"] == "error" => {
            let e = &p["entry"];
            let [source, text, url] =
                ["source", "text", "url"].map(|k| e[k].as_str().unwrap_or(""));
            Some(format!("{source} error: {text} {url}"))
        }
        _ => None,
    }
}

fn is(event: &Value, method: &str) -> bool {
    event["method"] == method
}
