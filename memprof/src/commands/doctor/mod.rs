//! `memprof doctor [--pid N]`: what works on this node and what to fix, one line per check.
//! The host (`host`, `capabilities`), the detector the daemon would load (`detector`: loaded,
//! attached and unloaded for real), where profiles would go (`sink`) and, for `--pid`, one
//! process as the daemon would see it (`process`). A check FAILs when it keeps memprof from
//! its eBPF detector, its sink or, with `--pid`, from profiling that process; it WARNs when
//! memprof works without it, less well. Exit 0 when nothing FAILed.
mod capabilities;
mod detector;
mod host;
mod process;
mod sink;

use std::process::ExitCode;

use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report, and for a WARN or FAIL what to do about it.
struct Check {
    status: Status,
    what: &'static str,
    detail: String,
    fix: Option<String>,
}

impl Check {
    fn ok(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Ok,
            what,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(what: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Self::ok(what, detail)
        }
    }

    fn fail(what: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Self::ok(what, detail)
        }
    }
}

/// A heading and its checks.
type Section = (String, Vec<Check>);

pub async fn run(cfg: &Config, pid: Option<u32>) -> ExitCode {
    // The host first: loading the detector may mount tracefs, and the report says what the
    // node offered before memprof touched it.
    let host = host::checks(cfg);
    let detector = detector::check(cfg).await;
    let mut sections: Vec<Section> = vec![
        ("host".into(), host),
        ("detector".into(), detector),
        ("sink".into(), sink::checks(cfg).await),
    ];
    if let Some(pid) = pid {
        sections.push(process::checks(cfg, pid).await);
    }
    print!("{}", render(&sections));
    let failed = sections
        .iter()
        .flat_map(|(_, checks)| checks)
        .filter(|c| c.status == Status::Fail)
        .count();
    if failed == 0 {
        println!(
            "\nmemprof would work here, with the eBPF detector and profiles to {}",
            sink::describe(cfg)
        );
        ExitCode::SUCCESS
    } else {
        println!("\n{failed} check(s) FAILED; the fix: lines say what to change");
        ExitCode::from(1)
    }
}

/// The report: a heading per section, then `STATUS  what  detail`, the columns aligned, and
/// the fix below a check that needs one.
fn render(sections: &[Section]) -> String {
    let width = sections
        .iter()
        .flat_map(|(_, checks)| checks)
        .map(|c| c.what.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (heading, checks) in sections {
        out.push_str(heading);
        out.push('\n');
        for c in checks {
            let status = match c.status {
                Status::Ok => "OK",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "  {status:<4}  {:<width$}  {}\n",
                c.what, c.detail
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("  {:<4}  {:<width$}  fix: {fix}\n", "", ""));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_fixes_sit_under_their_check() {
        let sections = vec![(
            "host".to_string(),
            vec![
                Check::ok("kernel", "6.1.0"),
                Check::fail("tracefs", "not mounted", "mount it"),
            ],
        )];
        let want = [
            "host",
            "  OK    kernel   6.1.0",
            "  FAIL  tracefs  not mounted",
            "                 fix: mount it",
        ];
        assert_eq!(render(&sections), want.map(|l| format!("{l}\n")).concat());
    }
}
