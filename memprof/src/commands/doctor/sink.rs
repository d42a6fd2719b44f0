//! Where profiles would go: the S3 bucket (a HeadBucket) or the local directory (a probe file
//! written and removed), and the spool, where every profile waits first.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aws_sdk_s3::error::DisplayErrorContext;

use super::Check;
use crate::{
    config::{Config, Destination},
    logs::escape,
};

/// How long the HeadBucket may take, its retries included.
const HEAD_TIMEOUT: Duration = Duration::from_secs(20);

/// The destination, for the summary.
pub(super) fn describe(cfg: &Config) -> String {
    match &cfg.destination {
        Destination::S3 { bucket, .. } => format!("s3://{}", escape(bucket)),
        Destination::Local(dir) => escape(&dir.display().to_string()),
    }
}

pub(super) async fn checks(cfg: &Config) -> Vec<Check> {
    let destination = match &cfg.destination {
        Destination::S3 { bucket, region, .. } => s3(bucket, region).await,
        Destination::Local(dir) => writable("local directory", "MEMPROF_LOCAL_DIR", dir),
    };
    vec![
        destination,
        writable("spool", "MEMPROF_SPOOL_DIR", &cfg.spool_dir),
    ]
}

/// A HeadBucket, through the client the daemon stores with (which checks the bucket in the
/// background and only logs the answer).
async fn s3(bucket: &str, region: &str) -> Check {
    const WHAT: &str = "S3 bucket";
    let client = crate::daemon::wire::s3_client(region).await;
    let shown = format!("s3://{} in {}", escape(bucket), escape(region));
    let head = client.head_bucket().bucket(bucket).send();
    let e = match tokio::time::timeout(HEAD_TIMEOUT, head).await {
        Ok(Ok(_)) => return Check::ok(WHAT, format!("{shown}: HeadBucket answered")),
        Ok(Err(e)) => e,
        Err(_) => {
            return Check::fail(
                WHAT,
                format!("{shown}: no answer to HeadBucket within {HEAD_TIMEOUT:?}"),
                "check the endpoint (AWS_ENDPOINT_URL) and the network path to it",
            )
        }
    };
    let text = escape(&DisplayErrorContext(&e).to_string());
    // A HEAD answer has no body, so its status is all S3 says.
    match e.raw_response().map(|r| r.status().as_u16()) {
        Some(404) => Check::fail(
            WHAT,
            format!("{shown}: no such bucket (404)"),
            "create the bucket, or set BUCKET to one that exists",
        ),
        Some(403) => Check::warn(
            WHAT,
            format!("{shown}: HeadBucket refused (403)"),
            "expected for a write-only role (s3:PutObject only), which still stores; with any \
             other role the credentials or the bucket policy are wrong",
        ),
        _ => Check::fail(
            WHAT,
            format!("{shown}: {text}"),
            "check AWS_REGION, the endpoint (AWS_ENDPOINT_URL), the credentials and the \
             network path to S3",
        ),
    }
}

/// Whether memprof can write in `dir`: a probe file created and removed. Directories missing
/// on the way, which the daemon would create, are created for the probe and removed again.
fn writable(what: &'static str, var: &str, dir: &Path) -> Check {
    let shown = escape(&dir.display().to_string());
    // Innermost first, the order they are removed in.
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    let probe = dir.join(format!(".memprof-doctor-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"memprof doctor"))
        .and_then(|()| std::fs::remove_file(&probe));
    for d in &missing {
        let _ = std::fs::remove_dir(d);
    }
    match result {
        Ok(()) if missing.is_empty() => Check::ok(what, format!("{shown} is writable")),
        Ok(()) => Check::ok(
            what,
            format!("{shown} does not exist yet; memprof can create it"),
        ),
        Err(e) => Check::fail(
            what,
            format!("{shown} is not writable: {e}"),
            format!("give memprof a writable volume there, or set {var} to one"),
        ),
    }
}
