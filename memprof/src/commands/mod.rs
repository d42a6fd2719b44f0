//! Commands beside the daemon, for an engineer on a node: `capture` takes one profile now,
//! `top` shows what memprof would watch, `doctor` what works here and what to fix, `report`
//! what was stored, as a page. They use the daemon's stages unchanged.
pub mod capture;
pub mod doctor;
pub mod report;
pub mod top;

use std::io::IsTerminal;

/// Bytes for people: `512.0Mi`, `1.5Gi`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// Whether the output is a terminal (then `top` redraws in place).
fn interactive() -> bool {
    std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(999), "999");
        assert_eq!(super::human(512 << 20), "512.0Mi");
        assert_eq!(super::human(3 << 29), "1.5Gi");
    }
}
