//! Go heap profiles from `net/http/pprof` (`GET http://127.0.0.1:PORT/debug/pprof/heap`).
//! In a pod every container shares the loopback interface, so the sidecar reaches the
//! service's debug endpoint there.
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::Profile;

pub struct Pprof {
    client: reqwest::Client,
    url: String,
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
            max_bytes,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
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
