//! Whose words and metrics a deliverer uses.
/// What a deliverer carries: the profiles (to S3 or a directory), or the alerts to one
/// webhook. The same spool and retries; their own words in the log and their own metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Profiles,
    Alerts,
}

impl Role {
    pub(super) fn noun(self) -> &'static str {
        match self {
            Role::Profiles => "profile",
            Role::Alerts => "alert",
        }
    }

    pub(super) fn count(self, result: &'static str) {
        match self {
            Role::Profiles => crate::metrics::upload(result),
            Role::Alerts => crate::metrics::alert(result),
        }
    }
}
