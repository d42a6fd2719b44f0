use super::*;

const MIB: u64 = 1 << 20;

#[test]
fn below_arms_at_threshold() {
    let mut p = Policy::new(vec![80], Duration::from_secs(60));
    assert_eq!(
        p.observe(1, 100 * MIB, 1000 * MIB, Instant::now()),
        Decision::Arm(800 * MIB)
    );
}

#[test]
fn the_lowest_level_is_the_first_one_armed() {
    let p: Policy<u32> = Policy::new(vec![80, 95], Duration::ZERO);
    assert_eq!(p.lowest_level(1000 * MIB, false), 800 * MIB);
    assert_eq!(p.lowest_level(1000 * MIB, true), 800 * MIB, "of MemTotal");
    let p = p.with_bytes(vec![300 * MIB, 600 * MIB]);
    assert_eq!(p.lowest_level(1000 * MIB, true), 300 * MIB);
    assert_eq!(p.lowest_level(1000 * MIB, false), 800 * MIB);
}

#[test]
fn one_capture_per_crossing() {
    let mut p = Policy::new(vec![80], Duration::ZERO);
    let t = Instant::now();
    assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t), Decision::Capture);
    assert_eq!(
        p.observe(1, 900 * MIB, 1000 * MIB, t),
        Decision::Hold(HoldReason::InFlight)
    );
    p.stored(1, t);
    assert_eq!(
        p.observe(1, 900 * MIB, 1000 * MIB, t),
        Decision::Hold(HoldReason::AlreadyCaptured)
    );
    assert_eq!(
        p.observe(1, 700 * MIB, 1000 * MIB, t),
        Decision::Arm(800 * MIB)
    );
    assert_eq!(p.observe(1, 850 * MIB, 1000 * MIB, t), Decision::Capture);
}

#[test]
fn failed_capture_is_retried_with_backoff_while_above() {
    let mut p = Policy::new(vec![80], Duration::from_secs(300));
    let t0 = Instant::now();
    assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t0), Decision::Capture);
    let mut t = t0;
    for (i, backoff) in RETRY_BACKOFF.iter().enumerate() {
        assert_eq!(
            p.failed(1, Outcome::Failed, t),
            Retry::After {
                attempt: i + 1,
                delay: *backoff
            }
        );
        assert_eq!(
            p.observe(1, 820 * MIB, 1000 * MIB, t),
            Decision::Hold(HoldReason::RetryPending)
        );
        t += *backoff;
        // The cooldown does not hold a retry: nothing was stored yet.
        assert_eq!(p.observe(1, 820 * MIB, 1000 * MIB, t), Decision::Capture);
    }
    assert_eq!(p.failed(1, Outcome::Failed, t), Retry::GiveUp);
    assert_eq!(
        p.observe(1, 820 * MIB, 1000 * MIB, t + Duration::from_secs(60)),
        Decision::Hold(HoldReason::AlreadyCaptured)
    );
    // Falling below resets the count; the next crossing is captured (no profile stored,
    // so no cooldown) and has its full retries again.
    assert!(matches!(
        p.observe(1, 10 * MIB, 1000 * MIB, t),
        Decision::Arm(_)
    ));
    assert_eq!(p.observe(1, 820 * MIB, 1000 * MIB, t), Decision::Capture);
    assert!(matches!(
        p.failed(1, Outcome::Failed, t),
        Retry::After { attempt: 1, .. }
    ));
}

#[test]
fn a_process_without_a_profile_is_not_retried() {
    let mut p = Policy::new(vec![80], Duration::ZERO);
    let t = Instant::now();
    assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t), Decision::Capture);
    assert_eq!(p.failed(1, Outcome::NoProfile, t), Retry::GiveUp);
    assert_eq!(
        p.observe(1, 810 * MIB, 1000 * MIB, t + Duration::from_secs(1)),
        Decision::Hold(HoldReason::AlreadyCaptured)
    );
}

#[test]
fn cooldown_holds_a_second_crossing() {
    let mut p = Policy::new(vec![80], Duration::from_secs(60));
    let t0 = Instant::now();
    assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t0), Decision::Capture);
    p.stored(1, t0);
    assert!(matches!(
        p.observe(1, 10 * MIB, 1000 * MIB, t0),
        Decision::Arm(_)
    ));
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(
        p.observe(1, 810 * MIB, 1000 * MIB, t1),
        Decision::Hold(HoldReason::Cooldown)
    );
    // The held crossing is not captured late; the next one after the cooldown is.
    assert_eq!(
        p.observe(1, 820 * MIB, 1000 * MIB, t0 + Duration::from_secs(61)),
        Decision::Hold(HoldReason::AlreadyCaptured)
    );
    assert!(matches!(
        p.observe(1, 10 * MIB, 1000 * MIB, t1),
        Decision::Arm(_)
    ));
    assert_eq!(
        p.observe(1, 810 * MIB, 1000 * MIB, t0 + Duration::from_secs(61)),
        Decision::Capture
    );
}

