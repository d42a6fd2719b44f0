//! Parsers of the values users write: whole numbers in a range, and sizes as Kubernetes
//! writes quantities. Errors name the variable and its flag in one line.
use super::ConfigError;

pub fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    value: &str,
    var: &str,
    flag: &str,
    min: T,
    max: T,
    unit: &str,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError(format!(
            "invalid {var} (--{flag}): {value:?} is not a whole number of {unit} from {min} to {max}"
        ))),
    }
}

/// A size as Kubernetes writes quantities: a number with `Ki`/`Mi`/`Gi`/`Ti` (binary) or
/// `k`/`K`/`M`/`G`/`T` (decimal), optionally followed by `B`; bare numbers are bytes.
pub fn size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_suffix('B').unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| (n * factor as f64).round() as u64)
}

/// `MEMPROF_AT_KILL_RING`: a BPF ring buffer is a power of two of pages.
pub fn ring_bytes(text: &str) -> Result<u32, ConfigError> {
    match size(text) {
        Some(n) if n.is_power_of_two() && (64 << 10..=256 << 20).contains(&n) => Ok(n as u32),
        _ => Err(ConfigError(format!(
            "invalid MEMPROF_AT_KILL_RING (--at-kill-ring): {text:?} is not a power of two from \
             64Ki to 256Mi, such as 1Mi or 16Mi"
        ))),
    }
}

/// `MEMPROF_LISTEN`: `host:port`, `:port` (every address) or empty (no server).
pub fn listen(text: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let with_host = match t.strip_prefix(':') {
        Some(port) => format!("[::]:{port}"),
        None => t.to_string(),
    };
    with_host.parse().map(Some).map_err(|_| {
        ConfigError(format!(
            "invalid MEMPROF_LISTEN (--listen): {text:?} is not an address such as :9400 or \
             127.0.0.1:9400 (empty turns the server off)"
        ))
    })
}
