//! Building the stages the configuration asks for, below the daemon and `memprof capture`.
use std::sync::Arc;

use anyhow::Result;

use crate::{
    config::{Config, Destination},
    deliver::{alerts::Alerts, sink::Sink, spool::Spool, Deliverer},
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

/// The alerts to the configured webhooks, their retries running; `None` without webhooks.
pub fn alerts(cfg: &Config) -> Result<Option<Arc<Alerts>>> {
    if cfg.webhooks.is_empty() {
        return Ok(None);
    }
    let alerts = Alerts::open(&cfg.spool_dir, &cfg.webhooks, cfg.webhook_profiles)?;
    alerts.spawn_retries();
    Ok(Some(Arc::new(alerts)))
}

/// The start-up line: what memprof watches with and against, for operators to check.
pub fn announce(cfg: &Config, detector: &str, poll_every: std::time::Duration, destination: &str) {
    tracing::info!(
        detector,
        poll_every_ms = poll_every.as_millis() as u64,
        levels_pct = ?cfg.levels_pct,
        levels_bytes = ?cfg.levels_bytes,
        container_pct = ?cfg.container_pct,
        container_detector = ?cfg.container_detector,
        go_heap = ?cfg.go_heap,
        max_procs = cfg.max_procs,
        destination,
        webhooks = ?cfg.webhooks,
        pprof_port = cfg.pprof_port,
        pprof_ports = ?cfg.pprof_ports,
        pprof_path = cfg.pprof_path,
        "memprof started"
    );
}
