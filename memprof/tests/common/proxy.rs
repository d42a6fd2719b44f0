//! A TCP proxy in front of the S3 server that misbehaves on demand, to stop memprof at each
//! point of a delivery: connections closed at once, requests swallowed with no answer, or
//! requests passed on while the answer is withheld (the object is stored, memprof never
//! learns it). It records what memprof sent, to check headers.
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Pass both ways.
    Forward,
    /// Close each connection as soon as it is accepted.
    Close,
    /// Read the request, never answer, never pass it on.
    Hold,
    /// Pass the request on; swallow the answer.
    ForwardHoldAnswer,
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    /// Listens on a free loopback port; connections accepted in a mode keep it.
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Mode::Forward));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (m, s) = (Arc::clone(&mode), Arc::clone(&sent));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let mode = *m.lock().unwrap();
                let sent = Arc::clone(&s);
                thread::spawn(move || serve(client, mode, upstream_port, sent));
            }
        });
        Proxy { port, mode, sent }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything clients sent so far, as text (bodies lossily).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }
}

fn serve(mut client: TcpStream, mode: Mode, upstream_port: u16, sent: Arc<Mutex<Vec<u8>>>) {
    if mode == Mode::Close {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let upstream = match mode {
        Mode::Hold => None,
        _ => TcpStream::connect(("127.0.0.1", upstream_port)).ok(),
    };
    if let Some(up) = &upstream {
        let (mut from, mut to) = (up.try_clone().unwrap(), client.try_clone().unwrap());
        let answer = mode == Mode::Forward;
        thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if answer && to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            if answer {
                let _ = to.shutdown(Shutdown::Write);
            }
        });
    }
    let mut up = upstream;
    let mut buf = [0u8; 64 * 1024];
    while let Ok(n @ 1..) = client.read(&mut buf) {
        sent.lock().unwrap().extend_from_slice(&buf[..n]);
        if let Some(u) = &mut up {
            if u.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    }
    if let Some(u) = up {
        let _ = u.shutdown(Shutdown::Write);
    }
}
