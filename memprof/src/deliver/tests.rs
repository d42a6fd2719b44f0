//! The deliverer against a local destination that fails on purpose.
use super::*;

const UNBOUNDED: Limits = Limits {
    max_bytes: u64::MAX,
    max_objects: usize::MAX,
    keep: bounds::Keep::Newest,
};

/// A profile whose destination fails stays in the spool and is stored by the next flush, its
/// metadata beside it.
#[tokio::test]
async fn failed_delivery_is_kept_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    // A file where the destination directory should be makes every store fail.
    std::fs::write(&dest, b"not a directory").unwrap();
    let d = Deliverer::new(
        Spool::open(&dir.path().join("spool")).unwrap(),
        Sink::local(&dest),
        UNBOUNDED,
    );
    let key = "memprof/ns/pod/app/t_pid-7_91pct.heap.pb.gz";
    let mut meta = Metadata::new();
    meta.set("pid", 7).set("cmdline", "app --leak");
    assert!(d.deliver(key, &meta, b"heap").await.is_err());
    let later = Instant::now() + Duration::from_secs(600);
    assert_eq!(d.flush().await, 0, "not due before its backoff is over");
    assert_eq!(d.flush_due(later).await, 0, "still failing");

    std::fs::remove_file(&dest).unwrap();
    assert_eq!(d.flush().await, 0, "not due yet");
    assert_eq!(d.flush_due(later + Duration::from_secs(600)).await, 1);
    assert_eq!(std::fs::read(dest.join(key)).unwrap(), b"heap");
    let json = std::fs::read(dest.join(format!("{key}.meta.json"))).unwrap();
    assert_eq!(Metadata::from_json(&json), Some(meta));
    assert_eq!(
        d.flush_due(later + Duration::from_secs(1200)).await,
        0,
        "the spool is empty once stored"
    );
}

/// With the spool full, the oldest profile makes room for the newest (the default), or the
/// new one is not spooled (keeping the oldest).
#[tokio::test]
async fn a_full_spool_keeps_what_the_limits_say() {
    for (keep, kept) in [
        (bounds::Keep::Newest, ["b", "c"]),
        (bounds::Keep::Oldest, ["a", "b"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        std::fs::write(&dest, b"not a directory").unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_objects: 2,
            keep,
        };
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let d = Deliverer::new(spool, Sink::local(&dest), limits);
        for key in ["a", "b", "c"] {
            assert!(d
                .deliver(key, &Metadata::new(), key.as_bytes())
                .await
                .is_err());
            // Distinct modification times order the spool.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left: Vec<String> = d
            .spool
            .pending()
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(left, kept, "{keep:?}");
    }
}

/// A spool that cannot be written does not lose the profile: it goes straight to the
/// destination.
#[tokio::test]
async fn an_unwritable_spool_sends_directly() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let spool = Spool::open(&spool_dir).unwrap();
    // A file where the spool directory was makes every spooling fail.
    std::fs::remove_dir(&spool_dir).unwrap();
    std::fs::write(&spool_dir, b"not a directory").unwrap();
    let dest = dir.path().join("dest");
    let d = Deliverer::new(spool, Sink::local(&dest), UNBOUNDED);
    let key = "memprof/ns/pod/app/t_pid-7_91pct.heap.pb.gz";
    d.deliver(key, &Metadata::new(), b"heap").await.unwrap();
    assert_eq!(std::fs::read(dest.join(key)).unwrap(), b"heap");
}

/// A streamed profile: nothing under its entry's name until complete; a failed one leaves
/// nothing; a complete one reaches the destination from the file (when the destination is
/// down, later, by the retry loop); a crash's half-written file is removed at the next open.
#[tokio::test]
async fn streamed_profiles_count_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (spool_dir, dest) = (dir.path().join("spool"), dir.path().join("dest"));
    std::fs::write(&dest, b"not a directory").unwrap();
    let d = Deliverer::new(
        Spool::open(&spool_dir).unwrap(),
        Sink::local(&dest),
        UNBOUNDED,
    );
    let listed = || std::fs::read_dir(&spool_dir).unwrap().count();

    let mut failed = d.begin("k/failed.pb.gz", &Metadata::new()).await.unwrap();
    failed.write(b"half").await.unwrap();
    assert!(d.spool.pending().unwrap().is_empty(), "not an entry yet");
    d.abandon(failed).await;
    assert_eq!(listed(), 0);

    let key = "k/big.pb.gz";
    let mut meta = Metadata::new();
    meta.set("pid", 9);
    let mut big = d.begin(key, &meta).await.unwrap();
    for i in 0..64u8 {
        big.write(&[i; 4096]).await.unwrap();
    }
    assert!(d.finish(big).await.is_err(), "the destination is down");
    let pending = d.spool.pending().unwrap();
    assert_eq!((pending.len(), pending[0].bytes), (1, 64 * 4096));
    std::fs::remove_file(&dest).unwrap();
    let far = Instant::now() + Duration::from_secs(86_400);
    assert_eq!(d.flush_due(far).await, 1);
    let stored = std::fs::read(dest.join(key)).unwrap();
    assert_eq!((stored.len(), stored[4096 * 63]), (64 * 4096, 63));
    assert_eq!(listed(), 0);

    // Another memprof opening this spool (`memprof capture` beside the daemon) leaves an
    // entry being written alone, and removes only what nobody writes.
    let mut live = d.begin("k/live.pb.gz", &Metadata::new()).await.unwrap();
    live.write(b"still coming").await.unwrap();
    std::fs::write(spool_dir.join(".x.spool.partial"), b"cut short").unwrap();
    Spool::open(&spool_dir).unwrap();
    assert_eq!(listed(), 1, "the live one stays");
    d.abandon(live).await;
    assert_eq!(listed(), 0);
}
