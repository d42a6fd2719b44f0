//! Where profiles end up: an S3 bucket, or a local directory when no bucket is configured.
use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{Context, Result};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::{
    config::timeout::TimeoutConfig,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
};
use tracing::{info, warn};

pub use super::upload::Body;
use super::{metadata::Metadata, upload::Target};

/// Server-side encryption asked of S3 for every object (`MEMPROF_S3_SSE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encryption {
    Aes256,
    /// `aws:kms`, with the bucket's default key when no key id is given.
    Kms {
        key_id: Option<String>,
    },
}

/// A store that cannot succeed until someone changes the configuration (credentials, bucket,
/// its policy), as opposed to an outage, throttling or a timeout, which pass by themselves.
#[derive(Debug)]
pub struct Permanent(pub String);

impl std::fmt::Display for Permanent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Permanent {}

/// S3 error codes that no retry fixes.
const PERMANENT_CODES: [&str; 9] = [
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "NoSuchBucket",
    "AccountProblem",
    "InvalidToken",
    "KMS.DisabledException",
];

/// Whether an error from `Sink::store` is permanent.
pub fn is_permanent(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Permanent>().is_some()
}

/// The SDK's error as one line, typed `Permanent` when no retry can fix it.
pub(crate) fn classify<E, R>(e: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let text = DisplayErrorContext(&e).to_string();
    let permanent = match &e {
        SdkError::ServiceError(s) => s.err().code().is_some_and(|c| PERMANENT_CODES.contains(&c)),
        // The request could not even be built: no credentials at all.
        SdkError::ConstructionFailure(_) => true,
        _ => false,
    };
    if permanent {
        anyhow::Error::new(Permanent(text))
    } else {
        anyhow::anyhow!(text)
    }
}

/// Bounds of every S3 call, so a hung S3 never holds a capture or the retries.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(60))
        .operation_timeout(Duration::from_secs(120))
        .build()
}

pub enum Sink {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        encryption: Option<Encryption>,
    },
    Local(PathBuf),
    /// Alerts: each stored object is one POST.
    Webhook(Box<super::webhook::Webhook>),
}

/// The S3 client memprof stores with (the standard credential and region chain, path-style
/// addressing for an S3-compatible server behind `AWS_ENDPOINT_URL`), and the configuration
/// it was made from.
pub async fn s3_client(region: &str) -> (aws_sdk_s3::Client, aws_config::SdkConfig) {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(shared.endpoint_url().is_some())
        .timeout_config(timeouts())
        .build();
    (aws_sdk_s3::Client::from_conf(conf), shared)
}

impl Sink {
    /// Builds the S3 client and resolves credentials now, so that the first profile does not
    /// pay for it. Standard AWS configuration applies (env, profiles, IRSA, Pod Identity,
    /// `AWS_ENDPOINT_URL`); a custom endpoint implies path-style addressing, which
    /// S3-compatible servers expect.
    pub async fn s3(bucket: &str, region: &str, encryption: Option<Encryption>) -> Result<Self> {
        let (client, shared) = s3_client(region).await;
        if let Some(provider) = shared.credentials_provider() {
            if let Err(e) = provider.provide_credentials().await {
                warn!("no AWS credentials yet ({e}); profiles will wait in the spool");
            }
        }
        // Checked beside start-up, never before it: a hung S3 must not delay detection.
        let (check, b, r) = (client.clone(), bucket.to_string(), region.to_string());
        tokio::spawn(async move {
            match check.head_bucket().bucket(&b).send().await {
                Ok(_) => info!(bucket = b, region = r, "S3 bucket reachable"),
                Err(e) => warn!(
                    bucket = b,
                    region = r,
                    "S3 bucket not reachable yet: {}",
                    DisplayErrorContext(&e)
                ),
            }
        });
        Ok(Sink::S3 {
            client,
            bucket: bucket.to_string(),
            encryption,
        })
    }

    pub fn local(dir: &Path) -> Self {
        Sink::Local(dir.to_path_buf())
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::S3 { bucket, .. } => format!("s3://{bucket}"),
            Sink::Local(dir) => dir.display().to_string(),
            Sink::Webhook(hook) => hook.redacted().to_string(),
        }
    }

    /// Stores `body` under `key`, with `meta` as S3 user metadata or, in a local directory,
    /// as `<key>.meta.json` beside it (written first, so an object never lacks it).
    pub async fn store(&self, key: &str, meta: &Metadata, body: Body<'_>) -> Result<()> {
        match self {
            Sink::S3 {
                client,
                bucket,
                encryption,
            } => {
                let target = Target {
                    client,
                    bucket,
                    encryption: encryption.as_ref(),
                };
                target
                    .put(key, meta, body)
                    .await
                    .with_context(|| format!("PUT s3://{bucket}/{key}"))?;
            }
            Sink::Local(dir) => {
                let dest = dir.join(key);
                let parent = dest.parent().context("key without a file name")?;
                super::durable::private_dir(parent)?;
                let meta_path = dir.join(format!("{key}.meta.json"));
                super::durable::write_atomically(&meta_path, &[&meta.to_json()]).await?;
                match body {
                    Body::Memory(bytes) => {
                        super::durable::write_atomically(&dest, &[bytes]).await?
                    }
                    Body::File { path, offset, len } => {
                        super::durable::copy_atomically(&dest, path, offset, len).await?
                    }
                }
            }
            Sink::Webhook(hook) => {
                let bytes = match body {
                    Body::Memory(bytes) => bytes.to_vec(),
                    Body::File { path, offset, len } => {
                        super::durable::read_at(path, offset, len).await?
                    }
                };
                hook.post(key, bytes).await?;
            }
        }
        Ok(())
    }
}
