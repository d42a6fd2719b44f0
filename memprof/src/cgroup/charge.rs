//! What a memory cgroup's charge is made of, from its `memory.stat`: anonymous memory, page
//! cache and kernel memory, and the charge itself (v2 `memory.current`, v1
//! `memory.usage_in_bytes`). v1 has no kernel line: there it is what the charge holds beyond
//! the other two (the kernel's own memory is charged to the cgroup with them).
use serde::Serialize;

use super::Files;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Charge {
    pub anon: u64,
    pub file: u64,
    pub kernel: u64,
    pub usage: u64,
    /// The kernel's part is what is left of `usage` (v1), not a line of `memory.stat`.
    #[serde(skip)]
    pub kernel_is_rest: bool,
    /// How the charge was taken, when not simply read at its moment (an OOM kill reported
    /// after the victim began to free its memory).
    #[serde(skip)]
    pub note: Option<&'static str>,
}

/// The charge of the first view that has it.
pub fn charge<F: Files>(views: &[F]) -> Option<Charge> {
    views.iter().find_map(|v| {
        let usage = super::usage(std::slice::from_ref(v))?;
        parse(&v.read(0, "memory.stat")?, v.v2(), usage)
    })
}

/// `memory.stat`'s lines of one cgroup version, with its charge `usage`.
pub fn parse(stat: &str, v2: bool, usage: u64) -> Option<Charge> {
    let field = |name: &str| {
        stat.lines().find_map(|l| {
            let (k, n) = l.split_once(' ')?;
            (k == name).then(|| n.trim().parse::<u64>().ok())?
        })
    };
    if v2 {
        // `kernel` since 5.18; before, its parts.
        let kernel = field("kernel").unwrap_or_else(|| {
            [
                "kernel_stack",
                "pagetables",
                "sec_pagetables",
                "percpu",
                "sock",
                "vmalloc",
                "slab",
            ]
            .iter()
            .filter_map(|k| field(k))
            .sum()
        });
        return Some(Charge {
            anon: field("anon")?,
            file: field("file")?,
            kernel,
            usage,
            kernel_is_rest: false,
            note: None,
        });
    }
    // v1: the hierarchical totals (a container's cgroup may have children).
    let anon = field("total_rss")?;
    let file = field("total_cache")?;
    Some(Charge {
        anon,
        file,
        kernel: usage.saturating_sub(anon + file),
        usage,
        kernel_is_rest: true,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_versions_split_the_charge() {
        let v2 = "anon 734003200\nfile 41943040\nkernel 31457280\nsock 0\n";
        let c = super::parse(v2, true, 810_000_000).unwrap();
        assert_eq!((c.anon, c.file, c.kernel), (734003200, 41943040, 31457280));
        let old_v2 = "anon 100\nfile 20\nkernel_stack 3\npagetables 4\nslab 5\n";
        assert_eq!(super::parse(old_v2, true, 140).unwrap().kernel, 12);
        let v1 = "cache 1\nrss 2\ntotal_cache 4096\ntotal_rss 8192\n";
        let c = super::parse(v1, false, 20480).unwrap();
        assert_eq!((c.anon, c.file, c.kernel), (8192, 4096, 8192));
        assert!(c.kernel_is_rest);
        assert!(super::parse("anon 1\n", true, 2).is_none());
    }
}
