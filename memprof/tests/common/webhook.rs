//! A webhook receiver on loopback: it answers every POST with one status and keeps what it
//! was sent (headers and body), to count alerts and read them.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Post {
    pub head: String,
    pub body: Vec<u8>,
}

impl Post {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

pub struct Receiver {
    pub port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    /// Listens on `port` (0: any) and answers `status` to everything.
    pub fn start(port: u16, status: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the receiver");
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&posts);
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let kept = Arc::clone(&kept);
                thread::spawn(move || serve(stream, status, &kept));
            }
        });
        Receiver { port, posts }
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

/// A free port below the kernel's ephemeral range, for a receiver that comes up late: no
/// outgoing connection (memprof's, the S3 client's) can be holding it by then.
pub fn late_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
    let start = 10_000 + fastrand_port(low.saturating_sub(10_000).max(1));
    (start..low)
        .chain(10_000..start)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// Somewhere in `0..span`, different per process (tests of two runs do not pick the same).
fn fastrand_port(span: u16) -> u16 {
    (std::process::id() % u32::from(span)) as u16
}

/// Requests on one connection (keep-alive), until the client closes it.
fn serve(stream: TcpStream, status: u16, kept: &Mutex<Vec<Post>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock().unwrap().push(Post { head, body });
        let answer = format!("HTTP/1.1 {status} Status\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
