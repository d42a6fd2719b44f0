use super::*;

const MIB: u64 = 1 << 20;

fn key(pid: u32) -> ProcKey {
    ProcKey { pid, start: 1 }
}

fn containers() -> Containers {
    let mut c = Containers::new(90, Duration::from_secs(300));
    assert!(c.note("/pod/app", &[], key(1)));
    assert!(!c.note("/pod/app", &[], key(2)));
    c
}

#[test]
fn fires_once_per_crossing_and_re_arms_below_the_hysteresis() {
    let (mut c, t) = (containers(), Instant::now());
    let limit = 100 * MIB;
    assert_eq!(c.observe("/pod/app", 89 * MIB, limit, t), Decision::Below);
    assert!(matches!(
        c.observe("/pod/app", 90 * MIB, limit, t),
        Decision::Capture { percent } if (percent - 90.0).abs() < 1e-9
    ));
    assert!(matches!(
        c.observe("/pod/app", 95 * MIB, limit, t),
        Decision::Hold(_)
    ));
    // Still within 5 points of the level: the crossing stays handled.
    c.observe("/pod/app", 86 * MIB, limit, t);
    assert!(matches!(
        c.observe("/pod/app", 91 * MIB, limit, t),
        Decision::Hold(_)
    ));
    // Well below, then up again: a new crossing, which the cooldown holds once stored.
    c.finished("/pod/app", true, t);
    c.observe("/pod/app", 80 * MIB, limit, t);
    assert_eq!(
        c.observe("/pod/app", 92 * MIB, limit, t + Duration::from_secs(10)),
        Decision::Hold("MEMPROF_COOLDOWN_SECS")
    );
    assert!(matches!(
        c.observe("/pod/app", 92 * MIB, limit, t + Duration::from_secs(301)),
        Decision::Capture { .. }
    ));
}

#[test]
fn a_capture_that_stored_nothing_is_retried_after_a_pause() {
    let (mut c, t) = (containers(), Instant::now());
    assert!(matches!(
        c.observe("/pod/app", 95 * MIB, 100 * MIB, t),
        Decision::Capture { .. }
    ));
    c.finished("/pod/app", false, t);
    assert!(matches!(
        c.observe("/pod/app", 95 * MIB, 100 * MIB, t),
        Decision::Hold(_)
    ));
    let later = t + RETRY_AFTER;
    assert!(matches!(
        c.observe("/pod/app", 95 * MIB, 100 * MIB, later),
        Decision::Capture { .. }
    ));
}

#[test]
fn a_skipped_crossing_stays_handled_until_it_re_arms() {
    let (mut c, t) = (containers(), Instant::now());
    assert!(matches!(
        c.observe("/pod/app", 95 * MIB, 100 * MIB, t),
        Decision::Capture { .. }
    ));
    c.skipped("/pod/app");
    assert!(matches!(
        c.observe("/pod/app", 96 * MIB, 100 * MIB, t),
        Decision::Hold(_)
    ));
    c.observe("/pod/app", 50 * MIB, 100 * MIB, t);
    assert!(matches!(
        c.observe("/pod/app", 96 * MIB, 100 * MIB, t),
        Decision::Capture { .. }
    ));
}

#[test]
fn unknown_containers_and_exited_members() {
    let (mut c, t) = (containers(), Instant::now());
    assert_eq!(c.observe("/other", 99 * MIB, 100 * MIB, t), Decision::Below);
    assert_eq!(c.members("/pod/app"), vec![key(1), key(2)]);
    assert!(c.forget(|k| k.pid != 2, false).is_empty());
    assert_eq!(c.members("/pod/app"), vec![key(2)]);
    // An exec leaves the container (its process is noted again at its next reading).
    assert!(c.forget(|_| true, true).is_empty());
    assert!(c.members("/pod/app").is_empty());
    assert!(!c.note("/pod/app", &[], key(2)), "still watched");
    assert_eq!(c.forget(|_| true, false), vec!["/pod/app".to_string()]);
    assert!(c.members("/pod/app").is_empty());
}

fn member(pid: u32, rss_mib: u64, serves: bool) -> Member {
    Member {
        key: key(pid),
        comm: format!("p{pid}"),
        rss: rss_mib * MIB,
        serves,
    }
}

#[test]
fn the_largest_process_that_serves_a_profile_is_chosen() {
    let all = [
        member(1, 300, false),
        member(2, 200, true),
        member(3, 250, true),
    ];
    assert_eq!(choose(&all).unwrap().key.pid, 3);
    let none_serve = [member(1, 100, false), member(2, 200, false)];
    assert_eq!(choose(&none_serve).unwrap().key.pid, 2);
    assert!(choose(&[]).is_none());
    assert_eq!(describe(&all), "1:p1:300MiB,3:p3:250MiB,2:p2:200MiB");
}

#[test]
fn a_watcher_that_lost_its_views_is_restarted_on_other_views() {
    let mut c = containers();
    // Each opening is a view of its own.
    let view = |_: u32| View::for_test();
    c.lost("/pod/app");
    // The views that failed are not tried again; another member's are.
    assert!(!c.note("/pod/app", &[], key(1)));
    assert!(c.note("/pod/app", &[view(2)], key(2)));
    assert!(!c.note("/pod/app", &[view(3)], key(3)), "still watched");
}
