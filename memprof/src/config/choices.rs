//! The settings that choose between ways of working: the detector, the log format, the
//! container trigger's detector, where Go heap profiles come from, the `rss_stat` gate.
use clap::ValueEnum;

/// Which detector feeds the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DetectorChoice {
    /// tp_btf, then the classic tracepoint, then polling, whichever loads first.
    Auto,
    /// BTF tracepoint only (fail if it cannot load).
    Btf,
    /// Classic `kmem/rss_stat` tracepoint only (fail if it cannot load).
    Classic,
    /// procfs polling every WATCH_TIME ms, no BPF.
    Poll,
}

/// How log lines are written: the same fields either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, `key=value` fields, control characters escaped.
    Text,
    /// One JSON object per line, for log pipelines: `timestamp`, `level`, `target`,
    /// `message` and each field as a key of its own.
    Json,
}

/// How the container trigger notices a container nearing its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ContainerDetector {
    /// cgroup v1 usage thresholds (eventfd), v2 `memory.events` and PSI triggers, with a
    /// working-set poll beside them; the poll alone where the cgroup files are read-only.
    Auto,
    /// The working-set poll every WATCH_TIME ms only.
    Poll,
}

/// Where Go heap profiles come from at the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GoHeapMode {
    /// The process's pprof endpoint; read from its memory when it has none or it fails.
    Endpoint,
    /// Only from the process's memory (no HTTP).
    Memory,
    /// Both, stored side by side (the memory read as `heap-memory`).
    Both,
    /// Only the endpoint: memprof reads no process's memory, at the threshold or at the kill
    /// (the kernel's walk is not armed), for clusters whose review allows none.
    EndpointOnly,
}

/// Whether `rss_stat` is taken off its hook while every watched process is far from its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RssGate {
    /// Off its hook while every watched memory cgroup's usage is below half the lowest level
    /// of its processes; on as soon as one passes it.
    Auto,
    /// Always on its hook.
    Off,
}
