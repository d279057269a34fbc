//! [`FrameworkConfig`]: who the framework is and how the SDK behaves.

use std::time::Duration;

use berth_proto as pb;
use berth_scheduler_core::{FrameworkId, Role};

use crate::SdkError;

/// Default [`FrameworkConfig::heartbeat_timeout`]: a frozen master is
/// noticed within 5 s.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);

/// Largest failover timeout accepted: one year. Longer values are almost
/// certainly a unit mistake.
pub const MAX_FAILOVER_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Describes a framework to the master and tunes the SDK.
///
/// Build it with [`FrameworkConfig::new`] and the builder-style setters. The
/// fields are private and the struct is `#[non_exhaustive]`, so a new option
/// (with its default) is not a breaking change.
///
/// ```
/// use std::time::Duration;
/// use berth_sdk::FrameworkConfig;
///
/// let config = FrameworkConfig::new("hello")
///     .roles(["dev"])
///     .failover_timeout(Duration::from_secs(60));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FrameworkConfig {
    /// See [`FrameworkConfig::new`].
    pub(crate) name: String,
    /// See [`FrameworkConfig::roles`].
    pub(crate) roles: Vec<String>,
    /// See [`FrameworkConfig::failover_timeout`].
    pub(crate) failover_timeout: Duration,
    /// See [`FrameworkConfig::partition_aware`].
    pub(crate) partition_aware: bool,
    /// See [`FrameworkConfig::hostname`].
    pub(crate) hostname: Option<String>,
    /// See [`FrameworkConfig::framework_id`].
    pub(crate) framework_id: Option<String>,
    /// See [`FrameworkConfig::auto_acknowledge`].
    pub(crate) auto_acknowledge: bool,
    /// See [`FrameworkConfig::connect_timeout`].
    pub(crate) connect_timeout: Duration,
    /// See [`FrameworkConfig::call_timeout`].
    pub(crate) call_timeout: Duration,
    /// See [`FrameworkConfig::heartbeat_timeout`].
    pub(crate) heartbeat_timeout: Duration,
    /// See [`FrameworkConfig::reconcile_on_resubscribe`].
    pub(crate) reconcile_on_resubscribe: bool,
    /// Settings the user made explicitly (not left at their defaults), by
    /// name: the framework runtime says which of them it overrides.
    pub(crate) explicit: Vec<&'static str>,
}

impl FrameworkConfig {
    /// A config with the given human-readable name (it must not be empty)
    /// and defaults: default role, no failover timeout, not
    /// partition-aware, auto-acknowledge on.
    pub fn new(name: impl Into<String>) -> Self {
        FrameworkConfig {
            name: name.into(),
            roles: Vec::new(),
            failover_timeout: Duration::ZERO,
            partition_aware: false,
            hostname: None,
            framework_id: None,
            auto_acknowledge: true,
            connect_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            explicit: Vec::new(),
            reconcile_on_resubscribe: true,
        }
    }

    /// Sets the roles to subscribe to; none (the default) means the default
    /// role `"*"`.
    #[must_use]
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Sets how long the master keeps the framework and its tasks after the
    /// event stream disconnects (default zero: its tasks are killed on
    /// disconnect).
    #[must_use]
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// Sets whether the framework understands `TASK_UNREACHABLE` and
    /// `TASK_UNKNOWN` (default `false`).
    #[must_use]
    pub fn partition_aware(mut self, yes: bool) -> Self {
        self.partition_aware = yes;
        self.explicit.push("partition_aware");
        self
    }

    /// Sets the hostname shown by the master.
    #[must_use]
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Resumes the existing framework `id` (failover) instead of
    /// registering a new one (the default).
    #[must_use]
    pub fn framework_id(mut self, id: impl Into<String>) -> Self {
        self.framework_id = Some(id.into());
        self
    }

    /// Turns automatic acknowledgement of agent status updates on or off
    /// (default on); see [`Events`](crate::Events) for when. With `false`,
    /// call [`Framework::acknowledge`](crate::Framework::acknowledge).
    #[must_use]
    pub fn auto_acknowledge(mut self, yes: bool) -> Self {
        self.auto_acknowledge = yes;
        self.explicit.push("auto_acknowledge");
        self
    }

