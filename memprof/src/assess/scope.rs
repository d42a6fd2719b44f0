//! Which processes memprof watches: every process it can see, except itself (the daemon skips
//! its own PID) and a pod's pause container (`pause`, which only holds the namespaces);
//! `MEMPROF_INCLUDE_COMM` / `MEMPROF_EXCLUDE_COMM` (command names) and
//! `MEMPROF_INCLUDE_CGROUP` / `MEMPROF_EXCLUDE_CGROUP` (substrings of the cgroup path) narrow
//! that. Exclusion wins over inclusion; an empty include list includes everything.

/// The rule that leaves a process out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Excluded {
    /// A pod's pause container, which only holds the namespaces.
    Pause,
    ExcludeComm,
    ExcludeCgroup,
    IncludeComm,
    IncludeCgroup,
}

impl Excluded {
    /// The rule as the log names it: the variable that says so.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "the pod's pause container",
            Self::ExcludeComm => "MEMPROF_EXCLUDE_COMM",
            Self::ExcludeCgroup => "MEMPROF_EXCLUDE_CGROUP",
            Self::IncludeComm => "MEMPROF_INCLUDE_COMM",
            Self::IncludeCgroup => "MEMPROF_INCLUDE_CGROUP",
        }
    }
}

/// The filters, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub include_comm: Vec<String>,
    pub exclude_comm: Vec<String>,
    pub include_cgroup: Vec<String>,
    pub exclude_cgroup: Vec<String>,
}

impl Scope {
    /// `Err(rule)` names the rule that leaves the process out.
    pub fn admits(&self, comm: &str, cgroup: &str) -> Result<(), Excluded> {
        if comm == "pause" {
            return Err(Excluded::Pause);
        }
        if self.exclude_comm.iter().any(|c| c == comm) {
            return Err(Excluded::ExcludeComm);
        }
        if self
            .exclude_cgroup
            .iter()
            .any(|c| cgroup.contains(c.as_str()))
        {
            return Err(Excluded::ExcludeCgroup);
        }
        if !self.include_comm.is_empty() && !self.include_comm.iter().any(|c| c == comm) {
            return Err(Excluded::IncludeComm);
        }
        if !self.include_cgroup.is_empty()
            && !self
                .include_cgroup
                .iter()
                .any(|c| cgroup.contains(c.as_str()))
        {
            return Err(Excluded::IncludeCgroup);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    #[test]
    fn everything_but_pause_by_default() {
        let s = Scope::default();
        assert_eq!(s.admits("cart", "/kubepods/pod1/abc"), Ok(()));
        assert_eq!(
            s.admits("pause", "/kubepods/pod1/def"),
            Err(Excluded::Pause)
        );
    }

    #[test]
    fn exclusion_wins_and_inclusion_narrows() {
        let s = Scope {
            include_comm: list("cart,checkout"),
            exclude_comm: list("checkout"),
            include_cgroup: list("kubepods"),
            exclude_cgroup: list("/besteffort/"),
        };
        assert_eq!(s.admits("cart", "/kubepods/burstable/pod1/a"), Ok(()));
        assert_eq!(
            s.admits("checkout", "/kubepods/burstable/pod1/a"),
            Err(Excluded::ExcludeComm)
        );
        assert_eq!(
            s.admits("cart", "/kubepods/besteffort/pod1/a"),
            Err(Excluded::ExcludeCgroup)
        );
        assert_eq!(
            s.admits("sidecar", "/kubepods/burstable/pod1/a"),
            Err(Excluded::IncludeComm)
        );
        assert_eq!(
            s.admits("cart", "/system.slice/cart.service"),
            Err(Excluded::IncludeCgroup)
        );
    }
}
