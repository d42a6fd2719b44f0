//! Building the stages the configuration asks for, below the daemon and `memprof capture`.
use std::sync::Arc;

use anyhow::Result;

use crate::{
    config::{Config, Destination},
    deliver::{sink::Sink, spool::Spool, Deliverer},
};

/// The client the delivery stage stores into S3 with, for `memprof doctor`'s HeadBucket.
pub async fn s3_client(region: &str) -> aws_sdk_s3::Client {
    crate::deliver::sink::s3_client(region).await.0
}

/// The delivery stage: the spool, and S3 or a local directory behind it.
pub async fn deliverer(cfg: &Config) -> Result<Arc<Deliverer>> {
    let sink = match &cfg.destination {
        Destination::S3 {
            bucket,
            region,
            encryption,
        } => Sink::s3(bucket, region, encryption.clone()).await?,
        Destination::Local(dir) => Sink::local(dir),
    };
    let spool = Spool::open(&cfg.spool_dir)?;
    Ok(Arc::new(Deliverer::new(spool, sink, cfg.spool_limits)))
}
