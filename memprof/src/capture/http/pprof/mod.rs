//! Go heap profiles from `net/http/pprof` (`GET /debug/pprof/heap`), fetched over a socket
//! created in the target's own network namespace (`netns`): in a pod every container shares
//! the loopback, and a node-level memprof reaches a pod's loopback-only endpoint the same way.
//! HTTP/1.1 through hyper on that socket; the whole exchange has one deadline and a size cap.
use std::sync::atomic::{AtomicBool, Ordering};
use std::{net::SocketAddr, os::fd::IntoRawFd, os::unix::io::FromRawFd, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Bytes, client::conn::http1, Request, Response};
use hyper_util::rt::TokioIo;

use super::{netns, Out};

/// What gzip data starts with: a heap profile in the protobuf format always does.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// How much of an answer that is not a profile is kept to show what it was.
const ANSWER_HEAD: usize = 2048;

fn starts_as_gzip(head: &[u8]) -> bool {
    GZIP_MAGIC.starts_with(&head[..head.len().min(GZIP_MAGIC.len())])
}

/// What an endpoint answered, as far as it got.
#[derive(Debug, Default)]
pub struct Answer {
    /// The status line, when one came.
    pub status: Option<String>,
    /// The body's first bytes.
    pub head: Vec<u8>,
    /// Body bytes received in all.
    pub received: u64,
}

/// A download that did not yield a profile: why, and what the endpoint said.
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub answer: Answer,
}

/// Why a probed address was not taken as the endpoint.
#[derive(Debug)]
pub enum NotServed {
    /// It answered, with something other than a heap profile (or refused the connection).
    Answer(anyhow::Error),
    /// No answer in time: a busy process (its GC under memory pressure) may answer later.
    Slow(Duration),
}

impl std::fmt::Display for NotServed {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Self::Answer(e) => write!(f, "{e:#}"),
            Self::Slow(timeout) => write!(f, "no answer within {timeout:?}"),
        }
    }
}

pub struct Pprof {
    path: String,
    port: u16,
    timeout: Duration,
    max_bytes: u64,
}

impl Pprof {
    pub fn new(port: u16, path: &str, timeout: Duration, max_bytes: u64) -> Self {
        Self {
            path: path.to_string(),
            port,
            timeout,
            max_bytes,
        }
    }

    /// The preferred port (`PPROF_PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Downloads the heap profile that `pid` serves at `addr` (in its network namespace) into
    /// `out`, chunk by chunk; `coming` is set once a profile's first bytes arrive. A failure
    /// carries what the endpoint answered, for the snapshot stored instead.
    pub async fn capture(
        &self,
        pid: u32,
        addr: SocketAddr,
        out: &mut Out,
        coming: &AtomicBool,
    ) -> Result<(), Failure> {
        let url = format!("http://{addr}{}", self.path);
        let mut answer = Answer::default();
        let get = async {
            let mut resp = self.get(pid, addr).await?;
            answer.status = Some(resp.status().to_string());
            while let Some(frame) = resp.frame().await {
                let frame = frame.context("reading the body")?;
                let Some(chunk) = frame.data_ref() else {
                    continue;
                };
                answer.received += chunk.len() as u64;
                let room = ANSWER_HEAD.saturating_sub(answer.head.len());
                answer
                    .head
                    .extend_from_slice(&chunk[..room.min(chunk.len())]);
                if !resp.status().is_success() || !starts_as_gzip(&answer.head) {
                    // Not a profile: only its first bytes are kept, to show what it was.
                    if answer.head.len() >= ANSWER_HEAD {
                        break;
                    }
                    continue;
                }
                if out.written() + chunk.len() as u64 > self.max_bytes {
                    bail!(
                        "the answer exceeds MEMPROF_CAPTURE_MAX_BYTES ({} bytes)",
                        self.max_bytes
                    );
                }
                coming.store(true, Ordering::Relaxed);
                out.write(chunk).await?;
            }
            if !resp.status().is_success() {
                bail!("HTTP {}", resp.status());
            }
            if answer.head.is_empty() {
                bail!("an empty answer");
            }
            if !starts_as_gzip(&answer.head) {
                bail!("the answer is not a gzip-compressed profile");
            }
            Ok(())
        };
        let result = tokio::time::timeout(self.timeout, get).await;
        let received = answer.received;
        match result
            .map_err(|_| {
                anyhow!(
                    "no complete answer within {:?} ({received} bytes received)",
                    self.timeout
                )
            })
            .and_then(|r| r)
        {
            Ok(()) => Ok(()),
            Err(e) => Err(Failure {
                error: e.context(format!("GET {url} (PID {pid}'s network namespace)")),
                answer,
            }),
        }
    }

    /// Whether `addr` serves a heap profile at the path: HTTP 200 and a body that starts as
    /// gzip does. Only the first bytes are read.
    pub async fn probe(
        &self,
        pid: u32,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), NotServed> {
        let check = async {
            let mut resp = self.get(pid, addr).await?;
            if !resp.status().is_success() {
                bail!("HTTP {}", resp.status());
            }
            let mut head = Vec::new();
            while head.len() < GZIP_MAGIC.len() {
                match resp.frame().await {
                    Some(frame) => {
                        if let Some(chunk) = frame?.data_ref() {
                            head.extend_from_slice(chunk);
                        }
                    }
                    None => break,
                }
            }
            if !head.starts_with(&GZIP_MAGIC) {
                bail!("the answer is not a gzip-compressed profile");
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, check).await {
            Ok(answer) => answer.map_err(NotServed::Answer),
            Err(_) => Err(NotServed::Slow(timeout)),
        }
    }

    /// Sends the GET and returns the response, whatever its status.
    async fn get(&self, pid: u32, addr: SocketAddr) -> Result<Response<hyper::body::Incoming>> {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = netns::socket_in(pid, domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)
            .context("creating the socket")?;
        // SAFETY: a fresh non-blocking TCP socket whose ownership moves to tokio.
        let socket = unsafe { tokio::net::TcpSocket::from_raw_fd(fd.into_raw_fd()) };
        let stream = socket.connect(addr).await.context("connecting")?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection is driven on its own task for as long as the body is read; it ends
        // when the response is dropped.
        tokio::spawn(conn);
        let req = Request::get(&self.path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        Ok(sender.send_request(req).await?)
    }
}

#[cfg(test)]
mod tests;
