//! The morning after, end to end on real parts: a Go service leaks through three levels into
//! its memory cgroup's limit and the OOM killer takes it, memprof stores the series in a real
//! S3 server and alerts two webhooks — one down for the first seconds after the kill, one
//! answering 500 forever. Then:
//! - the record's `grew` names the leak first;
//! - the receiver that came back got exactly one POST, with the record; the failing one held
//!   back nothing, and no URL's secret was logged;
//! - `memprof report` from `s3://…` and from a directory in memprof's layout both write a page
//!   naming the leak, with the timeline and both flame graphs as SVG, referencing nothing
//!   remote; `--format text` says the same;
//! - the page in headless chromium: no errors, no requests, the frames in the DOM, search and
//!   zoom answer a click; a screenshot is kept in `target/test-artifacts/`.
use std::{path::Path, time::Duration};

use crate::{
    common::{
        browser::Browser,
        webhook::{late_port, Receiver},
        *,
    },
    goheap_oom::{prerequisites, wait_key},
};

const SECRET: &str = "hook-secret-7f3a";

#[test]
fn an_oom_kill_is_alerted_and_reported() {
    let Some(go) = prerequisites("leaky", go::Toolchain::Current) else {
        return;
    };
    if !require(have("chromium"), "chromium (cargo xtask setup)") {
        return;
    }
    let failing = Receiver::start(0, 500);
    let late_port = late_port();
    let s3 = S3Server::start("incident");
    let client = s3.client();
    let mut env = s3.env();
    env.push(("MEMORY_CRITICAL_PERCENTAGE", "40,60,80".into()));
    env.push((
        "MEMPROF_WEBHOOK_URL",
        format!(
            "http://127.0.0.1:{late_port}/hooks/{SECRET},http://127.0.0.1:{}/?token={SECRET}",
            failing.port
        ),
    ));
    let memprof = Memprof::spawn(&["--detector", "btf", "--go-heap", "memory"], &env);
    let cg = MemCgroup::new("memprof-report", 256 << 20);
    // 16 MiB held from the start by a second function: a frame to zoom into, and one the
    // difference shows unchanged.
    let args = ["-addr", "", "-rate", "100", "-delay", "1s", "-cache", "16"];
    let mut svc = cg.start(&go, &args);
    let pid = svc.id();
    // Stored while one webhook is down and the other fails: alerts hold back no delivery.
    let record_key = wait_key(&client, &format!("_pid-{pid}_oom.record.json"), &memprof);
    let _ = svc.wait();
    let record: serde_json::Value = serde_json::from_slice(&client.get(&record_key)).unwrap();
    assert_eq!(
        record["grew"][0]["function"], "main.leakyRetain",
        "{record:#}"
    );
    for level in ["40pct", "60pct", "80pct"] {
        wait_key(&client, &format!("_pid-{pid}_{level}.heap"), &memprof);
    }

    // The receiver comes up a few seconds after the kill and gets the alert once.
    std::thread::sleep(Duration::from_secs(3));
    let late = Receiver::start(late_port, 200);
    wait_for("the alert", Duration::from_secs(90), || {
        !late.posts().is_empty()
    });
    std::thread::sleep(Duration::from_secs(8));
    let posts = late.posts();
    assert_eq!(posts.len(), 1, "exactly one POST per kill: {posts:#?}");
    let alert = posts[0].json();
    assert_eq!(alert["event"], "oom_kill");
    // The record as stored, but for the command line (arguments carry secrets).
    let mut expected = record.clone();
    expected.as_object_mut().unwrap().remove("cmdline");
    assert_eq!(alert["record"], expected, "the alert carries the record");
    let text = alert["text"].as_str().unwrap();
    assert!(text.starts_with("OOM kill: `leaky` (pid "), "{text}");
    assert!(text.contains("Grew most: `main.leakyRetain` +"), "{text}");
    assert!(
        posts[0].head.contains(&format!("/hooks/{SECRET}")),
        "{}",
        posts[0].head
    );
    assert!(!failing.posts().is_empty(), "the failing webhook was tried");
    // The alerts' spools live inside the profiles' and are not mistaken for a profile: the
    // profiles' spool drains at once on SIGTERM, whatever the failing webhook still holds.
    let (code, log) = memprof.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("every profile is stored; exiting"), "{log}");
    assert!(log.contains("alert not sent yet"), "{log}");
    assert!(
        !log.contains(SECRET),
        "a webhook's secret was logged:\n{log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let from_s3 = report(&s3, "s3://incident", &dir.path().join("s3.html"));
    let mirror = dir.path().join("stored");
    mirror_bucket(&client, &mirror);
    let from_dir = report(&s3, mirror.to_str().unwrap(), &dir.path().join("dir.html"));
    for page in [&from_s3, &from_dir] {
        let html = std::fs::read_to_string(page).unwrap();
        for part in [
            "main.leakyRetain",
            r#"<svg class="timeline""#,
            r#"<svg class="flame" id="flame-0""#,
            r#"<svg class="flame diff" id="diff-0""#,
            &record_key,
        ] {
            assert!(html.contains(part), "{} lacks {part}", page.display());
        }
        self_contained(&html);
    }
    let text = memprof_command(&[])
        .envs(s3.env())
        .args(["report", "--from", "s3://incident", "--format", "text"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("OOM kill at ") && text.contains("main.leakyRetain"),
        "{text}"
    );

    in_a_browser(&from_s3);
}

/// `memprof report --from … --out page`.
fn report(s3: &S3Server, from: &str, page: &Path) -> std::path::PathBuf {
    let out = memprof_command(&[])
        .envs(s3.env())
        .args(["report", "--from", from, "--out"])
        .arg(page)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "memprof report --from {from}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    page.to_path_buf()
}

/// The bucket in memprof's local layout: each object beside its `.meta.json`.
fn mirror_bucket(client: &S3Client, dir: &Path) {
    for key in client.keys() {
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, client.get(&key)).unwrap();
        let meta: std::collections::BTreeMap<_, _> = client.metadata(&key).into_iter().collect();
        std::fs::write(
            dir.join(format!("{key}.meta.json")),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
    }
}

/// Nothing on the page is loaded from anywhere (the SVG namespace is a name, not a fetch).
fn self_contained(html: &str) {
    let html = html.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
    for remote in ["http://", "https://", " src=", " href=", "url(", "@import"] {
        assert!(!html.contains(remote), "the page references {remote:?}");
    }
}

fn in_a_browser(page: &Path) {
    let mut b = Browser::start().expect("headless chromium");
    b.open(page).unwrap();
    let count = |b: &mut Browser, selector: &str| {
        b.eval(&format!("document.querySelectorAll({selector:?}).length"))
            .unwrap()
            .as_u64()
            .unwrap()
    };
    assert!(count(&mut b, r#"#flame-0 g.frame[data-name="main.leakyRetain"]"#) >= 1);
    assert!(count(&mut b, r#"#flame-0 g.frame[data-name="main.main"]"#) >= 1);
    assert_eq!(count(&mut b, "svg.timeline"), 1);
    let grew = b
        .eval(r#"Number(document.querySelector('#diff-0 g.frame[data-name="main.leakyRetain"]').dataset.change)"#)
        .unwrap();
    assert!(
        grew.as_f64().unwrap() > 0.0,
        "the leak grew in the diff: {grew}"
    );
    // The cache was there from the first profile: unchanged, but for sampling.
    let same = b
        .eval(r#"Number(document.querySelector('#diff-0 g.frame[data-name="main.fillCache"]').dataset.change)"#)
        .unwrap();
    assert!(
        same.as_f64().unwrap().abs() < 4e6,
        "the cache did not grow: {same}"
    );
    let artifacts = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    b.screenshot(&artifacts.join("report.png")).unwrap();
    std::fs::copy(page, artifacts.join("report.html")).unwrap();

    // Search: the leak is marked in both graphs, and the count says so.
    b.type_into("#search", "leakyretain").unwrap();
    assert!(count(&mut b, "g.frame.match") >= 2);
    let status = b
        .eval("document.getElementById('search-status').textContent")
        .unwrap();
    assert!(status.as_str().unwrap().ends_with("match"), "{status}");

    // Zoom: the cache's frame, a few percent wide, spans the graph once clicked; the leak's
    // goes; the top frame brings everything back.
    let cache = r#"#flame-0 g.frame[data-name="main.fillCache"]"#;
    let narrow = b
        .eval(&format!(
            "Number(document.querySelector({cache:?}).dataset.w)"
        ))
        .unwrap();
    assert!(
        narrow.as_f64().unwrap() < 0.3,
        "the cache's share: {narrow}"
    );
    b.eval(&format!(
        "document.querySelector({cache:?}).id = 'zoom-here'"
    ))
    .unwrap();
    b.click("#zoom-here").unwrap();
    let width = "Number(document.querySelector('#zoom-here rect').getAttribute('width'))";
    assert_eq!(b.eval(width).unwrap().as_f64(), Some(1200.0));
    assert!(
        count(
            &mut b,
            r#"#flame-0 g.frame.hidden[data-name="main.leakyRetain"]"#
        ) >= 1
    );
    b.click(r#"#flame-0 g.frame[data-d="0"]"#).unwrap();
    assert!(b.eval(width).unwrap().as_f64().unwrap() < 600.0);
    assert_eq!(count(&mut b, "#flame-0 g.frame.hidden"), 0);
    let errors = b.errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    let requests = b.requests();
    assert!(requests.is_empty(), "the page loaded: {requests:#?}");
}
