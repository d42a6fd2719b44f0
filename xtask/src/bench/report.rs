//! The written report: every table of a run and its figures, under the machine, the commit
//! and the date, in `docs/benchmarks.md` (figures in `docs/bench/`). It is rewritten by each
//! run, so what is committed is what one command printed.
use anyhow::Result;

use super::{stamp, Results};
use crate::workspace_root;

/// Writes `docs/{file}` (`--report`, `benchmarks.md` unless given: a run of some groups only
/// can be written beside the full one).
pub fn write(results: &Results, args: &[String], file: &str) -> Result<()> {
    let docs = workspace_root().join("docs");
    std::fs::create_dir_all(docs.join("bench"))?;
    let command = match args.is_empty() {
        true => "cargo xtask bench".to_string(),
        false => format!("cargo xtask bench {}", args.join(" ")),
    };
    let mut md = format!(
        "# Benchmarks\n\nWritten by `{command}` on {}, commit `{}`.\n\nMachine: {}.\n\n\
         Every table below comes from that one run; [costs.md](costs.md) explains the figures \
         and how they changed. Rerun the command to measure your own machine (it rewrites \
         this file).\n",
        stamp::date(),
        stamp::commit(),
        stamp::machine()
    );
    for section in &results.sections {
        md += &format!("\n## {}\n\n{}\n", section.title, section.markdown);
        for (file, caption, svg) in &section.figures {
            std::fs::write(docs.join("bench").join(file), svg)?;
            md += &format!("\n![{caption}](bench/{file})\n");
        }
    }
    md += "\n## Every measurement\n\nMedian, least and greatest of each mode's samples; \
           \"vs base\" compares a median with the baseline mode of the same measurement.\n";
    md += &results.markdown();
    let path = docs.join(file);
    std::fs::write(&path, md)?;
    println!("\nreport written to {}", path.display());
    Ok(())
}
