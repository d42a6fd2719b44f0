//! Where profiles end up: an S3 bucket, or a local directory when no bucket is configured.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::primitives::ByteStream;
use tracing::{info, warn};

pub enum Sink {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
    Local(PathBuf),
}

impl Sink {
    /// Builds the S3 client and resolves credentials now, so that the first profile does not
    /// pay for it. Standard AWS configuration applies (env, profiles, IRSA, Pod Identity,
    /// `AWS_ENDPOINT_URL`); a custom endpoint implies path-style addressing, which
    /// S3-compatible servers expect.
    pub async fn s3(bucket: &str, region: &str) -> Result<Self> {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .load()
            .await;
        let custom_endpoint = shared.endpoint_url().is_some();
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(custom_endpoint)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        if let Some(provider) = shared.credentials_provider() {
            if let Err(e) = provider.provide_credentials().await {
                warn!("no AWS credentials yet ({e}); profiles will wait in the spool");
            }
        }
        match client.head_bucket().bucket(bucket).send().await {
            Ok(_) => info!(bucket, region, "S3 bucket reachable"),
            Err(e) => warn!(
                bucket,
                region,
                "S3 bucket not reachable yet: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ),
        }
        Ok(Sink::S3 {
            client,
            bucket: bucket.to_string(),
        })
    }

    pub fn local(dir: &Path) -> Self {
        Sink::Local(dir.to_path_buf())
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::S3 { bucket, .. } => format!("s3://{bucket}"),
            Sink::Local(dir) => dir.display().to_string(),
        }
    }

    /// Stores `bytes` under `key`.
    pub async fn store(&self, key: &str, bytes: &[u8]) -> Result<()> {
        match self {
            Sink::S3 { client, bucket } => {
                let body = ByteStream::from(bytes.to_vec());
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type("application/octet-stream")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)))
                    .with_context(|| format!("PUT s3://{bucket}/{key}"))?;
            }
            Sink::Local(dir) => {
                let dest = dir.join(key);
                let parent = dest.parent().context("key without a file name")?;
                super::private_dir(parent)?;
                super::write_atomically(&dest, &[bytes]).await?;
            }
        }
        Ok(())
    }
}
