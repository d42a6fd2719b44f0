//! The manifest stage of `cargo xtask test` (alone: `cargo xtask manifests`): renders every
//! overlay under `deploy/overlays` with `kubectl kustomize` and validates every object it
//! renders with `kubernetes-validate --strict` against one pinned Kubernetes version, so a
//! field misspelt or misplaced in a manifest fails the run with the object it is in.
//!
//! The strict schemas only know Kubernetes' own kinds. An object of another kind (the
//! optional PodMonitor of `deploy/components/podmonitor`) is only warned about by
//! `kubernetes-validate`: in the default renders that is a failure here. Each component under
//! `deploy/components` is rendered onto each overlay as well, where the kinds in
//! `CUSTOM_KINDS` are allowed unvalidated and checked here instead for what the schema cannot
//! say (their selector and port match the memprof pods).
//!
//! Besides the schemas, every `memprof` container rendered must have come through
//! `deploy/base` (image, metrics port, probes): a workload without the label the component
//! selects would render without them and still pass the schemas, which require no image.
//!
//! The submodules: `renders` (what is rendered: each overlay, each component onto each),
//! `validate` (one render through `kubectl kustomize` and `kubernetes-validate`), `pods`
//! (what the schemas cannot check: the memprof containers, a PodMonitor's selector and port).
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use crate::setup;

mod pods;
mod renders;
mod validate;

/// The Kubernetes version the objects are validated against: the newest the pinned
/// `kubernetes-validate` knows.
const KUBERNETES_VERSION: &str = "1.37.0";

/// Kinds a component may add that Kubernetes' schemas do not know: `(apiVersion, kind)`.
const CUSTOM_KINDS: &[(&str, &str)] = &[("monitoring.coreos.com/v1", "PodMonitor")];

/// Runs the stage and returns what failed (empty: every object of every render validated).
/// A tool that is missing skips the stage with a note, except under `CI=true`, where it is a
/// failure.
pub fn check() -> Vec<String> {
    eprintln!("\nxtask: the manifest stage (deploy/overlays, validated against Kubernetes {KUBERNETES_VERSION})");
    if let Some(missing) = missing_tool() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            return vec![format!(
                "manifests: {missing} (cargo xtask setup installs it)"
            )];
        }
        eprintln!("xtask: manifest stage skipped: {missing} (cargo xtask setup installs it)");
        return Vec::new();
    }
    match renders::run() {
        Ok(failed) => failed,
        Err(e) => vec![format!("manifests: {e:#}")],
    }
}

/// `cargo xtask manifests`: the stage alone, failing on any failure (a missing tool too).
pub fn command() -> Result<()> {
    if let Some(missing) = missing_tool() {
        bail!("{missing} (cargo xtask setup installs it)");
    }
    let failed = renders::run()?;
    if failed.is_empty() {
        return Ok(());
    }
    for f in &failed {
        eprintln!("  {f}");
    }
    bail!("{} failed (listed above)", failed.len())
}

fn missing_tool() -> Option<String> {
    let kubectl = setup::kubectl_bin();
    let runs = Command::new(&kubectl)
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        return Some(format!("no kubectl at {}", kubectl.display()));
    }
    if !setup::kubernetes_validate_works() {
        return Some(format!(
            "no kubernetes-validate {} in {}",
            setup::KUBERNETES_VALIDATE,
            setup::kubernetes_validate_dir().display()
        ));
    }
    None
}
