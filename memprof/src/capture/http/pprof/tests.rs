use std::sync::atomic::{AtomicBool, Ordering};

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::{NotServed, Out, Pprof};

/// Serves one HTTP response with a body of `len` bytes (starting as gzip does).
async fn serve(status: &'static str, len: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
        let mut body = vec![7u8; len];
        body[..2.min(len)].copy_from_slice(&[0x1f, 0x8b][..2.min(len)]);
        let _ = s.write_all(&body).await;
    });
    addr
}

fn pprof(max: u64) -> Pprof {
    Pprof::new(6060, "/debug/pprof/heap", Duration::from_secs(5), max)
}

#[tokio::test]
async fn downloads_the_profile() {
    let addr = serve("200 OK", 1000).await;
    let mut out = Out::Memory(Vec::new());
    let coming = AtomicBool::new(false);
    pprof(4096)
        .capture(std::process::id(), addr, &mut out, &coming)
        .await
        .unwrap();
    assert_eq!(out.written(), 1000);
    assert!(coming.load(Ordering::Relaxed), "a profile came");
}

#[tokio::test]
async fn refuses_oversized_profiles() {
    let addr = serve("200 OK", 100_000).await;
    let e = pprof(4096)
        .capture(
            std::process::id(),
            addr,
            &mut Out::Memory(Vec::new()),
            &AtomicBool::new(false),
        )
        .await
        .unwrap_err();
    assert!(format!("{:#}", e.error).contains("(4096 bytes)"), "{e:?}");
}

#[tokio::test]
async fn http_errors_are_errors() {
    let addr = serve("404 Not Found", 0).await;
    let coming = AtomicBool::new(false);
    let e = pprof(4096)
        .capture(
            std::process::id(),
            addr,
            &mut Out::Memory(Vec::new()),
            &coming,
        )
        .await
        .unwrap_err();
    assert!(
        !coming.load(Ordering::Relaxed),
        "an error page is no profile coming"
    );
    assert!(format!("{:#}", e.error).contains("404"), "{e:?}");
    assert_eq!(e.answer.status.as_deref(), Some("404 Not Found"));
}

#[tokio::test]
async fn probe_tells_a_profile_from_other_answers() {
    let pid = std::process::id();
    let t = Duration::from_secs(2);
    assert!(pprof(4096)
        .probe(pid, serve("200 OK", 10).await, t)
        .await
        .is_ok());
    assert!(pprof(4096)
        .probe(pid, serve("200 OK", 1).await, t)
        .await
        .is_err());
    assert!(matches!(
        pprof(4096).probe(pid, serve("503 Busy", 10).await, t).await,
        Err(NotServed::Answer(_))
    ));
}

#[tokio::test]
async fn a_probe_without_an_answer_in_time_is_slow_not_refused() {
    // Accepts, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move { listener.accept().await });
    let t = Duration::from_millis(200);
    let verdict = pprof(4096).probe(std::process::id(), addr, t).await;
    assert!(matches!(verdict, Err(NotServed::Slow(_))), "{verdict:?}");
    held.abort();
}
