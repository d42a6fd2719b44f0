//! What a stored object is called and what travels with it: its key (`key`) and its metadata
//! (who the process was, what it used, why and how it was captured), from the facts capture
//! hands over.
use super::{
    key::{node_name, object_key, KeyParts, Level, Place},
    metadata::Metadata,
};

/// Names objects: the key prefix, where memprof runs (for processes whose own namespace and
/// pod are unknown) and the node.
pub struct Naming {
    prefix: String,
    place: Place,
    node: String,
}

/// The process an object is about, and why it was taken.
pub struct Subject<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub level: Level,
    /// What noticed the process: `ebpf`, `poll`, `container-…`, `oom-kill`, ….
    pub detector: &'a str,
    /// Where the object came from: `endpoint`, `memory`, `kernel`, `record`.
    pub source: &'a str,
    pub namespace: Option<&'a str>,
    pub pod: Option<&'a str>,
    pub container: Option<&'a str>,
    /// What the process used when last seen, when it was.
    pub usage: Option<Usage<'a>>,
}

pub struct Usage<'a> {
    pub cmdline: &'a [String],
    pub cgroup: &'a str,
    pub rss: u64,
    pub limit: u64,
    pub limit_source: String,
    pub working_set: Option<u64>,
    /// Where the memory went (`capture::accounting`), as JSON.
    pub accounting: Option<String>,
}

impl Naming {
    /// Under `prefix`, at the place the downward API (or the host) names.
    pub fn from_env(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            place: Place::from_env(),
            node: node_name(),
        }
    }

    /// The process's own namespace and pod where known, otherwise memprof's place.
    pub fn place_of(&self, namespace: Option<&str>, pod: Option<&str>) -> Place {
        match (namespace, pod) {
            (Some(namespace), Some(pod)) => Place {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
            },
            _ => self.place.clone(),
        }
    }

    /// `namespace/pod/container` as the process's keys name it, `-` for an unknown container.
    pub fn who(
        &self,
        namespace: Option<&str>,
        pod: Option<&str>,
        container: Option<&str>,
    ) -> String {
        let place = self.place_of(namespace, pod);
        format!(
            "{}/{}/{}",
            place.namespace,
            place.pod,
            container.unwrap_or("-")
        )
    }

    /// The object key and metadata of an object of `kind` about `s`.
    pub fn name(&self, s: &Subject, kind: &str, extension: &str) -> (String, Metadata) {
        let place = self.place_of(s.namespace, s.pod);
        let time = chrono::Utc::now();
        let key = object_key(&KeyParts {
            prefix: &self.prefix,
            place: &place,
            name: s.container.unwrap_or(s.comm),
            pid: s.pid,
            level: s.level,
            kind,
            extension,
            time,
        });
        let mut meta = Metadata::new();
        meta.set("pid", s.pid)
            .set("comm", s.comm)
            .set("trigger", s.level)
            .set("detector", s.detector)
            .set("source", s.source)
            .set("kind", kind)
            .set("namespace", &place.namespace)
            .set("pod", &place.pod)
            .set("container", s.container.unwrap_or("-"))
            .set("node", &self.node)
            .set(
                "captured-at",
                time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
            .set("memprof-version", env!("CARGO_PKG_VERSION"));
        if let Some(u) = &s.usage {
            meta.set("cmdline", u.cmdline.join(" "))
                .set("cgroup", u.cgroup)
                .set("rss", u.rss)
                .set("limit", u.limit)
                .set("limit-source", &u.limit_source)
                .set(
                    "percent",
                    format!("{:.1}", u.rss as f64 * 100.0 / u.limit.max(1) as f64),
                );
            if let Some(ws) = u.working_set {
                meta.set("working-set", ws);
            }
            if let Some(a) = &u.accounting {
                meta.set("memory-accounting", a);
            }
        }
        (key, meta)
    }
}
