//! What the manifest stage renders: each overlay under `deploy/overlays`, and each component
//! under `deploy/components` onto each overlay; every render checked in turn.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::validate::check_render;
use crate::workspace_root;

/// One render: a kustomization directory, relative to the workspace root.
pub(super) struct Render {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    /// Whether `CUSTOM_KINDS` may appear in it.
    pub(super) custom: bool,
}

pub(super) fn run() -> Result<Vec<String>> {
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
