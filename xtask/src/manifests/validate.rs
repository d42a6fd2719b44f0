//! One render checked: rendered with `kubectl kustomize`, every object validated with
//! `kubernetes-validate --strict`, then read back (with PyYAML) for the checks of `pods`.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    pods::{custom_objects, memprof_containers},
    renders::Render,
    CUSTOM_KINDS, KUBERNETES_VERSION,
};
use crate::{setup, workspace_root};

pub(super) fn check_render(render: &Render, scratch: &Path) -> Result<Vec<String>> {
    let root = workspace_root();
    let out = Command::new(setup::kubectl_bin())
        .arg("kustomize")
        .arg(&render.dir)
        .current_dir(&root)
        .output()
        .context("starting kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            render.dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let file = scratch.join(format!("{}.yaml", render.name));
    std::fs::write(&file, &out.stdout)?;
    let objects = objects(&file)?;
    let mut failed = Vec::new();
    let name = |o: &Value| {
        format!(
            "{}/{}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["name"].as_str().unwrap_or("?")
        )
    };
    let custom = |o: &Value| {
        CUSTOM_KINDS
            .iter()
            .any(|(api, kind)| o["apiVersion"] == *api && o["kind"] == *kind)
    };
    for o in &objects {
        if custom(o) && !render.custom {
            failed.push(format!(
                "manifests: {}: {} is not a Kubernetes kind: keep it out of the overlays' default render (in a component)",
                render.name,
                name(o)
            ));
        }
    }
    let rel = file.strip_prefix(&root).unwrap_or(&file);
    let validated = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
        ])
        .arg(KUBERNETES_VERSION)
        .arg(rel)
        .env("PYTHONPATH", setup::kubernetes_validate_dir())
        .current_dir(&root)
        .output()
        .context("starting kubernetes-validate")?;
    let stdout = String::from_utf8_lossy(&validated.stdout);
    let mut passed = 0;
    let before = failed.len();
    for line in stdout.lines() {
        let mut note = "";
        if line.starts_with("INFO ") {
            passed += 1;
        } else if render.custom
            && line.starts_with("WARN ")
            && CUSTOM_KINDS.iter().any(|(api, kind)| {
                line.contains(&format!("for kind {kind} with api version {api} "))
            })
        {
            note = " (allowed with a component: its selector and port are checked instead)";
        } else if !line.trim().is_empty() {
            failed.push(format!("manifests: {}: {line}", render.name));
        }
        eprintln!("  {}: {line}{note}", render.name);
    }
    // What the lines above do not already say.
    let said = failed.len() > before;
    let stderr = String::from_utf8_lossy(&validated.stderr);
    if (!validated.status.success() && !said) || !stderr.trim().is_empty() {
        failed.push(format!(
            "manifests: {}: kubernetes-validate exited {}{}",
            render.name,
            validated.status,
            match stderr.trim() {
                "" => String::new(),
                s => format!(": {s}"),
            }
        ));
    }
    let expected = objects.iter().filter(|o| !custom(o)).count();
    if passed != expected && !said {
        failed.push(format!(
            "manifests: {}: {} objects of Kubernetes' kinds rendered, {passed} validated",
            render.name, expected
        ));
    }
    failed.extend(
        memprof_containers(&objects)
            .into_iter()
            .map(|f| format!("manifests: {}: {f}", render.name)),
    );
    failed.extend(
        custom_objects(&objects)
            .into_iter()
            .map(|f| format!("manifests: {}: {f}", render.name)),
    );
    eprintln!(
        "  {}: {} objects ({})",
        render.name,
        objects.len(),
        objects.iter().map(name).collect::<Vec<_>>().join(", ")
    );
    Ok(failed)
}

/// The objects of a rendered file, read with the validator's own YAML parser (PyYAML,
/// beside it), as JSON.
fn objects(file: &Path) -> Result<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(file)
        .env("PYTHONPATH", setup::kubernetes_validate_dir())
        .output()
        .context("starting python3")?;
    if !out.status.success() {
        bail!(
            "reading {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
