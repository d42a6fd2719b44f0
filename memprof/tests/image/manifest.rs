//! The capabilities the sidecar manifest gives memprof, read from `deploy/`, as the test grants
//! them to memprof's container.
use std::path::PathBuf;

use crate::common::workspace_root;

/// The capabilities the sidecar manifest adds, as podman spells them (`BPF,PERFMON,…`): from
/// `deploy/overlays/sidecar/` where the manifests are a kustomize base with overlays, else
/// `deploy/sidecar/`; `add: [A, B]` or a block list.
pub(super) fn sidecar_capabilities() -> String {
    for dir in ["deploy/overlays/sidecar", "deploy/sidecar"] {
        let Ok(entries) = std::fs::read_dir(workspace_root().join(dir)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let yaml = std::fs::read_to_string(&file).unwrap();
            if let Some(caps) = capabilities_added(&yaml) {
                return caps.join(",");
            }
        }
    }
    panic!("no `capabilities: add:` in deploy/overlays/sidecar or deploy/sidecar");
}

/// The list under the first `capabilities:` … `add:` of a manifest.
pub(super) fn capabilities_added(yaml: &str) -> Option<Vec<String>> {
    let mut lines = yaml
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .skip_while(|l| l.trim() != "capabilities:")
        .skip(1)
        .skip_while(|l| !l.trim_start().starts_with("add:"));
    let add = lines.next()?.trim_start().strip_prefix("add:")?.trim();
    let caps: Vec<String> = match add.strip_prefix('[') {
        Some(flow) => flow
            .trim_end_matches(']')
            .split(',')
            .map(|c| c.trim().to_string())
            .collect(),
        None => lines
            .map_while(|l| l.trim().strip_prefix("- ").map(|c| c.trim().to_string()))
            .collect(),
    };
    Some(caps.into_iter().filter(|c| !c.is_empty()).collect())
}
