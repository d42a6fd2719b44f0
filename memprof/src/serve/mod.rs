//! The metrics and health server on `MEMPROF_LISTEN`: `/metrics` (Prometheus' text format),
//! `/healthz` (alive) and `/readyz` (ready), GET only. It runs on the runtime's worker
//! threads, beside the daemon's loop (which runs on the main thread), so a held loop is seen
//! rather than shared. Bounded like everything memprof serves: a few connections at once, one
//! request each, and a deadline per connection.
pub mod health;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::debug;

/// Connections served at once; more wait in the kernel's backlog.
const CONNECTIONS: usize = 16;
/// Whole-connection deadline: a client that sends slowly is cut off.
const DEADLINE: Duration = Duration::from_secs(10);

/// Binds `addr` and serves it in the background; returns the address bound (the port when
/// `addr` asked for any).
pub async fn start(addr: SocketAddr) -> Result<SocketAddr> {
    let listener = match TcpListener::bind(addr).await {
        // `:PORT` asks for every address; a node without IPv6 has only IPv4's.
        Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            debug!("binding {addr}: {e}; trying IPv4 only");
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port()))).await
        }
        bound => bound,
    }
    .with_context(|| format!("MEMPROF_LISTEN {addr}: cannot listen"))?;
    let bound = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    debug!("metrics server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service_fn(route));
                let _ = tokio::time::timeout(DEADLINE, conn).await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

async fn route(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(answer(405, "text/plain", "GET only\n".into()));
    }
    Ok(match req.uri().path() {
        "/metrics" => answer(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::metrics::render(),
        ),
        "/healthz" => probe(health::alive()),
        "/readyz" => probe(health::ready()),
        _ => answer(404, "text/plain", "/metrics, /healthz or /readyz\n".into()),
    })
}

fn probe(state: Result<String, String>) -> Response<Full<Bytes>> {
    match state {
        Ok(text) => answer(200, "text/plain", text + "\n"),
        Err(why) => answer(503, "text/plain", why + "\n"),
    }
}

fn answer(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
