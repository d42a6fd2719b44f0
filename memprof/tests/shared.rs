//! Many pods, one kernel cost: memprof sidecars in eight pods (eight PID namespaces; four under
//! emulation) on one node share one set of kernel programs through a real bpffs, each hearing
//! only of its own pod; the set survives its creator, recovers from a SIGKILLed tenant and from
//! an incomplete set, leaves its hooks the moment its last instance is SIGKILLed, and the last
//! one out leaves nothing attached or pinned. Kernel objects are counted relative to what was
//! there before.
use std::{path::PathBuf, time::Duration};

use crate::common::{
    bpffs::{programs_named, Bpffs},
    pod::Pod,
    sidecar::*,
    *,
};

struct Tenant {
    memprof: Sidecar,
    s3: S3Server,
    pod: Pod,
}

fn tenant(name: &str, index: u8, bpffs: &Bpffs) -> Tenant {
    let pod = Pod::new(name, index);
    let s3 = S3Server::start_on("profiles", &pod.host_addr());
    let memprof = Sidecar::start(&pod, &s3, &[("MEMPROF_BPFFS", &bpffs.path())]);
    Tenant { memprof, s3, pod }
}

impl Tenant {
    /// A leaking service, profiled by this tenant's sidecar. Its pod PID is whatever the
    /// kernel hands out: memprof's own threads come and go in the same PID namespace.
    fn leak_is_captured(&self) -> u32 {
        let (limit_mib, rate) = scaled(512, 200);
        let app = service(&self.pod, "app", limit_mib * MIB, &["-rate", &rate], None);
        let pid = app.pid;
        let key = wait_key(&self.s3.client(), pid, &app, &[], &|| self.memprof.output());
        assert!(key.contains(&format!("/{}/", self.pod.name)), "{key}");
        app.wait_oom_kill();
        // The heap walk at the kill ran in this tenant's own program, into its own buffer.
        self.memprof.wait_for_log(
            &format!("at-kill profile stored pid={pid} "),
            Duration::from_secs(20),
        );
        app.host_pid
    }
}

