//! Which processes memprof watches: every process it can see, except itself (the daemon skips
//! its own PID) and a pod's pause container (`pause`, which only holds the namespaces);
//! `MEMPROF_INCLUDE_COMM` / `MEMPROF_EXCLUDE_COMM` (command names) and
//! `MEMPROF_INCLUDE_CGROUP` / `MEMPROF_EXCLUDE_CGROUP` (substrings of the cgroup path) narrow
//! that. Exclusion wins over inclusion; an empty include list includes everything.

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
    pub fn admits(&self, comm: &str, cgroup: &str) -> Result<(), &'static str> {
        if comm == "pause" {
            return Err("the pod's pause container");
        }
        if self.exclude_comm.iter().any(|c| c == comm) {
            return Err("MEMPROF_EXCLUDE_COMM");
        }
        if self
            .exclude_cgroup
            .iter()
            .any(|c| cgroup.contains(c.as_str()))
        {
            return Err("MEMPROF_EXCLUDE_CGROUP");
        }
        if !self.include_comm.is_empty() && !self.include_comm.iter().any(|c| c == comm) {
            return Err("MEMPROF_INCLUDE_COMM");
        }
        if !self.include_cgroup.is_empty()
            && !self
                .include_cgroup
                .iter()
                .any(|c| cgroup.contains(c.as_str()))
        {
            return Err("MEMPROF_INCLUDE_CGROUP");
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
            Err("the pod's pause container")
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
            Err("MEMPROF_EXCLUDE_COMM")
        );
        assert_eq!(
            s.admits("cart", "/kubepods/besteffort/pod1/a"),
            Err("MEMPROF_EXCLUDE_CGROUP")
        );
        assert_eq!(
            s.admits("sidecar", "/kubepods/burstable/pod1/a"),
            Err("MEMPROF_INCLUDE_COMM")
        );
        assert_eq!(
            s.admits("cart", "/system.slice/cart.service"),
            Err("MEMPROF_INCLUDE_CGROUP")
        );
    }
}
