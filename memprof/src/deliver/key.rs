//! Object keys: `<prefix>/<namespace>/<pod>/<name>/<UTC time>_pid-<PID>_<level>.<kind>.<ext>`,
//! where the level is `<PCT>pct` for a threshold capture, `oom` for one taken at the kill and
//! `manual` for `memprof capture`. Namespace and pod are the process's own when memprof can
//! tell them (node mode, `assess::identity`), otherwise the downward API's (`POD_NAMESPACE`,
//! `POD_NAME`); a plain node or laptop uses `host` and the host name. The name is the
//! container's when known, otherwise the command's.
use chrono::{DateTime, Utc};

/// Where memprof runs, for the key's middle segments.
#[derive(Clone, Debug)]
pub struct Place {
    pub namespace: String,
    pub pod: String,
}

impl Place {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            namespace: var("POD_NAMESPACE").unwrap_or_else(|| "host".into()),
            pod: var("POD_NAME")
                .or_else(|| var("NODE_NAME"))
                .unwrap_or_else(hostname),
        }
    }
}

/// The node's name: the downward API's `NODE_NAME`, else the host name.
pub fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(hostname)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Keeps a key segment to characters safe in S3 keys and file names.
fn segment(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match clean.trim_matches('.') {
        "" => "_".into(),
        s => s.to_string(),
    }
}

/// What made memprof capture.
#[derive(Clone, Copy, Debug)]
pub enum Level {
    /// RSS reached this percentage of the limit.
    Percent(f64),
    /// RSS reached this absolute level (a process without a limit).
    Bytes(u64),
    /// The OOM killer chose the process.
    Oom,
    /// Asked for on the command line.
    Manual,
    /// The process's container's working set reached this percentage of its limit.
    Container(f64),
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::Percent(p) => write!(f, "{}pct", p.floor() as u64),
            Level::Bytes(b) if b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            Level::Bytes(b) => write!(f, "{}MiB", b >> 20),
            Level::Oom => f.write_str("oom"),
            Level::Manual => f.write_str("manual"),
            Level::Container(p) => write!(f, "container-{}pct", p.floor() as u64),
        }
    }
}

pub struct KeyParts<'a> {
    pub prefix: &'a str,
    pub place: &'a Place,
    /// The container's name, or the command's.
    pub name: &'a str,
    pub pid: u32,
    pub level: Level,
    pub kind: &'a str,
    pub extension: &'a str,
    pub time: DateTime<Utc>,
}

pub fn object_key(k: &KeyParts) -> String {
    let file = format!(
        "{}_pid-{}_{}.{}.{}",
        k.time.format("%Y%m%dT%H%M%S%.3fZ"),
        k.pid,
        k.level,
        k.kind,
        k.extension
    );
    let mut parts: Vec<String> = k
        .prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .map(segment)
        .collect();
    parts.extend([
        segment(&k.place.namespace),
        segment(&k.place.pod),
        segment(k.name),
        file,
    ]);
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn parts<'a>(place: &'a Place, name: &'a str, percent: f64) -> KeyParts<'a> {
        KeyParts {
            prefix: "memprof",
            place,
            name,
            pid: 4242,
            level: Level::Percent(percent),
            kind: "heap",
            extension: "pb.gz",
            time: Utc.with_ymd_and_hms(2026, 11, 25, 3, 4, 5).unwrap(),
        }
    }

    #[test]
    fn key_names_pid_and_percent() {
        let place = Place {
            namespace: "shop".into(),
            pod: "cart-7d9f".into(),
        };
        assert_eq!(
            object_key(&parts(&place, "cart", 83.9)),
            "memprof/shop/cart-7d9f/cart/20261125T030405.000Z_pid-4242_83pct.heap.pb.gz"
        );
    }

    #[test]
    fn at_kill_keys_say_oom() {
        let place = Place {
            namespace: "shop".into(),
            pod: "cart-7d9f".into(),
        };
        let mut p = parts(&place, "cart", 0.0);
        p.level = Level::Oom;
        assert!(object_key(&p).ends_with("_pid-4242_oom.heap.pb.gz"));
    }

    #[test]
    fn absolute_levels_name_their_size() {
        assert_eq!(Level::Bytes(3 << 29).to_string(), "1536MiB");
        assert_eq!(Level::Bytes(2 << 30).to_string(), "2GiB");
        assert_eq!(Level::Container(91.7).to_string(), "container-91pct");
    }

    #[test]
    fn hostile_names_are_cleaned() {
        let place = Place {
            namespace: "..".into(),
            pod: "a/b".into(),
        };
        let key = object_key(&parts(&place, "kworker/0:1 x", 100.0));
        assert_eq!(
            key,
            "memprof/_/a_b/kworker_0_1_x/20261125T030405.000Z_pid-4242_100pct.heap.pb.gz"
        );
    }

    #[test]
    fn nested_prefix_is_kept() {
        let place = Place {
            namespace: "ns".into(),
            pod: "p".into(),
        };
        let mut p = parts(&place, "c", 80.0);
        p.prefix = "team/memprof";
        assert!(object_key(&p).starts_with("team/memprof/ns/p/c/"));
    }
}
