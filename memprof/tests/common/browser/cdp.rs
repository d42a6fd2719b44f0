//! The DevTools Protocol's plumbing under `Browser`: chromium as a child process, killed with
//! its helpers; one websocket to it, whose path chromium writes to `DevToolsActivePort` (no
//! HTTP needed); the page a target created there and attached in flattened mode, its commands
//! and events carrying the session's id. Commands are answered by id; the events that arrive
//! meanwhile are kept, in order. Every wait is bounded.
use std::{
    fs::File,
    io::ErrorKind,
    net::TcpStream,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The longest any one wait may take: chromium's start, a command's answer, a page's load.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Cdp {
    ws: WebSocket<TcpStream>,
    /// The page's session; `None` only while `start` creates it (commands go to the browser).
    session: Option<String>,
    next_id: u64,
    /// Every event received, in order.
    pub events: Vec<Value>,
    /// Killed before `dir` (fields drop in order) so that nothing writes to it while it goes.
    chromium: Chromium,
    /// chromium's profile (`profile/`) and its stderr (`chromium.stderr`).
    dir: tempfile::TempDir,
}

/// chromium and its helper processes (renderers, zygotes), killed as a process group.
struct Chromium(Child);

impl Drop for Chromium {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the group is the one chromium leads.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Cdp {
    /// Headless chromium on a fresh profile, attached to a new blank page.
    pub fn start() -> Result<Cdp> {
        let dir = tempfile::tempdir()?;
        let profile = dir.path().join("profile");
        let stderr = dir.path().join("chromium.stderr");
        let mut command = Command::new("chromium");
        command
            .arg(format!("--user-data-dir={}", profile.display()))
            .args([
                "--headless=new",
                // Tests run as root, where chromium's sandbox refuses to start.
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--window-size=1400,1000",
                // Remote requests go to a proxy where nothing listens: they are refused at once
                // and never leave the machine, and no image no one answers holds a page's load
                // event for a TCP timeout.
                "--proxy-server=127.0.0.1:1",
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr)?)
            .process_group(0);
        // Chromium goes with the test binary, even one killed outright (a harness timeout).
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let chromium = command.spawn().context("starting chromium")?;
        let mut chromium = Chromium(chromium);
        let ws = connect(&profile, &mut chromium).with_context(|| {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            format!("chromium's DevTools socket; chromium's stderr:\n{log}")
        })?;
        let mut cdp = Cdp {
            ws,
            session: None,
            next_id: 0,
            events: Vec::new(),
            chromium,
            dir,
        };
        let target = cdp.command("Target.createTarget", json!({"url": "about:blank"}))?;
        let attach = json!({"targetId": target["targetId"], "flatten": true});
        let attached = cdp.command("Target.attachToTarget", attach)?;
        cdp.session = attached["sessionId"].as_str().map(String::from);
        Ok(cdp)
    }

    /// Sends a command to the page (to the browser while `start` attaches) and returns its
    /// result, keeping the events that arrive before it.
    pub fn command(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            msg["sessionId"] = session.as_str().into();
        }
        let sent = self.ws.send(Message::text(msg.to_string()));
        sent.with_context(|| format!("sending {method}"))?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let reply = self.receive(deadline);
            // An answer with another id is one to a command that timed out before.
            if let Some(mut reply) = reply.with_context(|| format!("waiting for {method}"))? {
                if reply["id"] == id {
                    if let Some(e) = reply.get("error") {
                        bail!("{method}: {e}");
                    }
                    return Ok(reply["result"].take());
                }
            }
        }
    }

    /// The next message if it is an answer (an event is kept, a read timing out gives none);
    /// past `deadline`, an error.
    pub fn receive(&mut self, deadline: Instant) -> Result<Option<Value>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out after {TIMEOUT:?}; {}", self.state());
        }
        self.ws.get_mut().set_read_timeout(Some(left))?;
        let text = match self.ws.read() {
            Ok(Message::Text(text)) => text,
            // Pings, which tungstenite answers.
            Ok(Message::Ping(_) | Message::Pong(_)) => return Ok(None),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                return Ok(None)
            }
            Ok(other) => bail!("chromium sent {other:?}; {}", self.state()),
            Err(e) => bail!("reading chromium's DevTools socket: {e}; {}", self.state()),
        };
        let msg: Value = serde_json::from_str(&text)?;
        if msg.get("method").is_some() {
            self.events.push(msg);
            return Ok(None);
        }
        Ok(Some(msg))
    }

    /// Whether chromium still runs, or how it ended and what it said.
    fn state(&mut self) -> String {
        match self.chromium.0.try_wait() {
            Ok(Some(status)) => {
                let log = self.dir.path().join("chromium.stderr");
                let log = std::fs::read_to_string(log).unwrap_or_default();
                format!("chromium exited ({status}); its stderr:\n{log}")
            }
            _ => "chromium still running".into(),
        }
    }
}

/// A websocket to the browser, at the port and path chromium writes to `DevToolsActivePort`
/// once it listens (tried again until then, the file perhaps half-written).
fn connect(profile: &Path, chromium: &mut Chromium) -> Result<WebSocket<TcpStream>> {
    let deadline = Instant::now() + TIMEOUT;
    let attempt = || -> Result<WebSocket<TcpStream>> {
        let active = std::fs::read_to_string(profile.join("DevToolsActivePort"))?;
        let (port, path) = active.split_once('\n').context("a half-written file")?;
        let addr = format!("127.0.0.1:{}", port.trim());
        let stream = TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let url = format!("ws://{addr}{}", path.trim());
        let (ws, _) = tungstenite::client(url, stream).map_err(|e| anyhow!("{e}"))?;
        Ok(ws)
    };
    loop {
        match attempt() {
            Ok(ws) => return Ok(ws),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("{TIMEOUT:?}"))),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        if let Some(status) = chromium.0.try_wait()? {
            bail!("chromium exited ({status})");
        }
    }
}
