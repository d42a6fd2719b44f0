//! Where the memory went: the container's charge (`cgroup::charge`) split with the Go runtime's
//! own account (`goheap::memstats`) into the parts an SRE asks about first — Go's heap in use,
//! heap it holds free, goroutine stacks, the rest of Go's runtime, anonymous memory outside
//! Go's heap (cgo, `mmap`, other processes), page cache, and kernel memory — in bytes, with
//! `total` the container's charge at that moment. The parts add up to `total` within a few
//! percent, or `missing` says what the difference is.
use serde::Serialize;

use super::goheap::memstats::GoMemory;
use crate::cgroup::charge::Charge;

/// How far the parts may be from `total` before the record says so.
const ADDS_UP_WITHIN: f64 = 0.05;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Accounting {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_heap_in_use: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_heap_free: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_stacks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_runtime_other: Option<u64>,
    pub non_go_anon: u64,
    pub file: u64,
    pub kernel: u64,
    pub total: u64,
    /// When the parts do not add up to `total`, or a part is an estimate: why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Below this share of its limit, a container's charge read at an OOM kill was read after the
/// victim's memory left it.
const AT_LIMIT: f64 = 0.9;

/// The charge to account an OOM kill with. The cgroup is read when the kill is reported, and
/// the victim may have begun to exit by then: its own anonymous memory at the kill, as the OOM
/// killer counted it (recent kernels say), is a floor; without it, a charge well below the
/// limit was read too late, and the one read at the last capture stands in.
pub fn kill_charge(
    at_report: Option<Charge>,
    victim_anon: Option<u64>,
    before: Option<Charge>,
    limit: u64,
) -> Option<Charge> {
    let read = at_report.or(before)?;
    if let Some(anon) = victim_anon.filter(|&a| a > read.anon) {
        return Some(Charge {
            anon,
            usage: read
                .usage
                .max(anon.saturating_add(read.file).saturating_add(read.kernel)),
            note: Some(
                "the cgroup was read as the victim was freeing its memory: anonymous memory is \
                 the victim's own at the kill, as the OOM killer counted it",
            ),
            ..read
        });
    }
    let late = |c: &Charge| (c.usage as f64) < AT_LIMIT * limit as f64;
    match (at_report, before) {
        (Some(now), Some(earlier)) if victim_anon.is_none() && late(&now) => Some(Charge {
            note: Some(
                "the cgroup was read after the victim's memory had left it: these are the \
                 figures of the last capture before the kill",
            ),
            ..earlier
        }),
        (Some(now), None) if victim_anon.is_none() && late(&now) => Some(Charge {
            note: Some("the cgroup was read after the victim's memory had left it"),
            ..now
        }),
        _ => Some(read),
    }
}

/// The split of `charge`; `go`: the runtime's account, for a Go process.
pub fn account(charge: &Charge, go: Option<&GoMemory>) -> Accounting {
    let mut a = Accounting {
        file: charge.file,
        kernel: charge.kernel,
        total: charge.usage,
        non_go_anon: charge.anon,
        ..Accounting::default()
    };
    a.notes.extend(charge.note.map(String::from));
    if charge.kernel_is_rest {
        a.notes
            .push("kernel: the charge beyond anonymous memory and page cache (cgroup v1)".into());
    }
    // The runtime's statistics are the process's to write: they are used only when they fit
    // in the cgroup's anonymous memory (within a tenth: what Go maps is not all resident).
    let go_total = |g: &GoMemory| {
        [g.heap_in_use, g.heap_free, g.stacks, g.runtime_other]
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b))
    };
    let go = match go {
        Some(g) if go_total(g) > charge.anon.saturating_add(charge.anon / 10) => {
            a.notes.push(
                "the Go runtime's own statistics (the process's to write) exceed the cgroup's \
                 anonymous memory by more than a tenth: not used"
                    .into(),
            );
            None
        }
        other => other,
    };
    if let Some(g) = go {
        let go_total = go_total(g);
        a.go_heap_in_use = Some(g.heap_in_use);
        a.go_heap_free = Some(g.heap_free);
        a.go_stacks = Some(g.stacks);
        a.go_runtime_other = Some(g.runtime_other);
        a.non_go_anon = charge.anon.saturating_sub(go_total);
        if go_total > charge.anon {
            a.notes.push(format!(
                "Go's runtime accounts {} bytes more than the cgroup's anonymous memory: memory \
                 it mapped but never touched, or swapped out",
                go_total - charge.anon
            ));
        }
    }
    let parts = a.parts().iter().fold(0u64, |s, p| s.saturating_add(p.1));
    if a.total > 0 && (parts.abs_diff(a.total) as f64) > ADDS_UP_WITHIN * a.total as f64 {
        a.notes.push(format!(
            "the parts add up to {parts} bytes, not {}: the rest is memory.stat's lines not \
             counted here (swap cache, shared memory counted twice, pages in flight)",
            a.total
        ));
    }
    a
}

