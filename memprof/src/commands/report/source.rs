//! Where `memprof report` reads what memprof stored: a local directory (the daemon's layout:
//! each object beside its `<key>.meta.json`) or an S3 location (`s3://bucket/prefix`, with the
//! daemon's credential chain, `AWS_ENDPOINT_URL` included). Keys and objects are the
//! tenants' as much as memprof's (names come from their pods and commands): every read is
//! bounded, and a directory's symbolic links are not followed.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::deliver::{metadata::Metadata, sink};

/// Largest object read (a profile memprof stores is bounded by `MEMPROF_CAPTURE_MAX_BYTES`,
/// 64 MiB by default).
pub const OBJECT_MAX: u64 = 256 << 20;
/// Most keys listed: far beyond a node's incidents, short of exhausting memory.
const KEYS_MAX: usize = 1_000_000;
/// Directory levels walked below the root (prefix, namespace, pod, container, file).
const DEPTH_MAX: usize = 12;

pub enum Source {
    Dir(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
}

impl Source {
    /// `s3://bucket[/prefix]` or a directory.
    pub async fn open(from: &str) -> Result<Self> {
        if let Some(rest) = from.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("--from {from:?}: no bucket (s3://bucket/prefix)");
            }
            // The region comes from the standard chain (AWS_REGION, profiles); S3 redirects
            // nothing for us, so it must be the bucket's.
            let region = std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".into());
            let (client, _) = sink::s3_client(&region).await;
            return Ok(Source::S3 {
                client,
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let dir = PathBuf::from(from);
        if !dir.is_dir() {
            bail!("--from {from:?}: not a directory nor s3://bucket/prefix");
        }
        Ok(Source::Dir(dir))
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Dir(d) => d.display().to_string(),
            Source::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// Every object's key (metadata files aside).
    pub async fn keys(&self) -> Result<Vec<String>> {
        let mut keys = match self {
            Source::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || walk(&dir)).await??
            }
            Source::S3 {
                client,
                bucket,
                prefix,
            } => {
                let mut keys = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix.as_str())
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(sink::classify).context("listing the bucket")?;
                    keys.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key().map(String::from)),
                    );
                    if keys.len() > KEYS_MAX {
                        bail!("more than {KEYS_MAX} objects: narrow --from to a prefix");
                    }
                }
                keys
            }
        };
        keys.retain(|k| !k.ends_with(".meta.json"));
        keys.sort();
        Ok(keys)
    }

    /// An object's metadata (empty when it has none).
    pub async fn metadata(&self, key: &str) -> Result<Metadata> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(format!("{key}.meta.json"));
                match read_bounded(&path, 1 << 20) {
                    Ok(bytes) => Metadata::from_json(&bytes)
                        .with_context(|| format!("{}: not memprof's metadata", path.display())),
                    Err(_) => Ok(Metadata::new()),
                }
            }
            Source::S3 { client, bucket, .. } => {
                let head = client
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(sink::classify)
                    .with_context(|| format!("HEAD {key}"))?;
                let mut meta = Metadata::new();
                for (k, v) in head.metadata().into_iter().flatten() {
                    meta.set(k, v);
                }
                Ok(meta)
            }
        }
    }

    /// An object's bytes, at most `OBJECT_MAX`.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        match self {
            Source::Dir(dir) => read_bounded(&dir.join(key), OBJECT_MAX),
            Source::S3 { client, bucket, .. } => {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(sink::classify)
                    .with_context(|| format!("GET {key}"))?;
                if object.content_length().unwrap_or(0) as u64 > OBJECT_MAX {
                    bail!("{key}: larger than {OBJECT_MAX} bytes");
                }
                let mut body = object.body;
                let mut bytes = Vec::new();
                while let Some(chunk) = body
                    .try_next()
                    .await
                    .with_context(|| format!("GET {key}"))?
                {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > OBJECT_MAX {
                        bail!("{key}: larger than {OBJECT_MAX} bytes");
                    }
                }
                Ok(bytes)
            }
        }
    }
}

/// A regular file's first `max` bytes, refusing a symbolic link in its last component and
/// anything but a regular file (a FIFO would never end; opened without blocking to find out).
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !f.metadata()?.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        bail!("{}: larger than {max} bytes", path.display());
    }
    Ok(bytes)
}

/// The keys under `root`: regular files, relative, `/`-separated; hidden files (a write in
/// progress) and symbolic links left out.
fn walk(root: &Path) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() && depth < DEPTH_MAX {
                dirs.push((entry.path(), depth + 1));
            } else if kind.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(root)?
                    .to_string_lossy()
                    .into_owned();
                keys.push(rel);
                if keys.len() > KEYS_MAX {
                    bail!("more than {KEYS_MAX} files: point --from at a narrower directory");
                }
            }
        }
    }
    Ok(keys)
}
