//! The delivery settings: the destination (with server-side encryption), the spool's bounds
//! and how long a stopping memprof keeps uploading.
use std::time::Duration;

use super::{number, size, Args, ConfigError, Destination};
use crate::deliver::{
    bounds::Limits,
    sink::Encryption,
    webhook::{self, Url},
};

pub fn destination(a: &Args) -> Result<Destination, ConfigError> {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let encryption = encryption(a)?;
    match (nonempty(&a.bucket), nonempty(&a.aws_region)) {
        (Some(bucket), Some(region)) => Ok(Destination::S3 {
            bucket,
            region,
            encryption,
        }),
        (Some(_), None) => Err(ConfigError(
            "AWS_REGION (--aws-region) must be set when BUCKET is set".into(),
        )),
        (None, _) if encryption.is_some() => Err(ConfigError(
            "MEMPROF_S3_SSE (--s3-sse) needs BUCKET: a local directory is not encrypted by memprof"
                .into(),
        )),
        (None, _) => Ok(Destination::Local(a.local_dir.clone())),
    }
}

fn encryption(a: &Args) -> Result<Option<Encryption>, ConfigError> {
    let key_id = a.s3_sse_kms_key_id.clone().filter(|k| !k.trim().is_empty());
    let sse = a.s3_sse.as_deref().map(str::trim).unwrap_or("");
    match (sse, key_id) {
        ("", None) => Ok(None),
        ("AES256", None) => Ok(Some(Encryption::Aes256)),
        ("aws:kms", key_id) => Ok(Some(Encryption::Kms { key_id })),
        ("" | "AES256", Some(_)) => Err(ConfigError(
            "MEMPROF_S3_SSE_KMS_KEY_ID (--s3-sse-kms-key-id) needs MEMPROF_S3_SSE=aws:kms".into(),
        )),
        (other, _) => Err(ConfigError(format!(
            "invalid MEMPROF_S3_SSE (--s3-sse): {other:?} is not AES256 or aws:kms"
        ))),
    }
}

/// The webhooks alerts go to; an entry that is not an http(s) URL is named by its position
/// (a URL may be a secret: it is not printed).
pub fn webhooks(a: &Args) -> Result<Vec<Url>, ConfigError> {
    a.webhook_url
        .as_ref()
        .map_or("", |s| s.0.as_str())
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .enumerate()
        .map(|(i, u)| {
            webhook::parse(u).map(Url).map_err(|why| {
                ConfigError(format!(
                    "invalid MEMPROF_WEBHOOK_URL (--webhook-url): entry {} is {why}",
                    i + 1
                ))
            })
        })
        .collect::<Result<Vec<Url>, _>>()
        .map(|mut urls| {
            // One webhook named twice is alerted once.
            let mut seen: Vec<Url> = Vec::new();
            urls.retain(|u| {
                let first = !seen.contains(u);
                seen.push(u.clone());
                first
            });
            urls
        })
}

pub fn spool_limits(a: &Args) -> Result<Limits, ConfigError> {
    Ok(Limits {
        max_bytes: size(&a.spool_max_bytes).filter(|b| *b > 0).ok_or_else(|| {
            ConfigError(format!(
                "invalid MEMPROF_SPOOL_MAX_BYTES (--spool-max-bytes): {:?} is not a size such as 1Gi or 500M",
                a.spool_max_bytes
            ))
        })?,
        max_objects: number(
            &a.spool_max_objects,
            "MEMPROF_SPOOL_MAX_OBJECTS",
            "spool-max-objects",
            1usize,
            1_000_000,
            "profiles",
        )?,
        keep: a.spool_keep,
    })
}

pub fn shutdown_deadline(a: &Args) -> Result<Duration, ConfigError> {
    number(
        &a.shutdown_secs,
        "MEMPROF_SHUTDOWN_SECS",
        "shutdown-secs",
        1u64,
        3600,
        "seconds",
    )
    .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{
        tests::{error, parse},
        Args,
    };

    #[test]
    fn webhooks_are_checked_and_never_printed() {
        let secret = "T0/B0/tok3n";
        let two = format!(
            "https://hooks.example/{secret}, http://127.0.0.1:9/x,https://hooks.example/{secret}"
        );
        let c = parse(&["--webhook-url", &two]).unwrap();
        assert_eq!(
            c.webhooks.len(),
            2,
            "one webhook named twice is alerted once"
        );
        let args = Args::try_parse_from(["memprof", "--webhook-url", &two]).unwrap();
        for printed in [format!("{c:?}"), format!("{args:?}")] {
            assert!(!printed.contains(secret), "{printed}");
        }
        let e = error(&[
            "--webhook-url",
            &format!("http://ok/{secret},hooks.example/{secret}"),
        ]);
        assert!(
            e.starts_with("invalid MEMPROF_WEBHOOK_URL (--webhook-url): entry 2 is"),
            "{e}"
        );
        assert!(!e.contains(secret), "{e}");
    }
}
