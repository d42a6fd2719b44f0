//! One container's fork storm against a node-wide memprof's kernel map: the storm, in a PID
//! namespace of its own as every container is, takes at most its group's share of `PROCS`
//! (the rest of its processes are refused and counted, and judged again after a recount), and
//! a process of another container met afterwards is still followed and its crossing reported.
use std::{
    os::unix::fs::MetadataExt,
    process::{Child, Command, Stdio},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use memprof::{assess::Assessor, kernel::Hook};

use crate::{
    bpf::{crossing, load, Loaded},
    common::*,
};

/// A map size no other test uses, to find this test's `PROCS` among the node's maps.
const MAX_PROCS: u32 = 1000;

#[test]
fn a_fork_storm_takes_only_its_share_of_the_kernel_map() {
    if !require(have("unshare"), "unshare (util-linux)") {
        return;
    }
    let Some(go) = go_service() else { return };
    let Some(Loaded { rt, arm, mut rx }) = load(Hook::Btf, MAX_PROCS) else {
        return;
    };
    let share = memprof::kernel::group_share(MAX_PROCS);
    let (_, refused_before) = arm.refused();
    let n = 3 * share;
    let script = format!("for i in $(seq {n}); do sleep 300 & done; echo ready; wait");
    let mut storm = in_own_pidns(&["sh", "-c", &script]);
    first_line(&mut storm);
    let group = pidns_of(child_of(storm.id()));
    wait_for(
        "the storm's processes beyond its share to be refused",
        Duration::from_secs(30),
        || arm.refused().1 - refused_before >= n - share,
    );
    let held = entries_of(group);
    let (full, refused) = arm.refused();
    println!(
        "storm of {} processes: {held} in the kernel's map (share {share} of {MAX_PROCS}), \
         {} refusals, map full {full} times",
        n + 1,
        refused - refused_before
    );
    assert!(
        held <= share && held >= share / 2,
        "{held} of share {share}"
    );
    assert_eq!(full, 0, "the storm filled the whole map");
    // The sweep's recount lets every refused process be judged again (once it next changes
    // its RSS): none stays with the safety net for its life because of one burst.
    let again = arm.recount();
    println!("recounted: {again} refused processes to be judged again");
    assert!(again as u64 >= n - share, "{again}");
    assert_eq!(entries_of(group), held);

    // Another container's service, met after the storm: followed, armed, reported.
    let mut honest = in_own_pidns(&[
        go.to_str().unwrap(),
        "-addr",
        "127.0.0.1:0",
        "-rate",
        "64",
        "-delay",
        "300ms",
    ]);
    first_line(&mut honest);
    let pid = child_of(honest.id());
    let mut assessor = Assessor::new(None).unwrap();
    let start = assessor.read(pid).expect("the service readable in procfs");
    let level = start.rss + (96 << 20);
    let event = crossing(&rt, &arm, &mut rx, pid, &start, level);
    println!("the honest service's crossing: {:?}", event.source);
    for mut c in [storm, honest] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `cmd` as PID 1 of a new PID namespace (killed with `unshare`), its output piped.
fn in_own_pidns(cmd: &[&str]) -> Child {
    Command::new("unshare")
        .args(["--fork", "--pid", "--kill-child"])
        .args(cmd)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The one child of `pid` (what `unshare --fork` runs).
fn child_of(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    children.split_whitespace().next().unwrap().parse().unwrap()
}

fn pidns_of(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .unwrap()
        .ino() as u32
}

/// Entries of `group` in this test's `PROCS` map.
fn entries_of(group: u32) -> u64 {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some("PROCS") && m.max_entries() == MAX_PROCS)
        .filter_map(|m| MapData::from_id(m.id()).ok())
        .filter_map(|d| {
            HashMap::<_, u32, memprof_common::ProcState>::try_from(Map::HashMap(d)).ok()
        })
        .flat_map(|map| map.iter().filter_map(Result::ok).collect::<Vec<_>>())
        .filter(|(_, state)| state.group == group)
        .count() as u64
}
