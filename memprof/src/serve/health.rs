//! What the probes answer. Alive: the daemon's loop turned within `STALLED` (it beats every
//! second; a loop held that long misses every kernel event meanwhile, and restarting is the
//! cure). Ready: a detector is running and the spool, where every profile first lands, takes
//! a file.
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        LazyLock, OnceLock,
    },
    time::{Duration, Instant},
};

/// How long the loop may go without a beat before memprof counts as stuck.
pub const STALLED: Duration = Duration::from_secs(10);

static START: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Milliseconds after `START` of the loop's last beat; 0 until its first.
static BEAT_MS: AtomicU64 = AtomicU64::new(0);
static DETECTOR: OnceLock<String> = OnceLock::new();
static SPOOL: OnceLock<PathBuf> = OnceLock::new();
static SPOOL_OK: AtomicBool = AtomicBool::new(false);

/// The daemon's loop turned.
pub fn beat() {
    let ms = START.elapsed().as_millis() as u64;
    BEAT_MS.store(ms.max(1), Ordering::Relaxed);
}

/// The detector is running (its name, for the probe's answer).
pub fn detector_running(name: &str) {
    let _ = DETECTOR.set(name.to_string());
}

/// The spool is open at `dir`.
pub fn spool_open(dir: &Path) {
    let _ = SPOOL.set(dir.to_path_buf());
}

/// Whether alive, and why not.
pub fn alive() -> Result<String, String> {
    let beat = BEAT_MS.load(Ordering::Relaxed);
    if beat == 0 {
        return Ok("starting".into());
    }
    let since = START.elapsed().saturating_sub(Duration::from_millis(beat));
    if since > STALLED {
        return Err(format!(
            "the daemon loop has not turned for {:.1} s",
            since.as_secs_f64()
        ));
    }
    Ok("ok".into())
}

/// Whether ready, and what is missing.
pub fn ready() -> Result<String, String> {
    let detector = DETECTOR.get().ok_or("no detector running yet")?;
    let spool = SPOOL.get().ok_or("the spool is not open yet")?;
    spool_takes_a_file(spool)?;
    Ok(format!(
        "detector: {detector}\nspool: writable {}",
        spool.display()
    ))
}

/// Creates and removes a probe file: a read-only or broken volume fails here, as a profile's
/// spooling would. A failure is logged once per change, not per probe.
fn spool_takes_a_file(dir: &Path) -> Result<(), String> {
    let probe = dir.join(".readyz");
    let result = std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| format!("the spool {} takes no file: {e}", dir.display()));
    if SPOOL_OK.swap(result.is_ok(), Ordering::Relaxed) != result.is_ok() {
        match &result {
            Ok(()) => tracing::info!("the spool takes files again: ready"),
            Err(e) => tracing::warn!("not ready: {e}"),
        }
    }
    result
}
