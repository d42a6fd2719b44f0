//! What memprof did, as Prometheus metrics: one registry for the process, recorded by every
//! stage through the functions here (a counter bump is an atomic add, cheap on every path) and
//! rendered by the daemon's HTTP server (`serve`) at each scrape. The kernel's per-program run
//! time is read at the scrape itself (`bpf`). `health` keeps what the probes answer.
pub mod bpf;
pub mod health;

use std::{sync::LazyLock, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Detection {
    detector: &'static str,
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaptureResult {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rule {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Upload {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Profiled {
    profiled_before: &'static str,
}

struct Metrics {
    registry: Registry,
    kernel_events: Family<Kind, Counter>,
    detections: Family<Detection, Counter>,
    captures: Family<CaptureResult, Counter>,
    suppressed: Family<Rule, Counter>,
    uploads: Family<Upload, Counter>,
    alerts: Family<Upload, Counter>,
    spool_objects: Gauge,
    spool_bytes: Gauge,
    oom_kills: Family<Profiled, Counter>,
    stored_latency: Histogram,
    rss_stat_attached: Gauge,
    rss_stat_switches: Counter,
}

/// Detection to stored, in seconds: 5 ms to ~80 s, the span between an eBPF crossing of a
/// small heap and a large profile over a slow link.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 15)
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut m = Metrics {
        registry: Registry::with_prefix("memprof"),
        kernel_events: Family::default(),
        detections: Family::default(),
        captures: Family::default(),
        suppressed: Family::default(),
        uploads: Family::default(),
        alerts: Family::default(),
        spool_objects: Gauge::default(),
        spool_bytes: Gauge::default(),
        oom_kills: Family::default(),
        stored_latency: Histogram::new(latency_buckets()),
        rss_stat_attached: Gauge::default(),
        rss_stat_switches: Counter::default(),
    };
    let r = &mut m.registry;
    r.register(
        "kernel_events",
        "Events read from the kernel's ring buffer, by kind (crossed, oom_victim, exec)",
        m.kernel_events.clone(),
    );
    r.register(
        "detections",
        "Captures decided, by the detector that noticed (ebpf, poll, the container \
         trigger's notify or poll, retry, next_level) and the trigger (process, container)",
        m.detections.clone(),
    );
    r.register(
        "captures",
        "Captures finished, by kind (threshold, container, at_kill) and result (stored, \
         no_profile: no endpoint and no heap readable from memory, failed)",
        m.captures.clone(),
    );
    r.register(
        "captures_suppressed",
        "Captures not started, by the rule that held them",
        m.suppressed.clone(),
    );
    r.register(
        "uploads",
        "Attempts to store a profile at its destination, by result (stored; failed: kept \
         in the spool for a retry; lost)",
        m.uploads.clone(),
    );
    r.register(
        "alerts",
        "Attempts to POST an alert to a webhook, by result (stored: accepted; failed: kept \
         in its spool for a retry; lost)",
        m.alerts.clone(),
    );
    r.register(
        "spool_objects",
        "Profiles waiting in the spool",
        m.spool_objects.clone(),
    );
    r.register(
        "spool_bytes",
        "Bytes of profiles waiting in the spool",
        m.spool_bytes.clone(),
    );
    r.register(
        "oom_kills",
        "OOM kills of watched processes, by whether a profile was stored before the kill",
        m.oom_kills.clone(),
    );
    r.register(
        "detection_to_stored_seconds",
        "From the detector noticing a process to its profile stored (spooled and sent)",
        m.stored_latency.clone(),
    );
    r.register(
        "rss_stat_attached",
        "1 while this instance's rss_stat program is on its hook (every page fault on the node \
         pays for it), 0 while the gate holds it off (every watched process far from its level)",
        m.rss_stat_attached.clone(),
    );
    r.register(
        "rss_stat_switches",
        "Times the gate put rss_stat on its hook or took it off",
        m.rss_stat_switches.clone(),
    );
    r.register_collector(Box::new(bpf::Programs));
    // Series that alerts are written on exist at 0 from the start, so that `increase()` sees
    // their first event.
    for kind in ["threshold", "container", "at_kill"] {
        for result in ["stored", "failed", "no_profile"] {
            m.captures
                .get_or_create(&CaptureResult { kind, result })
                .inc_by(0);
        }
    }
    for result in ["stored", "failed", "lost"] {
        m.uploads.get_or_create(&Upload { result }).inc_by(0);
    }
    for profiled_before in ["true", "false"] {
        m.oom_kills
            .get_or_create(&Profiled { profiled_before })
            .inc_by(0);
    }
    m
});

/// The registry in Prometheus' text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

pub fn kernel_event(kind: &'static str) {
    METRICS.kernel_events.get_or_create(&Kind { kind }).inc();
}

pub fn detection(detector: &'static str, trigger: &'static str) {
    METRICS
        .detections
        .get_or_create(&Detection { detector, trigger })
        .inc();
}

pub fn capture(kind: &'static str, result: &'static str) {
    METRICS
        .captures
        .get_or_create(&CaptureResult { kind, result })
        .inc();
}

pub fn suppressed(rule: &'static str) {
    METRICS.suppressed.get_or_create(&Rule { rule }).inc();
}

pub fn upload(result: &'static str) {
    METRICS.uploads.get_or_create(&Upload { result }).inc();
}

pub fn alert(result: &'static str) {
    METRICS.alerts.get_or_create(&Upload { result }).inc();
}

pub fn spool(objects: usize, bytes: u64) {
    METRICS.spool_objects.set(objects as i64);
    METRICS.spool_bytes.set(bytes.min(i64::MAX as u64) as i64);
}

pub fn oom_kill(profiled_before: bool) {
    let profiled_before = if profiled_before { "true" } else { "false" };
    METRICS
        .oom_kills
        .get_or_create(&Profiled { profiled_before })
        .inc();
}

/// Whether `rss_stat` is on its hook now; `switched`: the gate moved it.
pub fn rss_stat_attached(attached: bool, switched: bool) {
    METRICS.rss_stat_attached.set(attached as i64);
    if switched {
        METRICS.rss_stat_switches.inc();
    }
}

pub fn stored_after(detection: Duration) {
    METRICS.stored_latency.observe(detection.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_recorded_is_rendered_with_its_labels() {
        detection("ebpf", "process");
        capture("threshold", "stored");
        stored_after(Duration::from_millis(30));
        let text = render();
        assert!(
            text.contains(r#"memprof_detections_total{detector="ebpf",trigger="process"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memprof_captures_total{kind="threshold",result="stored"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memprof_detection_to_stored_seconds_bucket{le="0.04"} "#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
