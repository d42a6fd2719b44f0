//! Builds the kernel programs (`memprof-ebpf`) with the nightly toolchain and bpf-linker, so
//! that `cargo build` embeds the BPF object. `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
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
