//! Builds the kernel programs (`memprof-ebpf`) with the nightly toolchain and bpf-linker, so
//! that `cargo build` embeds the BPF object. `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
    // MEMPROF_CHECK_ONLY=1 (`cargo xtask test` sets it for clippy, whose check build runs
    // this script apart from the real build's): an empty object, which a type check needs, so
    // the programs are not built twice. Refused for release builds; a debug build made so says
    // at load that it has no kernel programs.
    println!("cargo:rerun-if-env-changed=MEMPROF_CHECK_ONLY");
    if std::env::var("MEMPROF_CHECK_ONLY").is_ok_and(|v| v == "1") {
        if std::env::var("PROFILE").is_ok_and(|p| p == "release") {
            anyhow::bail!("MEMPROF_CHECK_ONLY=1 builds no kernel programs: not for a release");
        }
        println!("cargo:warning=MEMPROF_CHECK_ONLY=1: no kernel programs embedded");
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("memprof-ebpf");
        std::fs::write(out, [])?;
        return Ok(());
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../memprof-ebpf");
    println!("cargo:rerun-if-changed={root}/src");
    println!("cargo:rerun-if-changed=../memprof-common/src");
    println!("cargo:rerun-if-changed={root}/rust-toolchain.toml");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "memprof-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(nightly()),
    )
}

/// The pinned nightly, from memprof-ebpf/rust-toolchain.toml (`cargo xtask setup` installs it).
fn nightly() -> &'static str {
    include_str!("../memprof-ebpf/rust-toolchain.toml")
        .lines()
        .find_map(|l| l.strip_prefix("channel = \"")?.strip_suffix('"'))
        .expect("a channel in memprof-ebpf/rust-toolchain.toml")
}
