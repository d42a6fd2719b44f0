//! What capture keeps of each process — who it is and what it used (`seen`), whether it is Go
//! and where its heap is (`goheap`), its pprof endpoint (`http`) — as the daemon tells it of
//! processes appearing, changing and going.
use super::{goheap, seen::Proc, Capturer};
use crate::{
    assess::{
        scope::{Excluded, Scope},
        CgroupDir, Forget, ProcKey, Reading,
    },
    config::GoHeapMode,
};

impl Capturer {
    /// Records a reading (see `Seen::saw`): the scope's verdict, and whether it was the first.
    pub fn saw(
        &self,
        r: &Reading,
        scope: &Scope,
        cgroup: impl FnOnce() -> (String, Option<CgroupDir>),
    ) -> (Result<(), Excluded>, bool) {
        self.seen.saw(r, scope, cgroup)
    }

    /// A process watched for the first time: finding out whether it is Go and where its
    /// endpoint is starts in the background.
    pub fn discover(&self, key: ProcKey, comm: String) {
        self.goheap.discover(key, comm.clone());
        if self.go_heap != GoHeapMode::Memory {
            self.endpoints.discover(key, comm);
        }
    }

    /// Finds out now, waiting for it, whether the process is Go and where its endpoint is
    /// (probing its ports): for `memprof capture`, where the wait is worth it.
    pub async fn discover_now(&self, key: ProcKey, comm: &str) -> anyhow::Result<()> {
        if self.go_heap == GoHeapMode::Memory {
            return Ok(());
        }
        let (go, name) = (self.goheap.clone(), comm.to_string());
        tokio::task::spawn_blocking(move || go.ensure(key, &name)).await?;
        self.endpoints.find(key, comm, true).await;
        Ok(())
    }

    /// Whether a profile can be taken of the process: it serves one, or it is Go.
    pub fn serves_profile(&self, key: ProcKey) -> bool {
        self.endpoints.get(key).is_some() || self.goheap.is_go(key) == Some(true)
    }

    /// The newest process with this PID, as last seen.
    pub fn newest(&self, pid: u32) -> Option<(ProcKey, Proc)> {
        self.seen.newest(pid)
    }

    /// Records the container's working set as just read, for the OOM record.
    pub fn note_working_set(&self, key: ProcKey, bytes: Option<u64>) {
        self.seen.working_set(key, bytes);
    }

    /// A glance found the process as it was (`LoopState::unchanged`): its RSS now, and its
    /// container's working set.
    pub fn glanced(&self, key: ProcKey, rss: u64, working_set: Option<u64>) {
        self.seen.rss(key, rss);
        self.seen.working_set(key, working_set);
    }

    /// Reads, at one moment, the container's charge (`memory.stat`) and, for a discovered Go
    /// process, the Go runtime's own statistics (24 words, a `process_vm_readv` each six), for
    /// the memory accounting in the capture's metadata. Nothing of a process's memory is read
    /// with `endpoint-only`.
    pub(super) fn note_memory(&self, pid: u32, key: ProcKey) {
        let Some(dir) = self.seen.get(key).and_then(|p| p.cgroup_dir) else {
            return self.seen.memory(key, None);
        };
        let go = match self.go_heap {
            GoHeapMode::EndpointOnly => None,
            _ => self.goheap.by_pid(key.pid).filter(|f| f.key == key),
        };
        let memory = go.and_then(|found| {
            let place = found.go.stats?;
            let words = goheap::memstats::read(pid, &place)?;
            Some(goheap::memstats::decode(&place, &words))
        });
        let charge = crate::cgroup::charge::charge(std::slice::from_ref(&dir));
        self.seen.memory(key, charge.map(|c| (c, memory)));
    }

    /// Discovery's sweep for processes still without an endpoint, at a sweep that did not list
    /// the processes (and so forgets none).
    pub fn rediscover(&self) {
        self.endpoints.sweep(|_| true);
    }

    /// Forgets processes. After an exec only who it is goes (its command line and cgroup are
    /// read afresh); its Go discovery and endpoint are checked again when asked (the
    /// registry compares the executable), and go with the process. Exited processes' Go
    /// entries linger one more listing sweep: their at-kill profile names what was stored
    /// before.
    pub fn forget(&self, which: Forget<'_>) {
        let alive = |k: &ProcKey| !which.covers(k);
        if matches!(which, Forget::Exited(_)) {
            self.goheap.sweep(alive);
            self.endpoints.sweep(alive);
            self.episodes.lock().expect("episodes").retain(alive);
        }
        self.seen.retain(alive);
    }
}
