//! docs/configuration.md names every option: each long flag (`--foo`) and each environment
//! variable of the top-level command and of every subcommand, and every subcommand
//! (`memprof foo`). An option added without a line there fails here, with the list of what is
//! missing.
use clap::CommandFactory;

use super::Args;

const DOC: &str = "docs/configuration.md";

fn doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DOC);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `word` occurs in `text` as a whole: not inside a longer flag or variable name
/// (`--pid` is not named by `--pid-file`, `MEMPROF_S3_SSE` not by `MEMPROF_S3_SSE_KMS_KEY_ID`).
fn names(text: &str, word: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        // A flag starts with `-`: what stands before it may be anything but a name.
        let free_before = word.starts_with('-') || !before.is_some_and(part);
        free_before && !after.is_some_and(part)
    })
}

/// Every option of `cmd` and its subcommands, as `(where, what the doc must name)`.
fn options(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    for arg in cmd.get_arguments() {
        if matches!(arg.get_id().as_str(), "help" | "version") {
            continue;
        }
        if let Some(long) = arg.get_long() {
            out.push((path.to_string(), format!("--{long}")));
        }
        if let Some(env) = arg.get_env() {
            out.push((path.to_string(), env.to_string_lossy().into_owned()));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let path = format!("{path} {}", sub.get_name());
        out.push((path.clone(), path.clone()));
        options(sub, &path, out);
    }
}

#[test]
fn the_configuration_doc_names_every_flag_variable_and_command() {
    let doc = doc();
    let mut all = Vec::new();
    options(&Args::command(), "memprof", &mut all);
    assert!(
        all.iter().any(|(_, o)| o == "BUCKET") && all.iter().any(|(_, o)| o == "--pid"),
        "the walk found the options: {all:?}"
    );
    let missing: Vec<String> = all
        .iter()
        .filter(|(_, option)| !names(&doc, option))
        .map(|(cmd, option)| format!("{option} (of `{cmd}`)"))
        .collect();
    assert!(
        missing.is_empty(),
        "{DOC} does not name:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn a_name_counts_only_as_a_whole() {
    assert!(names("`--pid` | x", "--pid"));
    assert!(!names("`--pid-file`", "--pid"));
    assert!(names("`MEMPROF_S3_SSE` /", "MEMPROF_S3_SSE"));
    assert!(!names("`MEMPROF_S3_SSE_KMS_KEY_ID`", "MEMPROF_S3_SSE"));
    assert!(!names("`XBUCKET`", "BUCKET"));
    assert!(names("`memprof top` |", "memprof top"));
    assert!(!names("`memprof topology`", "memprof top"));
}
