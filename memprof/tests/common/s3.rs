//! A real S3 server (s3s-fs) with SigV4 credentials, and a blocking client for assertions.
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{free_port, have, require, wait_for};

/// A real S3 server (s3s-fs) with SigV4 credentials, on loopback or another local address.
pub struct S3Server {
    child: Child,
    pub root: tempfile::TempDir,
    pub host: String,
    pub port: u16,
    pub bucket: String,
}

pub const ACCESS_KEY: &str = "memprof-test-access";
pub const SECRET_KEY: &str = "memprof-test-secret-0123456789";
pub const REGION: &str = "us-east-1";

impl S3Server {
    pub fn available() -> bool {
        require(
            have("s3s-fs"),
            "S3 test server s3s-fs (cargo install s3s-fs --features binary)",
        )
    }

    pub fn start(bucket: &str) -> Self {
        Self::start_on(bucket, "127.0.0.1")
    }

    /// Listens on `host`, e.g. the host's end of a pod's network link.
    pub fn start_on(bucket: &str, host: &str) -> Self {
        Self::start_at(bucket, host, free_port())
    }

    /// Listens on `host:port` (a port reserved earlier, e.g. for a server that comes up late).
    pub fn start_at(bucket: &str, host: &str, port: u16) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let child = Command::new("s3s-fs")
            .args(["--host", host, "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        wait_for("s3s-fs to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect((host, port)).is_ok()
        });
        S3Server {
            child,
            root,
            host: host.to_string(),
            port,
            bucket: bucket.to_string(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The environment memprof needs to use this server: the seed's variables plus the
    /// standard AWS ones.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BUCKET", self.bucket.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    pub fn client(&self) -> S3Client {
        S3Client::new(&self.endpoint(), &self.bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking S3 client over the real protocol (SigV4, path style).
pub struct S3Client {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Client {
    fn new(endpoint: &str, bucket: &str) -> Self {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "test",
            ))
            .force_path_style(true)
            .build();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        S3Client {
            rt,
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.into(),
        }
    }

    pub fn keys(&self) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.client.list_objects_v2().bucket(&self.bucket).send())
            .expect("ListObjectsV2");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect()
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("GetObject");
            out.body
                .collect()
                .await
                .expect("object body")
                .into_bytes()
                .to_vec()
        })
    }

    /// The object's user metadata (`x-amz-meta-*`), as S3 returns it.
    pub fn metadata(&self, key: &str) -> std::collections::HashMap<String, String> {
        let out = self
            .rt
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .expect("HeadObject");
        out.metadata().cloned().unwrap_or_default()
    }
}