    /// Sets how long [`subscribe`](crate::subscribe) keeps trying to reach
    /// a leading master before giving up (default 30 s). Re-subscription
    /// after a disconnect retries for as long as the
    /// [`Events`](crate::Events) stream is alive.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long a call waits for the master's answer (default 10 s,
    /// the master's own limit for committing a change). A call whose event
    /// stream is lost meanwhile ends at once with
    /// [`SdkError::ConnectionLost`].
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sets how long the event stream may stay silent (no event, not even
    /// a heartbeat) before the SDK takes the master as lost — frozen, or
    /// cut off — and re-subscribes to whichever master leads (default 4 s;
    /// never less than two of the master's heartbeat intervals, 1 s each
    /// by default).
    #[must_use]
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// Turns the implicit reconciliation after a resuming subscription on
    /// or off (default on). After every subscription that resumes the
    /// framework (a re-subscription, or
    /// [`FrameworkConfig::framework_id`] given), the SDK asks the master
    /// for the latest state of the framework's tasks: of the tasks it
    /// believes live (launched through it, or reported in a non-terminal
    /// state, and not reported ended since), or, when it knows of none, of
    /// every task the master holds. Updates the master made while the
    /// framework was away, such as `TASK_LOST` for a task of a removed
    /// agent, are not sent again; this is how the framework hears of them.
    /// Turn it off for a framework that reconciles on
    /// [`Event::Subscribed`](crate::Event::Subscribed) itself.
    #[must_use]
    pub fn reconcile_on_resubscribe(mut self, yes: bool) -> Self {
        self.reconcile_on_resubscribe = yes;
        self
    }

    /// Checks the config: non-empty name, valid and distinct roles, a valid
    /// framework id if given, a failover timeout of at most
    /// [`MAX_FAILOVER_TIMEOUT`], non-zero timeouts.
    ///
    /// # Errors
    /// [`SdkError::InvalidConfig`] naming the first problem.
    pub fn validate(&self) -> Result<(), SdkError> {
        let invalid = |msg: String| Err(SdkError::InvalidConfig(msg));
        if self.name.trim().is_empty() {
            return invalid("framework name must not be empty".to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        for role in &self.roles {
            if let Err(e) = Role::new(role.as_str()) {
                return invalid(e.to_string());
            }
            if !seen.insert(role.as_str()) {
                return invalid(format!("role {role:?} given more than once"));
            }
        }
        if let Some(id) = &self.framework_id
            && let Err(e) = FrameworkId::new(id.as_str())
        {
            return invalid(e.to_string());
        }
        if self.failover_timeout > MAX_FAILOVER_TIMEOUT {
            return invalid(format!(
                "failover timeout {:?} is longer than one year",
                self.failover_timeout
            ));
        }
        if self.connect_timeout.is_zero()
            || self.call_timeout.is_zero()
            || self.heartbeat_timeout.is_zero()
        {
            return invalid(
                "connect, call and heartbeat timeouts must be greater than zero".to_owned(),
            );
        }
        Ok(())
    }

    /// The wire `FrameworkInfo` for a (re-)subscription with `id` (empty
    /// for a new framework).
    pub(crate) fn to_info(&self, id: &str) -> pb::FrameworkInfo {
        pb::FrameworkInfo {
            id: id.to_owned(),
            name: self.name.clone(),
            roles: self.roles.clone(),
            failover_timeout_seconds: self.failover_timeout.as_secs_f64(),
            partition_aware: self.partition_aware,
            hostname: self.hostname.clone().unwrap_or_default(),
            create: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &FrameworkConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let c = FrameworkConfig::new("x");
        assert!(c.auto_acknowledge);
        assert!(c.roles.is_empty());
        c.validate().unwrap();
        FrameworkConfig::new("x")
            .roles(["*", "dev", "a.b"])
            .validate()
            .unwrap();
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(err(&FrameworkConfig::new("")).contains("name"));
        assert!(err(&FrameworkConfig::new("  ")).contains("name"));
        assert!(err(&FrameworkConfig::new("x").roles(["-dev"])).contains("role"));
        assert!(err(&FrameworkConfig::new("x").roles(["a/b"])).contains("role"));
        assert!(err(&FrameworkConfig::new("x").roles([""])).contains("role"));
        assert!(err(&FrameworkConfig::new("x").roles(["a", "a"])).contains("more than once"));
        assert!(err(&FrameworkConfig::new("x").framework_id("a b")).contains("framework id"));
        let forever = FrameworkConfig::new("x").failover_timeout(Duration::MAX);
        assert!(err(&forever).contains("failover"));
        let zero = FrameworkConfig::new("x").call_timeout(Duration::ZERO);
        assert!(err(&zero).contains("timeout"));
        let zero = FrameworkConfig::new("x").heartbeat_timeout(Duration::ZERO);
        assert!(err(&zero).contains("heartbeat"));
        assert!(matches!(
            FrameworkConfig::new("").validate(),
            Err(SdkError::InvalidConfig(_))
        ));
    }

    #[test]
    fn info() {
        let c = FrameworkConfig::new("x")
            .roles(["r"])
            .failover_timeout(Duration::from_millis(1500))
            .partition_aware(true)
            .hostname("h");
        let i = c.to_info("fw-1");
        assert_eq!(i.id, "fw-1");
        assert_eq!(i.roles, ["r"]);
        assert!((i.failover_timeout_seconds - 1.5).abs() < 1e-9);
        assert!(i.partition_aware);
        assert_eq!(i.hostname, "h");
    }
}
