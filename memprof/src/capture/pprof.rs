//! Go heap profiles from `net/http/pprof` (`GET http://127.0.0.1:PORT/debug/pprof/heap`).
//! In a pod every container shares the loopback interface, so the sidecar reaches the
//! service's debug endpoint there.
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::Profile;

pub struct Pprof {
    client: reqwest::Client,
    url: String,
    port: u16,
    max_bytes: u64,
}

impl Pprof {
    /// Builds the HTTP client once, at start-up, so that a capture pays only for the request.
    pub fn new(port: u16, path: &str, timeout: Duration, max_bytes: u64) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            url: format!("http://127.0.0.1:{port}{path}"),
            port,
            max_bytes,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn capture(&self) -> Result<Profile> {
        let mut resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .with_context(|| format!("GET {}", self.url))?;
        if !resp.status().is_success() {
            bail!("GET {}: HTTP {}", self.url, resp.status());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("reading {}", self.url))?
        {
            if bytes.len() as u64 + chunk.len() as u64 > self.max_bytes {
                bail!("profile from {} exceeds {} bytes", self.url, self.max_bytes);
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.is_empty() {
            bail!("GET {}: empty profile", self.url);
        }
        Ok(Profile {
            kind: "heap",
            extension: "pb.gz",
            bytes,
        })
    }
}

/// Whether `pid` itself holds a listening TCP socket on `port`. Every container of a pod shares
/// the loopback, so without this check a sidecar nearing its limit would be stored under its
/// own name with the application's heap profile.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| inode.parse::<u64>().ok())
                .is_some_and(|inode| inodes.contains(&inode))
        })
}

/// Socket inodes listening on `port` in a /proc/<pid>/net/tcp{,6} table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == LISTEN).then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = include_str!("../../tests/fixtures/proc-net-tcp");

    #[test]
    fn finds_the_listener_on_the_port() {
        assert_eq!(listening_inodes(TCP, 6060), vec![271828]);
        // Port 8014 only has an established connection, no listener.
        assert!(listening_inodes(TCP, 8014).is_empty());
    }

    #[test]
    fn this_test_process_listens_only_where_it_bound() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        drop(listener);
        assert!(!listens_on(std::process::id(), port));
    }
}

#[cfg(test)]
mod http_tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::Pprof;

    /// Serves one HTTP response with a body of `len` bytes.
    async fn serve(status: &'static str, len: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Read the request before answering, or closing the socket resets the exchange.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let head =
                format!("HTTP/1.1 {status}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let _ = s.write_all(&vec![7u8; len]).await;
        });
        port
    }

    fn pprof(port: u16, max: u64) -> Pprof {
        Pprof::new(port, "/debug/pprof/heap", Duration::from_secs(5), max).unwrap()
    }

    #[tokio::test]
    async fn downloads_the_profile() {
        let port = serve("200 OK", 1000).await;
        let p = pprof(port, 4096).capture().await.unwrap();
        assert_eq!((p.kind, p.bytes.len()), ("heap", 1000));
    }

    #[tokio::test]
    async fn refuses_oversized_profiles() {
        let port = serve("200 OK", 100_000).await;
        let e = pprof(port, 4096).capture().await.unwrap_err();
        assert!(format!("{e:#}").contains("exceeds 4096 bytes"), "{e:#}");
    }

    #[tokio::test]
    async fn http_errors_are_errors() {
        let port = serve("404 Not Found", 0).await;
        let e = pprof(port, 4096).capture().await.unwrap_err();
        assert!(format!("{e:#}").contains("404"), "{e:#}");
    }
}
