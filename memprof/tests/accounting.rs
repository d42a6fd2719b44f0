//! Where the memory went: a Go service that maps 128 MiB outside Go's heap, then leaks in its
//! heap until the OOM killer takes it. The OOM record's `memory_accounting` (the Go runtime's
//! statistics as the kernel read them at the kill, and the container's `memory.stat`) shows
//! both, each within 5 % of what the service put there; the threshold profile's metadata
//! carries the accounting too, and the record's log line states the split in one phrase. The
//! record also says what grew from the first profile to the at-kill one: the leak. On
//! Go 1.27: before 1.22 the runtime maps a heap bitmap per 64 MiB arena, resident only where
//! pointers were written, which its statistics count whole (docs/configuration.md).
use std::{io::BufRead, time::Duration};

use crate::{
    common::*,
    goheap_oom::{prerequisites, reading_memory, wait_key},
};

const MIB: u64 = 1 << 20;
const OUTSIDE_MIB: u64 = 128;

fn within_5_percent(got: u64, want: u64, what: &str, record: &serde_json::Value) {
    let off = got.abs_diff(want) as f64 / want as f64;
    assert!(
        off <= 0.05,
        "{what}: {got} bytes, {:.1} % from the {want} put there\n{record:#}",
        off * 100.0
    );
}

#[test]
fn the_oom_record_says_where_the_memory_went() {
    let Some(go) = prerequisites("leaky", go::Toolchain::Current) else {
        return;
    };
    let (_s3, client, memprof) = reading_memory("accounting", "1Mi");
    let cg = MemCgroup::new("memprof-accounting", 384 * MIB);
    let outside = OUTSIDE_MIB.to_string();
    let args = [
        "-addr", "", "-rate", "100", "-delay", "1s", "-outside", &outside, "-report",
    ];
    let mut svc = cg.start(&go, &args);
    let pid = svc.id();
    let record_key = wait_key(&client, &format!("_pid-{pid}_oom.record.json"), &memprof);
    let _ = svc.wait();
    // What the leak held when it was killed: its last report.
    let held: u64 = std::io::BufReader::new(svc.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("held ")?.parse().ok())
        .last()
        .expect("the service reported what it held");
    let record: serde_json::Value = serde_json::from_slice(&client.get(&record_key)).unwrap();
    let a = &record["memory_accounting"];
    let field = |name: &str| {
        a[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in the record:\n{record:#}"))
    };
    println!("held {held}: {a:#}");
    within_5_percent(
        field("non_go_anon"),
        OUTSIDE_MIB * MIB,
        "memory outside Go",
        &record,
    );
    within_5_percent(field("go_heap_in_use"), held, "Go's heap in use", &record);
    let parts: u64 = [
        "go_heap_in_use",
        "go_heap_free",
        "go_stacks",
        "go_runtime_other",
        "non_go_anon",
        "file",
        "kernel",
    ]
    .iter()
    .map(|p| field(p))
    .sum();
    within_5_percent(parts, field("total"), "the parts' sum", &record);
    let line = memprof.wait_for_log(
        &format!("OOM record stored pid={pid} "),
        Duration::from_secs(10),
    );
    assert!(line.contains("memory=\"Go heap "), "{line}");
    assert!(line.contains("outside Go "), "{line}");
    let line = memprof.wait_for_log(
        &format!("at-kill profile stored pid={pid} "),
        Duration::from_secs(10),
    );
    assert!(
        line.contains("memory=\"Go heap "),
        "{line}\nmemprof said:\n{}",
        memprof.output()
    );
    // What grew from the threshold profile to the at-kill profile: the leak, named on the line
    // and first in the record, with its call path.
    assert!(line.contains("grew_most=\"main.leakyRetain +"), "{line}");
    let grew = &record["grew"];
    assert_eq!(grew[0]["function"], "main.leakyRetain", "{grew:#}");
    assert!(grew[0]["share"].as_f64().unwrap() > 90.0, "{grew:#}");
    // Profiles publish the heap as of the last GC: what grew between them is less than the
    // heap's growth between the two moments, but tens of megabytes here.
    assert!(grew[0]["bytes"].as_u64().unwrap() > 10 * MIB, "{grew:#}");
    assert_eq!(grew[0]["path"][1], "main.main", "{grew:#}");
    // The threshold profile (read from memory) carries the accounting of its moment.
    let threshold = wait_key(&client, &format!("_pid-{pid}_5"), &memprof);
    let meta = client.metadata(&threshold);
    let at_threshold: serde_json::Value = serde_json::from_str(
        meta.get("memory-accounting")
            .expect("memory-accounting metadata"),
    )
    .unwrap();
    assert!(
        at_threshold["go_heap_in_use"].as_u64().unwrap() > 0,
        "{at_threshold}"
    );
    within_5_percent(
        at_threshold["non_go_anon"].as_u64().unwrap(),
        OUTSIDE_MIB * MIB,
        "memory outside Go at the threshold",
        &record,
    );
}
