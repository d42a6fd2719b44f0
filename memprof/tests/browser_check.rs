//! The browser harness (`common::browser`) on pages of its own, before tests of memprof's pages
//! rely on it: a small flame graph searched and clicked as a user does, a screenshot of it;
//! and a broken page, whose exception, console warning and remote image are all reported, so a
//! test asserting none of them can fail.
use std::path::{Path, PathBuf};

use crate::common::{browser::Browser, *};

/// A flame graph's shape: frames (`g.frame`, named by `data-name`) a search marks (`match`)
/// and a click zooms into (`zoomed`).
const FLAME: &str = r##"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>flame</title>
<style>.match rect { fill: #c0f } .zoomed rect { stroke: #000; stroke-width: 3 }</style>
</head><body>
<input id="search" placeholder="search">
<svg width="600" height="120">
  <g class="frame" data-name="main"><rect x="0" y="90" width="600" height="28" fill="#f80"/></g>
  <g class="frame" data-name="alloc_big"><rect x="0" y="60" width="400" height="28" fill="#fa0"/></g>
  <g class="frame" data-name="alloc_small"><rect x="400" y="60" width="200" height="28" fill="#fb0"/></g>
  <g class="frame" data-name="parse"><rect x="0" y="30" width="250" height="28" fill="#fc0"/></g>
</svg>
<script>
const frames = document.querySelectorAll('g.frame');
document.getElementById('search').addEventListener('input', e => {
  const q = e.target.value;
  for (const f of frames) f.classList.toggle('match', q !== '' && f.dataset.name.includes(q));
});
// Only a trusted click (the mouse's, not element.click()) zooms: the harness must click as a user.
for (const f of frames) f.addEventListener('click', e => { if (e.isTrusted) f.classList.add('zoomed'); });
</script>
</body></html>
"##;

/// A page that goes wrong in each way the harness reports.
const BROKEN: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>broken</title></head><body>
<script>console.warn("careful")</script>
<script>throw new Error("boom")</script>
<img src="http://192.0.2.1/x.png">
</body></html>
"#;

/// A started browser, or `None` (the test skipped) without chromium.
fn browser() -> Option<Browser> {
    if !require(have("chromium"), "chromium (cargo xtask setup)") {
        return None;
    }
    Some(Browser::start().expect("starting chromium"))
}

/// `html` written to a file in `dir`.
fn page(dir: &Path, html: &str) -> PathBuf {
    let path = dir.join("page.html");
    std::fs::write(&path, html).unwrap();
    path
}

/// How many elements of the page match `selector`.
fn count(b: &mut Browser, selector: &str) -> u64 {
    let selector = serde_json::to_string(selector).unwrap();
    b.eval(&format!("document.querySelectorAll({selector}).length"))
        .unwrap()
        .as_u64()
        .expect("a count")
}

#[test]
fn a_page_is_searched_and_clicked_as_a_user_would() {
    let Some(mut b) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    b.open(&page(dir.path(), FLAME)).unwrap();
    assert_eq!(b.errors(), Vec::<String>::new());
    assert_eq!(b.requests(), Vec::<String>::new());
    assert_eq!(count(&mut b, "g.frame"), 4);

    b.type_into("#search", "alloc").unwrap();
    assert_eq!(count(&mut b, ".match"), 2);
    assert_eq!(
        b.eval("document.getElementById('search').value").unwrap(),
        "alloc"
    );

    b.click(r#"g.frame[data-name="parse"]"#).unwrap();
    let zoomed = b.eval("[...document.querySelectorAll('.zoomed')].map(f => f.dataset.name)");
    assert_eq!(zoomed.unwrap(), serde_json::json!(["parse"]));

    let shots = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("browser-check.png");
    b.screenshot(&shot).unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {}",
        shot.display()
    );
    assert!(png.len() > 1000, "{} bytes", png.len());

    // The test's own mistakes are errors of the calls, not of the page.
    let e = b.eval("null.x").unwrap_err().to_string();
    assert!(e.contains("TypeError"), "{e}");
    assert!(b.click("#nothing").is_err());
    assert_eq!(b.errors(), Vec::<String>::new());
}

#[test]
fn a_broken_page_is_reported() {
    let Some(mut b) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    b.open(&page(dir.path(), BROKEN)).unwrap();
    let errors = b.errors();
    let has = |what: &str| errors.iter().any(|e| e.contains(what));
    assert!(has("uncaught exception: Error: boom"), "{errors:#?}");
    assert!(has("console.warning: careful"), "{errors:#?}");
    assert!(
        has("http://192.0.2.1/x.png"),
        "the refused image: {errors:#?}"
    );
    assert_eq!(b.requests(), ["http://192.0.2.1/x.png"]);
}
