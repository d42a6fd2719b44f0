//! `cargo xtask image [--profile P]`: memprof's container image, `FROM scratch` (Dockerfile).
//! No registry is needed: the static (musl) binary is built here, staged with the CA bundle and
//! the Dockerfile in a build context (`target/image/context`), and `podman build` copies them
//! in. A release build is tagged `localhost/memprof:<version>` and `localhost/memprof:latest`;
//! another profile (the tests use `dev`, which builds faster) only `localhost/memprof:<version>-<P>`.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

use crate::{cargo, setup, sh, workspace_root};

pub const MUSL: &str = "x86_64-unknown-linux-musl";
/// The bundle Debian's `ca-certificates` maintains; copied to the same path in the image.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub fn run(args: &[String]) -> Result<()> {
    let mut profile = "release".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--profile" => profile = it.next().context("--profile needs a name")?.clone(),
            other => bail!("xtask image: unknown argument {other:?} (only --profile P)"),
        }
    }
    setup::build_prerequisites()?;
    setup::image_tools()?;
    let tags = build(&profile)?;
    println!("{}", tags.join("\n"));
    Ok(())
}

/// Builds the binary with `profile`, stages the context and builds the image; its tags.
pub fn build(profile: &str) -> Result<Vec<String>> {
    let bin = build_binary(profile)?;
    let context = stage(&bin)?;
    let version = memprof_version()?;
    let tags = match profile {
        "release" => vec![
            format!("localhost/memprof:{version}"),
            "localhost/memprof:latest".to_string(),
        ],
        other => vec![format!("localhost/memprof:{version}-{other}")],
    };
    // The image the first tag names now, left untagged by the build: removed after it.
    let replaced = output(podman().args(["image", "inspect", "--format", "{{.Id}}", &tags[0]]))
        .map(|id| id.trim().to_string())
        .ok();
    let mut cmd = podman();
    cmd.arg("build");
    for tag in &tags {
        cmd.args(["--tag", tag]);
    }
    sh(cmd
        .arg("--file")
        .arg(context.join("Dockerfile"))
        .arg(&context))?;
    let built = output(podman().args(["image", "inspect", "--format", "{{.Id}}", &tags[0]]))?;
    if let Some(old) = replaced.filter(|old| *old != built.trim()) {
        // Still tagged elsewhere or used by a container: then it stays.
        let _ = podman()
            .args(["rmi", &old])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let size = output(podman().args(["image", "inspect", "--format", "{{.Size}}", &tags[0]]))?;
    eprintln!(
        "xtask image: {} ({} MB; binary {} MB)",
        tags.join(", "),
        size.trim().parse::<u64>().unwrap_or(0) / 1_000_000,
        std::fs::metadata(&bin)?.len() / 1_000_000
    );
    Ok(tags)
}

/// `podman` as this machine runs it: runc (crun refuses a cgroup v1/hybrid setup) and, where
/// systemd does not run, the cgroupfs cgroup manager.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]);
    if !Path::new("/run/systemd/system").is_dir() {
        cmd.args(["--cgroup-manager", "cgroupfs"]);
    }
    cmd
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The static binary, built for musl with `profile` (its BPF programs embedded by the build
/// script, as in every build).
fn build_binary(profile: &str) -> Result<PathBuf> {
    sh(cargo()
        .args(["build", "--locked", "-p", "memprof", "--target", MUSL])
        .args(["--profile", profile])
        // A type-check stand-in would build an image without kernel programs.
        .env_remove("MEMPROF_CHECK_ONLY")
        .current_dir(workspace_root()))?;
    let dir = match profile {
        "dev" | "test" => "debug",
        "release" | "bench" => "release",
        other => other,
    };
    let bin = target_dir().join(MUSL).join(dir).join("memprof");
    ensure!(
        is_static(&bin)?,
        "{} asks for a dynamic loader, which a scratch image has not",
        bin.display()
    );
    Ok(bin)
}

/// The build context: the Dockerfile, the binary, the CA bundle and the empty directory the
/// image's `/var/lib/memprof` is made from (`var-lib/memprof`, mode 1777). Nothing else is
/// sent to podman.
fn stage(bin: &Path) -> Result<PathBuf> {
    let context = target_dir().join("image/context");
    if context.exists() {
        std::fs::remove_dir_all(&context)?;
    }
    // Writable by both users memprof runs as: the image's own (65532) and uid 0 with every
    // capability but the manifests' dropped (no CAP_DAC_OVERRIDE), when no volume is mounted.
    let state = context.join("var-lib/memprof");
    std::fs::create_dir_all(&state)?;
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
    std::fs::copy(
        workspace_root().join("Dockerfile"),
        context.join("Dockerfile"),
    )?;
    for ignore in [".dockerignore", "Dockerfile.dockerignore"] {
        let _ = std::fs::copy(workspace_root().join(ignore), context.join(ignore));
    }
    std::fs::copy(bin, context.join("memprof"))
        .with_context(|| format!("copying {}", bin.display()))?;
    let bundle = std::fs::read(CA_BUNDLE)
        .with_context(|| format!("{CA_BUNDLE} (Debian's ca-certificates)"))?;
    ensure!(
        bundle
            .windows(27)
            .any(|w| w == b"-----BEGIN CERTIFICATE-----"),
        "{CA_BUNDLE} holds no certificate"
    );
    std::fs::write(context.join("ca-certificates.crt"), bundle)?;
    Ok(context)
}

/// memprof's version, from its Cargo.toml.
fn memprof_version() -> Result<String> {
    let toml = std::fs::read_to_string(workspace_root().join("memprof/Cargo.toml"))?;
    toml.lines()
        .find_map(|l| {
            l.strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_string)
        })
        .context("no version in memprof/Cargo.toml")
}

/// Whether an ELF executable has no `PT_INTERP` (asks for no dynamic loader).
fn is_static(path: &Path) -> Result<bool> {
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        elf.len() >= 64 && elf.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = elf
            .get(at..at + 4)
            .context("program header out of bounds")?;
        if p_type == 3u32.to_le_bytes() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}
