//! Who is this process, in Kubernetes terms — without the API server. The pod UID and
//! container ID come from its cgroup path (kubelet's `kubepods` hierarchy, with the systemd or
//! cgroupfs driver, under containerd, CRI-O or Docker, cgroup v1 or v2); the namespace and pod
//! name from the kubelet's log tree `/var/log/pods/<namespace>_<pod>_<uid>/<container>/`, which
//! every runtime has; the container's name from the termination-message file the kubelet
//! mounts into each container (`/var/lib/kubelet/pods/<uid>/containers/<name>/<id>`, visible
//! in the process's mountinfo), or the tree when the pod has one container.
use std::path::{Path, PathBuf};

/// What memprof knows of a process's place in Kubernetes; all empty outside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    pub container_id: Option<String>,
}

impl Identity {
    /// `namespace/pod/container` for log lines, `-` where unknown; `host` outside Kubernetes.
    pub fn describe(&self) -> String {
        if self == &Identity::default() {
            return "host".into();
        }
        let part = |p: &Option<String>| p.clone().unwrap_or_else(|| "-".into());
        format!(
            "{}/{}/{}",
            part(&self.namespace),
            part(&self.pod),
            part(&self.container)
        )
    }
}

/// Pod UID and container ID from `/proc/PID/cgroup` (the memory controller's line on v1, the
/// unified line on v2; any line that names a pod otherwise).
pub fn from_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let paths: Vec<(bool, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let preferred = controllers.is_empty() || controllers.split(',').any(|c| c == "memory");
            Some((preferred, path))
        })
        .collect();
    let ordered = paths
        .iter()
        .filter(|(p, _)| *p)
        .chain(paths.iter().filter(|(p, _)| !*p));
    for (_, path) in ordered {
        let found = from_cgroup_path(path);
        if found.0.is_some() {
            return found;
        }
    }
    (None, None)
}

/// Pod UID and container ID from one cgroup path. Paths seen through a cgroup namespace may
/// start with `/..`; components are judged one by one. The first pod component and the first
/// container after it count: what follows is below the container, where a process with a
/// cgroup namespace of its own may make cgroups named like another pod's.
pub fn from_cgroup_path(path: &str) -> (Option<String>, Option<String>) {
    let mut uid = None;
    let mut container = None;
    for part in path.split('/') {
        if uid.is_none() {
            uid = pod_uid(part);
        } else if container.is_none() {
            container = container_id(part);
        }
    }
    // containerd under systemd without kubelet's slices: `…pod<uid>.slice:cri-containerd:<id>`.
    if uid.is_none() {
        if let Some(last) = path.rsplit('/').next() {
            let mut f = last.split(':');
            if let (Some(slice), Some(_), Some(id)) = (f.next(), f.next(), f.next()) {
                uid = pod_uid(slice);
                container = uid.as_ref().and_then(|_| container_id(id));
            }
        }
    }
    (uid, container)
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid with _>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let raw = match part.strip_prefix("pod") {
        Some(raw) => raw,
        // kind nests them as `kubelet-kubepods-…`.
        None if part.contains("kubepods-") => &part[part.rfind("-pod")? + 4..],
        None => return None,
    };
    let uid = raw.replace('_', "-");
    let hexish = uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    // A UUID, or the 32-hex hash of a static pod's mirror.
    (hexish && (uid.len() == 36 || (uid.len() == 32 && !uid.contains('-')))).then_some(uid)
}

/// A 64-hex container ID, bare (cgroupfs) or wrapped by the runtime
/// (`cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, `crio-<id>`).
/// CRI-O's monitor (`crio-conmon-<id>`) is not the container.
fn container_id(part: &str) -> Option<String> {
    let part = part.strip_suffix(".scope").unwrap_or(part);
    if part.contains("conmon") {
        return None;
    }
    let id = part.rsplit(['-', ':']).next()?;
    (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
}

/// The container's name from the kubelet's termination-message mount in the process's
/// mountinfo: a mount whose root is `…/pods/<uid>/containers/<name>/<id>`. Also gives the pod
/// UID when the cgroup path did not (a cgroup namespace hides it).
pub fn from_mountinfo(text: &str, uid: Option<&str>) -> Option<(String, String)> {
    text.lines().find_map(|line| {
        let root = line.split_whitespace().nth(3)?;
        let (_, rest) = root.split_once("/pods/")?;
        let mut parts = rest.split('/');
        let (found_uid, dir, name) = (parts.next()?, parts.next()?, parts.next()?);
        let fits =
            uid.is_none_or(|u| u == found_uid) && pod_uid(&format!("pod{found_uid}")).is_some();
        (dir == "containers" && fits && !name.is_empty())
            .then(|| (found_uid.to_string(), name.to_string()))
    })
}

/// The kubelet's pod log tree (`/var/log/pods` on the node, a read-only hostPath here).
#[derive(Clone, Debug)]
pub struct PodsTree {
    root: PathBuf,
}

impl PodsTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Namespace, pod name and container names of the pod with `uid`: the directory
    /// `<namespace>_<pod>_<uid>` (neither name can contain `_`), its subdirectories.
    pub fn pod(&self, uid: &str) -> Option<(String, String, Vec<String>)> {
        let suffix = format!("_{uid}");
        let dir = std::fs::read_dir(&self.root)
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))?;
        let name = dir.file_name().to_string_lossy().into_owned();
        let (namespace, rest) = name.split_once('_')?;
        let pod = rest.strip_suffix(&suffix)?;
        Some((namespace.into(), pod.into(), subdirs(&dir.path())))
    }
}

fn subdirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Puts the pieces together for one process: its `/proc/PID/cgroup` and mountinfo, and the
/// pods tree when memprof has one.
pub fn resolve(proc_cgroup: &str, mountinfo: &str, tree: Option<&PodsTree>) -> Identity {
    let (mut pod_uid, container_id) = from_proc_cgroup(proc_cgroup);
    let mounted = from_mountinfo(mountinfo, pod_uid.as_deref());
    if pod_uid.is_none() {
        pod_uid = mounted.as_ref().map(|(uid, _)| uid.clone());
    }
    let mut id = Identity {
        pod_uid,
        container_id,
        container: mounted.map(|(_, name)| name),
        ..Identity::default()
    };
    if let (Some(uid), Some(tree)) = (&id.pod_uid, tree) {
        if let Some((namespace, pod, containers)) = tree.pod(uid) {
            id.namespace = Some(namespace);
            id.pod = Some(pod);
            if id.container.is_none() && containers.len() == 1 {
                id.container = containers.into_iter().next();
            }
        }
    }
    id
}

#[cfg(test)]
mod tests;
