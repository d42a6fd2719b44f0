//! What a report is about: the objects memprof stored, grouped into incidents — one process's
//! series of captures (threshold profiles, the at-kill profile, the OOM record), named by
//! their keys (`namespace/pod/container/<time>_pid-<pid>_<level>.<kind>.<ext>`) — and narrowed
//! to what was asked for.
use chrono::{DateTime, NaiveDateTime, Utc};

/// One stored object, from its key.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub key: String,
    /// What comes before the namespace (`MEMPROF_KEY_PREFIX`: one cluster's, another's).
    pub prefix: String,
    pub namespace: String,
    pub pod: String,
    /// The container's name, or the command's.
    pub name: String,
    pub time: DateTime<Utc>,
    pub pid: u32,
    /// `80pct`, `oom`, `container-90pct`, `512MiB`, `manual`.
    pub level: String,
    /// `heap`, `heap-memory`, `record`, `snapshot`.
    pub kind: String,
    pub extension: String,
}

impl Object {
    /// The object a key names; `None` for keys that are not memprof's.
    pub fn parse(key: &str) -> Option<Object> {
        let mut parts = key.rsplit('/');
        let file = parts.next()?;
        let name = parts.next()?;
        let pod = parts.next()?;
        let namespace = parts.next()?;
        let mut prefix: Vec<&str> = parts.collect();
        prefix.reverse();
        let prefix = prefix.join("/");
        let (time, rest) = file.split_once("_pid-")?;
        let time = NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S%.3fZ")
            .ok()?
            .and_utc();
        let (pid, rest) = rest.split_once('_')?;
        let mut dots = rest.splitn(3, '.');
        let (level, kind, extension) = (dots.next()?, dots.next()?, dots.next()?);
        Some(Object {
            key: key.to_string(),
            prefix,
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            name: name.to_string(),
            time,
            pid: pid.parse().ok()?,
            level: level.to_string(),
            kind: kind.to_string(),
            extension: extension.to_string(),
        })
    }

    /// A Go heap profile (pprof).
    pub fn is_heap(&self) -> bool {
        self.kind.starts_with("heap") && self.extension == "pb.gz"
    }

    pub fn is_record(&self) -> bool {
        self.kind == "record" && self.extension == "json"
    }
}

/// What to report on.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// A PID, or a container's or command's name.
    pub process: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Selection {
    fn admits(&self, o: &Object) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == o.namespace)
            && self.pod.as_ref().is_none_or(|p| *p == o.pod)
            && self
                .process
                .as_ref()
                .is_none_or(|p| *p == o.name || *p == o.pid.to_string())
            && self.since.is_none_or(|t| o.time >= t)
            && self.until.is_none_or(|t| o.time <= t)
    }
}

/// A process's captures: its threshold profiles in time order, ending with its kill when
/// there was one.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub objects: Vec<Object>,
}

impl Series {
    pub fn record(&self) -> Option<&Object> {
        self.objects.iter().find(|o| o.is_record())
    }

    pub fn first(&self) -> &Object {
        &self.objects[0]
    }

    pub fn last(&self) -> &Object {
        self.objects.last().expect("a series has objects")
    }

    /// Its heap profiles, in time order.
    pub fn heaps(&self) -> impl Iterator<Item = &Object> {
        self.objects.iter().filter(|o| o.is_heap())
    }
}

/// A process's series starts again after this long without a capture (a PID reused, a
/// process that came back near its limit a day later).
const GAP: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Evidence of a kill stored after its record (an at-kill profile that came late) is the
/// record's series' within this.
const LATE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The selected objects grouped into series, newest last. A record closes its series: the
/// next capture of the same PID starts another.
pub fn series(keys: &[String], selection: &Selection) -> Vec<Series> {
    let mut objects: Vec<Object> = keys
        .iter()
        .filter_map(|k| Object::parse(k))
        .filter(|o| selection.admits(o))
        .collect();
    fn who(o: &Object) -> (&str, &str, &str, &str, u32) {
        (&o.prefix, &o.namespace, &o.pod, &o.name, o.pid)
    }
    objects.sort_by(|a, b| (who(a), a.time, a.is_record()).cmp(&(who(b), b.time, b.is_record())));
    let mut out: Vec<Series> = Vec::new();
    for o in objects {
        let joins = out.last().is_some_and(|s| {
            let last = s.last();
            let open = s.record().is_none() && o.time - last.time < GAP;
            let late = s.record().is_some()
                && o.level == "oom"
                && !o.is_record()
                && o.time - last.time < LATE;
            who(last) == who(&o) && (open || late)
        });
        match out.last_mut() {
            Some(s) if joins => s.objects.push(o),
            _ => out.push(Series { objects: vec![o] }),
        }
    }
    out.sort_by_key(|s| s.last().time);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 8] = [
        "memprof/shop/cart-1/app/20261205T181555.650Z_pid-20_80pct.heap.pb.gz",
        "other-cluster/shop/cart-1/app/20261205T181555.700Z_pid-20_80pct.heap.pb.gz",
        "memprof/shop/cart-1/app/20261205T181557.200Z_pid-20_oom.heap.pb.gz",
        "memprof/shop/cart-1/app/20261205T181556.100Z_pid-20_90pct.heap.pb.gz",
        "memprof/shop/cart-1/app/20261205T181557.054Z_pid-20_oom.heap.pb.gz",
        "memprof/shop/cart-1/app/20261205T181557.102Z_pid-20_oom.record.json",
        "memprof/shop/cart-1/app/20261205T181600.000Z_pid-20_80pct.heap.pb.gz",
        "memprof/web/front-2/nginx/20261205T120000.000Z_pid-9_container-90pct.snapshot.txt",
    ];

    #[test]
    fn keys_become_series_closed_by_their_record() {
        let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        let all = series(&keys, &Selection::default());
        assert_eq!(all.len(), 4, "{all:#?}");
        assert_eq!(all[0].first().pod, "front-2");
        assert_eq!(
            all[1].first().prefix,
            "other-cluster",
            "another prefix, another series"
        );
        let killed = &all[2];
        assert_eq!(
            killed.heaps().count(),
            4,
            "a late at-kill profile joins its record"
        );
        assert_eq!(killed.record().unwrap().level, "oom");
        assert_eq!(killed.first().level, "80pct");
        assert_eq!(all[3].objects.len(), 1, "after the record, a new series");
        let shop = Selection {
            namespace: Some("shop".into()),
            process: Some("20".into()),
            ..Default::default()
        };
        assert_eq!(series(&keys, &shop).len(), 3);
        assert!(Object::parse("memprof/x/notes.txt").is_none());
        assert!(Object::parse("a/b/c/20261205T181557.102Z_pid-x_oom.record.json").is_none());
    }
}
