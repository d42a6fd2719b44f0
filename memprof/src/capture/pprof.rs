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

#[cfg(test)]
mod tests {
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
