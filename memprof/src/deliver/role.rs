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

    /// Whether a failure ends the attempts: a webhook that refuses an alert (a 4xx, a
    /// redirect) will refuse it again, and retrying a thousand queued alerts every few
    /// minutes forever would only spam its owner's logs; profiles are kept whatever happens.
    pub(super) fn gives_up(self, e: &anyhow::Error) -> bool {
        self == Role::Alerts && super::sink::is_permanent(e)
    }
}
