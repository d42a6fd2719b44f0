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
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{setup, workspace_root};

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
    match run() {
        Ok(failed) => failed,
        Err(e) => vec![format!("manifests: {e:#}")],
    }
}

/// `cargo xtask manifests`: the stage alone, failing on any failure (a missing tool too).
pub fn command() -> Result<()> {
    if let Some(missing) = missing_tool() {
        bail!("{missing} (cargo xtask setup installs it)");
    }
    let failed = run()?;
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

/// One render: a kustomization directory, relative to the workspace root.
struct Render {
    name: String,
    dir: PathBuf,
    /// Whether `CUSTOM_KINDS` may appear in it.
    custom: bool,
}

fn run() -> Result<Vec<String>> {
    let root = workspace_root();
    let overlays = kustomizations(&root.join("deploy/overlays"))?;
    if overlays.is_empty() {
        bail!("no overlay under deploy/overlays");
    }
    let components = kustomizations(&root.join("deploy/components"))?;
    let scratch = root.join("target/manifests");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let mut renders: Vec<Render> = overlays
        .iter()
        .map(|o| Render {
            name: o.clone(),
            dir: Path::new("deploy/overlays").join(o),
            custom: false,
        })
        .collect();
    // Each component onto each overlay, through a kustomization of its own (kustomize takes
    // relative paths only: target/manifests/<overlay>+<component>/ is three levels down).
    for overlay in &overlays {
        for component in &components {
            let name = format!("{overlay}+{component}");
            let dir = Path::new("target/manifests").join(&name);
            std::fs::create_dir_all(root.join(&dir))?;
            std::fs::write(
                root.join(&dir).join("kustomization.yaml"),
                format!(
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                     resources:\n  - ../../../deploy/overlays/{overlay}\n\
                     components:\n  - ../../../deploy/components/{component}\n"
                ),
            )?;
            renders.push(Render {
                name,
                dir,
                custom: true,
            });
        }
    }
    let mut failed = Vec::new();
    for render in &renders {
        match check_render(render, &scratch) {
            Ok(mut f) => failed.append(&mut f),
            Err(e) => failed.push(format!("manifests: {}: {e:#}", render.name)),
        }
    }
    if failed.is_empty() {
        eprintln!(
            "xtask: manifests: {} renders, every object valid",
            renders.len()
        );
    }
    Ok(failed)
}

/// The directories under `dir` that hold a `kustomization.yaml`, sorted.
fn kustomizations(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.join("kustomization.yaml").is_file() {
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn check_render(render: &Render, scratch: &Path) -> Result<Vec<String>> {
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

/// The pod template of a workload, if the object is one.
fn pod_template(o: &Value) -> Option<&Value> {
    let t = &o["spec"]["template"];
    t.is_object().then_some(t)
}

/// What `deploy/base` gives every `memprof` container.
fn memprof_containers(objects: &[Value]) -> Vec<String> {
    let mut failed = Vec::new();
    let mut found = 0;
    for o in objects {
        let Some(template) = pod_template(o) else {
            continue;
        };
        let containers = template["spec"]["containers"].as_array();
        for c in containers.into_iter().flatten() {
            if c["name"] != "memprof" {
                continue;
            }
            found += 1;
            let workload = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            );
            let port = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "metrics" && p["containerPort"] == 9400);
            let probe = |kind: &str, path: &str| c[kind]["httpGet"]["path"] == path;
            let missing: Vec<&str> = [
                ("image", c["image"].is_string()),
                ("metrics port 9400", port),
                (
                    "liveness probe /healthz",
                    probe("livenessProbe", "/healthz"),
                ),
                (
                    "readiness probe /readyz",
                    probe("readinessProbe", "/readyz"),
                ),
                (
                    "prometheus.io/scrape annotation",
                    template["metadata"]["annotations"]["prometheus.io/scrape"] == "true",
                ),
            ]
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(what, _)| what)
            .collect();
            if !missing.is_empty() {
                let hint = match missing.contains(&"image") {
                    true => {
                        " (deploy/base patches only workloads labelled memprof/enabled: \"true\")"
                    }
                    false => "",
                };
                failed.push(format!(
                    "{workload}: its memprof container lacks {}{hint}",
                    missing.join(", ")
                ));
            }
        }
    }
    if found == 0 {
        failed.push("no memprof container rendered".into());
    }
    failed
}

/// What the schemas cannot check of a PodMonitor: that it selects a memprof pod of the render
/// and scrapes a port that pod names.
fn custom_objects(objects: &[Value]) -> Vec<String> {
    let mut failed = Vec::new();
    for monitor in objects.iter().filter(|o| o["kind"] == "PodMonitor") {
        let name = monitor["metadata"]["name"].as_str().unwrap_or("?");
        let Some(labels) = monitor["spec"]["selector"]["matchLabels"].as_object() else {
            failed.push(format!("PodMonitor/{name}: no spec.selector.matchLabels"));
            continue;
        };
        let selected: Vec<&Value> = objects
            .iter()
            .filter_map(pod_template)
            .filter(|t| {
                labels
                    .iter()
                    .all(|(k, v)| t["metadata"]["labels"][k.as_str()] == *v)
            })
            .collect();
        if selected.is_empty() {
            failed.push(format!("PodMonitor/{name}: selects no pod of the render"));
        }
        let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array();
        if endpoints.is_none_or(|e| e.is_empty()) {
            failed.push(format!("PodMonitor/{name}: no podMetricsEndpoints"));
        }
        for endpoint in endpoints.into_iter().flatten() {
            let port = &endpoint["port"];
            let named = |t: &&Value| {
                t["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                    .any(|p| p["name"] == *port)
            };
            if !selected.iter().all(named) {
                failed.push(format!(
                    "PodMonitor/{name}: port {port} is not named by every pod it selects"
                ));
            }
        }
    }
    failed
}
