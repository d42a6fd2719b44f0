//! Reading Go heap profiles in tests: `go tool pprof`'s views of a profile, and a service's
//! own endpoint.
use std::{process::Command, time::Duration};

use super::wait_for;

/// `go tool pprof -top -base <base> <profile>`: what grew from one profile to the other.
pub fn pprof_diff(base: &[u8], profile: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), base).unwrap();
    let base = f.path().display().to_string();
    go_pprof(profile, &["-top", "-base", &base])
}

/// Runs `go tool pprof <args> <profile>` (Go's own decoder) and returns its output.
fn go_pprof(profile: &[u8], args: &[&str]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), profile).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(f.path())
        .output()
        .expect("go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof could not decode the profile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The build ID of the profile's first mapping, as Go's decoder reads it (`-raw` prints a
/// mapping as `ID: start/limit/offset file build-id flags`; empty when it has none).
pub fn pprof_build_id(profile: &[u8]) -> String {
    let raw = go_pprof(profile, &["-raw"]);
    let line = raw
        .lines()
        .skip_while(|l| !l.starts_with("Mappings"))
        .nth(1)
        .unwrap_or_else(|| panic!("no mapping in:\n{raw}"));
    let id = line.split_whitespace().nth(3).unwrap_or_default();
    if id.starts_with('[') { "" } else { id }.to_string()
}

/// Decodes a pprof profile with Go's own tool and returns its `-top` listing.
pub fn pprof_top(profile: &[u8]) -> String {
    go_pprof(profile, &["-top", "-sample_index=inuse_space"])
}

/// Where the function using the most `inuse_space` allocated, as `go tool pprof -top -lines`
/// names it: (function, `file:line`).
pub fn pprof_top_line(profile: &[u8]) -> (String, String) {
    let text = go_pprof(profile, &["-top", "-lines", "-sample_index=inuse_space"]);
    let line = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no entries in:\n{text}"));
    // An inlined frame's line ends with "(inline)".
    let f: Vec<&str> = line
        .split_whitespace()
        .filter(|w| *w != "(inline)")
        .collect();
    (f[f.len() - 2].to_string(), f[f.len() - 1].to_string())
}

/// A profile's `inuse_space` in bytes, as `go tool pprof -top` reports it: the total and each
/// function's flat bytes.
pub fn pprof_inuse(profile: &[u8]) -> (u64, std::collections::BTreeMap<String, u64>) {
    let args = [
        "-top",
        "-sample_index=inuse_space",
        "-unit=B",
        "-nodecount=100000",
    ];
    let text = go_pprof(profile, &args);
    let bytes = |s: &str| s.trim_end_matches('B').parse::<u64>().unwrap_or(0);
    let total = text
        .lines()
        .find_map(|l| l.split(" of ").nth(1)?.strip_suffix(" total").map(bytes))
        .unwrap_or_else(|| panic!("no total in:\n{text}"));
    let flat = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(5..)?.join(" "), bytes(f[0])))
        })
        .collect();
    (total, flat)
}

/// The body of `GET url` (`http://host:port/path`), which must answer 200 (HTTP/1.0, so the
/// body ends with the connection).
pub fn http_get(url: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(host).expect("connecting");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response");
    let head = String::from_utf8_lossy(&all[..end]);
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    all[end + 4..].to_vec()
}

/// Waits until the Go heap profile at `url` shows bytes retained by `function`: a heap profile
/// publishes what the last completed GC saw, so a service just started has none to show.
pub fn wait_for_heap_samples(url: &str, function: &str) {
    wait_for(
        &format!("{url} to show {function} (a completed GC after it allocated)"),
        Duration::from_secs(20),
        || pprof_inuse(&http_get(url)).1.contains_key(function),
    );
}

/// A profile's `inuse_space` samples as `go tool pprof -traces` lists them: each sample's
/// functions, leaf first.
pub fn pprof_traces(profile: &[u8]) -> Vec<Vec<String>> {
    let text = go_pprof(profile, &["-traces", "-sample_index=inuse_space"]);
    text.split("-----------+")
        .skip(1)
        .map(|block| {
            block
                .lines()
                .skip(1)
                .filter(|l| !l.trim_start().starts_with("bytes:"))
                .filter_map(|l| l.split_whitespace().last().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}