#[test]
fn an_exec_reported_during_a_capture_starts_no_second_one() {
    let mut p = Policy::new(vec![50], Duration::ZERO);
    let t = Instant::now();
    assert_eq!(p.observe(1, 60, 100, t), Decision::Capture);
    p.forget(|pid| *pid == 1, true);
    assert_eq!(
        p.observe(1, 60, 100, t),
        Decision::Hold(HoldReason::InFlight)
    );
    // Once nothing is under way, an exec starts the program afresh.
    p.stored(1, t);
    p.forget(|pid| *pid == 1, true);
    assert_eq!(p.observe(1, 60, 100, t), Decision::Capture);
}

#[test]
fn processes_are_independent_and_forgotten() {
    let mut p = Policy::new(vec![50], Duration::from_secs(60));
    let t = Instant::now();
    assert_eq!(p.observe(1, 60, 100, t), Decision::Capture);
    assert_eq!(p.observe(2, 60, 100, t), Decision::Capture);
    p.stored(1, t);
    p.stored(2, t);
    p.forget(|pid| *pid == 1, false);
    assert_eq!(p.observe(1, 60, 100, t), Decision::Capture);
    assert_eq!(
        p.observe(2, 60, 100, t),
        Decision::Hold(HoldReason::AlreadyCaptured)
    );
}

#[test]
fn a_list_of_levels_captures_each_once_then_rearms_below_hysteresis() {
    let mut p = Policy::new(vec![80, 90, 95], Duration::from_secs(300));
    let t = Instant::now();
    let limit = 1000 * MIB;
    assert_eq!(p.observe(1, 500 * MIB, limit, t), Decision::Arm(800 * MIB));
    assert_eq!(p.observe(1, 810 * MIB, limit, t), Decision::Capture);
    p.stored(1, t);
    // The next level is armed right after the capture, escalation ignores the cooldown.
    assert_eq!(p.observe(1, 820 * MIB, limit, t), Decision::Arm(900 * MIB));
    assert_eq!(p.observe(1, 930 * MIB, limit, t), Decision::Capture);
    p.stored(1, t);
    // Already above the last level when the capture is stored: captured at once.
    assert_eq!(p.observe(1, 960 * MIB, limit, t), Decision::Capture);
    p.stored(1, t);
    assert_eq!(
        p.observe(1, 990 * MIB, limit, t),
        Decision::Hold(HoldReason::AlreadyCaptured)
    );
    // Within 5 points below 95 % nothing re-arms; further down, the levels come back.
    assert_eq!(
        p.observe(1, 910 * MIB, limit, t),
        Decision::Hold(HoldReason::AlreadyCaptured)
    );
    assert_eq!(p.observe(1, 890 * MIB, limit, t), Decision::Arm(950 * MIB));
    assert_eq!(p.observe(1, 700 * MIB, limit, t), Decision::Arm(800 * MIB));
    // Crossing 80 % again within the cooldown: held, and the next level is due.
    let later = t + Duration::from_secs(10);
    assert_eq!(
        p.observe(1, 810 * MIB, limit, later),
        Decision::Hold(HoldReason::Cooldown)
    );
    assert_eq!(
        p.observe(1, 820 * MIB, limit, later),
        Decision::Arm(900 * MIB)
    );
}

#[test]
fn a_failed_level_gives_way_to_the_next() {
    let mut p = Policy::new(vec![80, 90], Duration::ZERO);
    let t = Instant::now();
    assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t), Decision::Capture);
    assert_eq!(p.failed(1, Outcome::NoProfile, t), Retry::GiveUp);
    assert_eq!(
        p.observe(1, 850 * MIB, 1000 * MIB, t),
        Decision::Arm(900 * MIB)
    );
}

#[test]
fn processes_without_a_limit_use_the_absolute_levels() {
    let gib = 1024 * MIB;
    let mut p = Policy::new(vec![80], Duration::ZERO).with_bytes(vec![gib, 2 * gib]);
    let t = Instant::now();
    assert_eq!(p.observe_bytes(1, 100 * MIB, t), Decision::Arm(gib));
    assert_eq!(p.observe_bytes(1, gib + 1, t), Decision::Capture);
    p.stored(1, t);
    assert_eq!(p.observe_bytes(1, gib + MIB, t), Decision::Arm(2 * gib));
    // 5 % below 1 GiB re-arms it.
    assert_eq!(p.observe_bytes(1, 990 * MIB, t), Decision::Arm(2 * gib));
    assert_eq!(p.observe_bytes(1, 900 * MIB, t), Decision::Arm(gib));
}

#[test]
fn untouched_until_a_capture_and_again_once_well_below() {
    let mut p = Policy::new(vec![80, 90], Duration::ZERO);
    let t = Instant::now();
    assert!(!p.untouched(&1), "never observed");
    p.observe(1, 100 * MIB, 1000 * MIB, t);
    assert!(p.untouched(&1));
    assert_eq!(p.observe(1, 810 * MIB, 1000 * MIB, t), Decision::Capture);
    assert!(!p.untouched(&1), "a capture runs");
    assert!(matches!(
        p.failed(1, Outcome::Failed, t),
        Retry::After { .. }
    ));
    assert!(!p.untouched(&1), "a retry is due");
    p.observe(1, 810 * MIB, 1000 * MIB, t + Duration::from_secs(1));
    p.stored(1, t);
    assert!(!p.untouched(&1), "the first level is captured");
    p.observe(1, 100 * MIB, 1000 * MIB, t);
    assert!(
        p.untouched(&1),
        "fallen well below: the first level is due again"
    );
}
