//! What the probes answer. Alive: the daemon's loop turned within `STALLED` (it beats every
//! `BEAT_EVERY`; a loop held that long misses every kernel event meanwhile, and restarting is the
//! cure), or start-up is still within `STARTING`. Ready: a detector is running and the spool,
//! where every profile first lands, takes a file.
use std::{
    fs::OpenOptions,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        LazyLock, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

/// How long the loop may go without a beat before memprof counts as stuck.
pub const STALLED: Duration = Duration::from_secs(10);
/// How often the loop beats: often enough that a loop turning never looks stalled, seldom
/// enough that the beat is not a share of memprof's idle CPU (each is a wakeup).
pub const BEAT_EVERY: Duration = Duration::from_millis(2500);
/// How long start-up may take (waiting for the node's shared programs, loading the kernel's,
/// the first credentials) before memprof counts as stuck in it.
const STARTING: Duration = Duration::from_secs(120);
/// How long a spool check answers for: probes and scrapers asking at once share one.
const SPOOL_CHECKED_FOR: Duration = Duration::from_secs(2);

static START: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Milliseconds after `START` of the loop's last beat; 0 until its first.
static BEAT_MS: AtomicU64 = AtomicU64::new(0);
/// The detector running (its name), or why none is.
static DETECTOR: Mutex<Result<String, String>> = Mutex::new(Err(String::new()));
static SPOOL: OnceLock<PathBuf> = OnceLock::new();
/// The last spool check: when, and what it found.
static SPOOL_STATE: Mutex<Option<(Instant, Result<(), String>)>> = Mutex::new(None);

/// Starts the clocks: called when the server starts, before anything else.
pub fn starting() {
    LazyLock::force(&START);
}

/// The daemon's loop turned.
pub fn beat() {
    let ms = START.elapsed().as_millis() as u64;
    BEAT_MS.store(ms.max(1), Ordering::Relaxed);
}

/// The detector is running (its name, for the probe's answer).
pub fn detector_running(name: &str) {
    *DETECTOR.lock().expect("health lock") = Ok(name.to_string());
}

/// The detector stopped, and why: memprof is left with the safety-net poll.
pub fn detector_stopped(why: &str) {
    *DETECTOR.lock().expect("health lock") = Err(why.to_string());
}

/// The spool is open at `dir`.
pub fn spool_open(dir: &Path) {
    let _ = SPOOL.set(dir.to_path_buf());
}

/// Whether alive, and why not.
pub fn alive() -> Result<String, String> {
    let beat = BEAT_MS.load(Ordering::Relaxed);
    if beat == 0 {
        return match START.elapsed() {
            t if t > STARTING => Err(format!("start-up has not finished in {t:.0?}")),
            _ => Ok("starting".into()),
        };
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

/// Whether ready, and what is missing. Blocking: it may write to the spool's volume.
pub fn ready() -> Result<String, String> {
    let detector = match &*DETECTOR.lock().expect("health lock") {
        Ok(name) => name.clone(),
        Err(why) if why.is_empty() => return Err("no detector running yet".into()),
        Err(why) => return Err(why.clone()),
    };
    let spool = SPOOL.get().ok_or("the spool is not open yet")?;
    spool_takes_a_file(spool)?;
    Ok(format!(
        "detector: {detector}\nspool: writable {}",
        spool.display()
    ))
}

/// Creates and removes a probe file (never following a link, never truncating another's
/// file): a read-only or broken volume fails here, as a profile's spooling would. One check
/// at a time, answering for `SPOOL_CHECKED_FOR`; a change is logged once, not per probe.
fn spool_takes_a_file(dir: &Path) -> Result<(), String> {
    let mut state = SPOOL_STATE.lock().expect("health lock");
    if let Some((at, result)) = &*state {
        if at.elapsed() < SPOOL_CHECKED_FOR {
            return result.clone();
        }
    }
    let probe = dir.join(".readyz");
    // A probe file a crash left behind.
    let _ = std::fs::remove_file(&probe);
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| format!("the spool {} takes no file: {e}", dir.display()));
    let was_ok = state.as_ref().is_none_or(|(_, r)| r.is_ok());
    match &result {
        Ok(()) if !was_ok => tracing::info!("the spool takes files again: ready"),
        Err(e) if was_ok => tracing::warn!("not ready: {e}"),
        _ => {}
    }
    *state = Some((Instant::now(), result.clone()));
    result
}