impl Accounting {
    /// The parts that add up to `total`, named as the phrase names them.
    fn parts(&self) -> Vec<(&'static str, u64)> {
        let go = [
            self.go_heap_in_use,
            self.go_heap_free,
            self.go_stacks,
            self.go_runtime_other,
        ];
        let mut out = Vec::new();
        if go.iter().any(Option::is_some) {
            out.push(("Go heap", self.go_heap_in_use.unwrap_or(0)));
            out.push(("Go free heap", self.go_heap_free.unwrap_or(0)));
            out.push((
                "Go stacks and runtime",
                go[2].unwrap_or(0).saturating_add(go[3].unwrap_or(0)),
            ));
            out.push(("outside Go", self.non_go_anon));
        } else {
            out.push(("anonymous", self.non_go_anon));
        }
        out.push(("page cache", self.file));
        out.push(("kernel", self.kernel));
        out
    }

    /// The split in one phrase: "Go heap 71 %, outside Go 22 %, page cache 4 %, kernel 3 %"
    /// (parts under half a percent left out).
    pub fn phrase(&self) -> String {
        if self.total == 0 {
            return "no charge read".into();
        }
        self.parts()
            .into_iter()
            .map(|(name, b)| (name, 100.0 * b as f64 / self.total as f64))
            .filter(|(_, pct)| *pct >= 0.5)
            .map(|(name, pct)| format!("{name} {pct:.0} %"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// As JSON, for a profile's metadata: the numbers only (S3 keeps 2 KB of metadata per
    /// object; the notes are in the OOM record).
    pub fn to_json(&self) -> String {
        let numbers = Accounting {
            notes: Vec::new(),
            ..self.clone()
        };
        serde_json::to_string(&numbers).expect("numbers serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn go_parts_come_out_of_the_anonymous_memory() {
        let charge = Charge {
            anon: 900 * MIB,
            file: 40 * MIB,
            kernel: 30 * MIB,
            usage: 1000 * MIB,
            kernel_is_rest: false,
            note: None,
        };
        let go = GoMemory {
            heap_in_use: 700 * MIB,
            heap_free: 20 * MIB,
            heap_released: 5 * MIB,
            stacks: 4 * MIB,
            runtime_other: 26 * MIB,
        };
        let a = account(&charge, Some(&go));
        assert_eq!(a.non_go_anon, 150 * MIB);
        assert!(a.notes.is_empty(), "{:?}", a.notes);
        assert_eq!(
            a.phrase(),
            "Go heap 70 %, Go free heap 2 %, Go stacks and runtime 3 %, outside Go 15 %, \
             page cache 4 %, kernel 3 %"
        );
        let not_go = account(&charge, None);
        assert_eq!(not_go.non_go_anon, 900 * MIB);
        assert_eq!(
            not_go.phrase(),
            "anonymous 90 %, page cache 4 %, kernel 3 %"
        );
    }

    #[test]
    fn a_kill_read_late_uses_what_was_true_at_the_kill() {
        let charge = |anon: u64, usage: u64| Charge {
            anon: anon * MIB,
            file: 10 * MIB,
            kernel: 5 * MIB,
            usage: usage * MIB,
            kernel_is_rest: false,
            note: None,
        };
        let limit = 400 * MIB;
        // Read at the limit: as read.
        let at_limit = kill_charge(Some(charge(380, 395)), None, None, limit).unwrap();
        assert_eq!((at_limit.anon, at_limit.note), (380 * MIB, None));
        // Read after the victim left, the kernel's count of the victim lifts it.
        let floored = kill_charge(Some(charge(20, 35)), Some(370 * MIB), None, limit).unwrap();
        assert_eq!((floored.anon, floored.usage), (370 * MIB, 385 * MIB));
        assert!(floored.note.is_some());
        // Without that count, the last capture's figures stand in.
        let earlier = charge(300, 320);
        let stood_in = kill_charge(Some(charge(20, 35)), None, Some(earlier), limit).unwrap();
        assert_eq!(stood_in.anon, 300 * MIB);
        assert!(stood_in.note.unwrap().contains("last capture"));
        // A process's statistics that do not fit its cgroup are not used.
        let huge = GoMemory {
            heap_in_use: u64::MAX,
            ..GoMemory::default()
        };
        let a = account(&charge(380, 395), Some(&huge));
        assert_eq!((a.go_heap_in_use, a.non_go_anon), (None, 380 * MIB));
        assert!(
            a.notes.iter().any(|n| n.contains("not used")),
            "{:?}",
            a.notes
        );
    }

    #[test]
    fn what_does_not_add_up_is_said() {
        let charge = Charge {
            anon: 100 * MIB,
            file: 0,
            kernel: 0,
            usage: 200 * MIB,
            kernel_is_rest: false,
            note: None,
        };
        let a = account(&charge, None);
        assert!(a.notes[0].contains("add up to"), "{:?}", a.notes);
    }
}
