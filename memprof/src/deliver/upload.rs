//! Putting one object into S3 from memory or from a spool file. From a file the body is
//! streamed, never read whole: one PUT up to `MULTIPART_ABOVE` bytes, above it a multipart
//! upload whose parts are streamed from their ranges of the file, so memprof's memory does
//! not grow with the profile (other runtimes' heap dumps reach gigabytes). A multipart upload
//! that fails is aborted, so S3 keeps no orphaned parts from memprof's side.
use std::path::Path;

use anyhow::{Context, Result};
use aws_sdk_s3::{
    primitives::{ByteStream, Length},
    types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption as Sse},
    Client,
};
use tracing::debug;

use super::{
    metadata::Metadata,
    sink::{classify, Encryption},
};

/// Objects larger than this go up in parts.
pub const MULTIPART_ABOVE: u64 = 32 << 20;
/// Size of each part (S3 wants at least 5 MiB but for the last, and at most 10,000 parts:
/// objects up to 156 GiB).
const PART: u64 = 16 << 20;

/// What an object's body comes from.
pub enum Body<'a> {
    Memory(&'a [u8]),
    /// `len` bytes of the file from `offset`.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

/// Where and how objects go.
pub struct Target<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
    pub encryption: Option<&'a Encryption>,
}

impl Target<'_> {
    fn sse(&self) -> (Option<Sse>, Option<String>) {
        match self.encryption {
            None => (None, None),
            Some(Encryption::Aes256) => (Some(Sse::Aes256), None),
            Some(Encryption::Kms { key_id }) => (Some(Sse::AwsKms), key_id.clone()),
        }
    }

    pub async fn put(&self, key: &str, meta: &Metadata, body: Body<'_>) -> Result<()> {
        let (sse, kms_key) = self.sse();
        let (stream, len) = match body {
            Body::Memory(bytes) => (ByteStream::from(bytes.to_vec()), bytes.len() as u64),
            Body::File { path, offset, len } if len > MULTIPART_ABOVE => {
                return self.multipart(key, meta, path, offset, len).await;
            }
            Body::File { path, offset, len } => (range(path, offset, len).await?, len),
        };
        self.client
            .put_object()
            .bucket(self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .content_length(len as i64)
            .set_metadata(Some(meta.for_s3()))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .body(stream)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn multipart(
        &self,
        key: &str,
        meta: &Metadata,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let (sse, kms_key) = self.sse();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .set_metadata(Some(meta.for_s3()))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .send()
            .await
            .map_err(classify)
            .context("starting a multipart upload")?;
        let id = created.upload_id().context("S3 gave no upload id")?;
        let result = self.parts(key, id, path, offset, len).await;
        if result.is_err() {
            // Best effort: a bucket lifecycle rule (AbortIncompleteMultipartUpload) covers
            // what this cannot reach, e.g. after a crash.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(self.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await;
        }
        result
    }

    async fn parts(&self, key: &str, id: &str, path: &Path, offset: u64, len: u64) -> Result<()> {
        let started = std::time::Instant::now();
        let mut done = Vec::new();
        for (i, start) in (0..len).step_by(PART as usize).enumerate() {
            let number = i as i32 + 1;
            let n = PART.min(len - start);
            let out = self
                .client
                .upload_part()
                .bucket(self.bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .content_length(n as i64)
                .body(range(path, offset + start, n).await?)
                .send()
                .await
                .map_err(classify)
                .with_context(|| format!("part {number} of {}", len.div_ceil(PART)))?;
            done.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                    .build(),
            );
        }
        let parts = done.len();
        self.client
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(classify)
            .context("completing the multipart upload")?;
        debug!(
            key,
            parts,
            bytes = len,
            took_ms = started.elapsed().as_millis() as u64,
            "multipart upload complete"
        );
        Ok(())
    }
}

/// `len` bytes of the file from `offset`, read as the request is sent.
async fn range(path: &Path, offset: u64, len: u64) -> Result<ByteStream> {
    ByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .build()
        .await
        .with_context(|| format!("reading {}", path.display()))
}
