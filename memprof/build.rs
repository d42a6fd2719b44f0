//! Builds the kernel programs (`memprof-ebpf`) with the nightly toolchain and bpf-linker, so
//! that `cargo build` embeds the BPF object. `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
    // AYA_BUILD_SKIP=1 (aya-build's own switch; `cargo xtask test` sets it for clippy, whose
    // check build runs this script apart from the real build's): an empty object, which a
    // type check needs and a real build must not ship, so the programs are not built twice.
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("memprof-ebpf");
        std::fs::write(out, [])?;
        return Ok(());
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../memprof-ebpf");
    println!("cargo:rerun-if-changed={root}/src");
    println!("cargo:rerun-if-changed=../memprof-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "memprof-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