#[test]
fn sidecars_on_one_node_share_one_set_of_kernel_programs() {
    if prerequisites().is_none() {
        return;
    }
    let bpffs = Bpffs::mount();
    let baseline = Baseline::now();
    // Pod 0 creates the set and leaves, 1 and 2 leak, 3 is SIGKILLed: four at least.
    let pods: u8 = match std::env::var("MEMPROF_E2E_PODS") {
        Ok(v) => v.parse().expect("MEMPROF_E2E_PODS: a number of pods"),
        Err(_) => 8,
    };
    assert!((4..=8).contains(&pods), "MEMPROF_E2E_PODS={pods}: 4 to 8");
    let mut tenants: Vec<Option<Tenant>> = (0..pods)
        .map(|i| Some(tenant(&format!("shared-{i}"), 40 + i, &bpffs)))
        .collect();
    let log = |i: usize| tenants[i].as_ref().unwrap().memprof.output();
    assert!(
        log(0).contains("created the node's shared set"),
        "{}",
        log(0)
    );
    for i in 1..tenants.len() {
        assert!(
            log(i).contains("joined the node's shared set"),
            "{}",
            log(i)
        );
    }
    // One rss_stat program attached for all instances, each with its own emitter; the five
    // links are held by the live instances, not pinned.
    let pods = pods as usize;
    assert_eq!(baseline.rss_stat(), 1);
    assert_eq!(baseline.emitters(), pods);
    for i in 0..pods {
        assert!(log(i).contains("holding 5 of its links"), "{}", log(i));
    }
    let dir: Vec<_> = bpffs.pins();
    assert!(!dir.iter().any(|p| p.starts_with("link_")), "{dir:?}");
    assert_eq!(
        dir.iter().filter(|p| p.starts_with("tenant-")).count(),
        pods,
        "{dir:?}"
    );

    // The instance that created the set leaves; the others keep detecting, each its own pod.
    let first = tenants[0].take().unwrap();
    assert_eq!(first.memprof.stop(), Some(0));
    let leaked: Vec<(usize, u32)> = [1, 2]
        .into_iter()
        .map(|i| (i, tenants[i].as_ref().unwrap().leak_is_captured()))
        .collect();
    for (i, t) in tenants.iter().enumerate().skip(1) {
        let t = t.as_ref().unwrap();
        let keys = t.s3.client().keys();
        let own = leaked.iter().any(|&(owner, _)| owner == i);
        assert_eq!(!keys.is_empty(), own, "pod {i}'s bucket: {keys:?}");
        for key in keys {
            assert!(key.contains(&format!("/{}/", t.pod.name)), "{key}");
        }
        for &(owner, host_pid) in leaked.iter().filter(|&&(owner, _)| owner != i) {
            assert!(
                !t.memprof.output().contains(&format!("host_pid={host_pid}")),
                "sidecar {i} heard of pod {owner}'s service"
            );
        }
    }

    // SIGKILL one: its slot is reclaimed, and the next start works.
    let killed = tenants[3].take().unwrap();
    killed.memprof.container.signal(libc::SIGKILL);
    drop(killed);
    let next = tenant("shared-next", 48, &bpffs);
    assert!(next
        .memprof
        .output()
        .contains("joined the node's shared set"));
    // Reclaimed by the new instance as it starts, or by a live one's periodic check before.
    wait_for(
        "the killed tenant's slot to be reclaimed",
        Duration::from_secs(20),
        || {
            tenants
                .iter()
                .flatten()
                .chain([&next])
                .any(|t| t.memprof.output().contains("reclaimed the slot"))
        },
    );
    next.leak_is_captured();
    wait_for(
        "the killed tenant's programs to be freed",
        Duration::from_secs(10),
        || baseline.emitters() == pods - 1,
    );

    // Everyone leaves, the last one by SIGKILL: nothing holds the links any more, so the
    // programs leave their hooks at once (page faults stop paying); the maps stay pinned until
    // the next start replaces them.
    for t in tenants.iter_mut().filter_map(Option::take) {
        assert_eq!(t.memprof.stop(), Some(0));
    }
    next.memprof.container.signal(libc::SIGKILL);
    drop(next);
    wait_for(
        "the SIGKILLed last instance's programs to leave rss_stat",
        Duration::from_secs(10),
        || baseline.rss_stat() == 0,
    );
    assert!(
        bpffs.pins().iter().any(|p| p == "PROCS"),
        "{:?}",
        bpffs.pins()
    );
    let last = tenant("shared-last", 49, &bpffs);
    let out = last.memprof.output();
    assert!(out.contains("that no live memprof holds"), "{out}");
    assert!(out.contains("created the node's shared set"), "{out}");
    let group = bpffs
        .pins()
        .into_iter()
        .find(|p| p.starts_with("abi"))
        .unwrap();
    assert_eq!(last.memprof.stop(), Some(0));
    assert_all_gone(&bpffs, &baseline);

    // A set whose creator died while creating it (here: an empty directory) is replaced.
    let group_dir: PathBuf = bpffs.root().join("memprof").join(&group);
    std::fs::create_dir(&group_dir).unwrap();
    let again = tenant("shared-again", 50, &bpffs);
    let out = again.memprof.output();
    assert!(out.contains("that no live memprof holds"), "{out}");
    assert!(out.contains("created the node's shared set"), "{out}");
    assert_eq!(again.memprof.stop(), Some(0));
    assert_all_gone(&bpffs, &baseline);
}

/// The node's programs before the test: other memprof instances (an earlier test's, a real
/// node's) may have theirs loaded, and this test counts only its own.
struct Baseline {
    rss_stat: usize,
    emitters: usize,
}

impl Baseline {
    /// Once an earlier test's memprof, killed as that test ended, has had its programs freed
    /// (the kernel frees them a moment after the last holder dies): counted in the baseline
    /// and freed after it, they would hide this test's own. A memprof that keeps running (a
    /// real node's) is waited for 10 s, then counted.
    fn now() -> Self {
        let settled = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = (programs_named("rss_stat_btf"), programs_named("emit_btf"));
        while std::time::Instant::now() < settled && last != (0, 0) {
            std::thread::sleep(Duration::from_millis(200));
            last = (programs_named("rss_stat_btf"), programs_named("emit_btf"));
        }
        Baseline {
            rss_stat: programs_named("rss_stat_btf"),
            emitters: programs_named("emit_btf"),
        }
    }

    /// `rss_stat_btf` programs loaded since (an attached one is loaded; one no link holds is
    /// freed).
    fn rss_stat(&self) -> usize {
        programs_named("rss_stat_btf").saturating_sub(self.rss_stat)
    }

    fn emitters(&self) -> usize {
        programs_named("emit_btf").saturating_sub(self.emitters)
    }
}

/// Nothing pinned, and no program of the set left loaded (freeing is deferred a moment).
fn assert_all_gone(bpffs: &Bpffs, baseline: &Baseline) {
    assert_eq!(bpffs.pins(), Vec::<String>::new());
    wait_for("the programs to be freed", Duration::from_secs(10), || {
        baseline.rss_stat() == 0 && baseline.emitters() == 0
    });
}
