//! The S3 server benchmarks deliver to: s3s-fs on loopback, with SigV4 credentials, as the
//! daemon meets S3 in production (minus the network's distance).
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use super::Killed;

const KEY_ID: &str = "memprof-bench";
const SECRET: &str = "memprof-bench-secret";
pub const BUCKET: &str = "profiles";

/// A running s3s-fs serving `BUCKET` from a directory; stopped when dropped.
pub struct S3 {
    _server: Killed,
    port: u16,
}

impl S3 {
    /// Serves `root` (created, with the bucket's directory) on a free loopback port.
    pub fn start(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join(BUCKET))?;
        let port = free_port()?;
        let server = Killed(
            Command::new("s3s-fs")
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", KEY_ID, "--secret-key", SECRET])
                .arg(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting s3s-fs (cargo xtask setup installs it)")?,
        );
        // Listening before memprof's first upload; the daemon retries anyway.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(Self {
            _server: server,
            port,
        })
    }

    /// Points a memprof command at this server, as the daemon's environment would.
    pub fn configure(&self, cmd: &mut Command) {
        cmd.env("BUCKET", BUCKET)
            .env("AWS_REGION", "us-east-1")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_EC2_METADATA_DISABLED", "true");
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
