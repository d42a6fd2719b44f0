//! The metrics and health server on `MEMPROF_LISTEN`: `/metrics` (Prometheus' text format),
//! `/healthz` (alive) and `/readyz` (ready, as `metrics::health` judges), GET only. It runs on the runtime's worker
//! threads, beside the daemon's loop (which runs on the main thread), so a held loop is seen
//! rather than shared. Bounded like everything memprof serves: a few connections at once, one
//! request each, and a deadline per connection.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::debug;

use crate::metrics::health;

/// Connections served at once; more wait in the kernel's backlog. Enough that clients
/// holding connections open cannot keep the kubelet's probes out for long (see `HEADERS`).
const CONNECTIONS: usize = 256;
/// A request's headers must arrive within this: a client that sends slowly holds its
/// connection no longer.
const HEADERS: Duration = Duration::from_secs(2);
/// Whole-connection deadline.
const DEADLINE: Duration = Duration::from_secs(5);
/// Most bytes read for one request (a GET has no body).
const REQUEST_MAX: usize = 16 << 10;

/// Binds `addr` and serves it in the background; returns the address bound (the port when
/// `addr` asked for any).
pub async fn start(addr: SocketAddr) -> Result<SocketAddr> {
    health::starting();
    let listener = match TcpListener::bind(addr).await {
        // `:PORT` asks for every address; a node without IPv6 has only IPv4's (any other
        // error, the port in use say, is reported as it is).
        Err(e)
            if addr.ip().is_unspecified()
                && addr.is_ipv6()
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
        {
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
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADERS)
                    .max_buf_size(REQUEST_MAX)
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
    // The metrics read the kernel's program list and readiness writes a file: blocking work,
    // kept off the runtime's workers, and bounded so a hung volume answers rather than hangs.
    let blocking = |f: fn() -> Result<String, String>| async move {
        match tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(f)).await {
            Ok(Ok(state)) => state,
            _ => Err(format!("no answer within {DEADLINE:?}")),
        }
    };
    Ok(match req.uri().path() {
        "/metrics" => match blocking(|| Ok(crate::metrics::render())).await {
            Ok(text) => answer(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(why) => answer(503, "text/plain", why + "\n"),
        },
        "/healthz" => probe(health::alive()),
        "/readyz" => probe(blocking(health::ready).await),
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
