//! Master configuration.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::MasterError;

/// Most offers one framework holds at once by default.
///
/// Without a limit every allocation cycle offers each free agent whole to
/// some framework, so a framework that revives gets nearly every free agent
/// and declines all but the one or two it uses: with 100 frameworks on
/// 10,000 agents that made 8.7 offers per launch and most of the leader's
/// work. A framework at the limit is skipped by allocation cycles until it
/// accepts, declines or loses an offer, and cheap cycles run every 50 ms
/// tick, so one that spreads over many agents gets this many more per
/// round trip. `--offer-limit none` restores Mesos's behaviour.
pub const DEFAULT_OFFER_LIMIT: usize = 4;

/// How a master runs. Build with [`MasterConfig::new`], adjust fields, then
/// [`MasterConfig::validate`].
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Directory for the Raft log and snapshots (`raft.redb`).
    pub data_dir: PathBuf,
    /// Address others use to reach this master ("host:port"); defaults to
    /// the listener's address.
    pub advertise_address: Option<String>,
    /// Interval between pings to each agent.
    pub agent_ping_interval: Duration,
    /// An agent that has not answered a ping for this long is unreachable:
    /// its tasks go TASK_UNREACHABLE (partition-aware frameworks) or
    /// TASK_LOST.
    pub agent_ping_timeout: Duration,
    /// After a master becomes leader, how long agents the registry holds
    /// reachable have to register with it before the ping timeout starts
    /// to count (at least `agent_ping_timeout` either way). An agent needs
    /// time to notice that its master failed and to find the new one; a
    /// failover must not make healthy agents unreachable. Mesos's
    /// `--agent_reregister_timeout` (10 minutes there; agents find berth's
    /// new leader within seconds).
    pub agent_reregister_timeout: Duration,
    /// Interval between HEARTBEAT events on framework streams.
    pub heartbeat_interval: Duration,
    /// How often the allocator runs a full cycle (filters expire, declined
    /// resources come back). Events such as a new agent also trigger a cycle.
    pub allocation_interval: Duration,
    /// Offers not used within this time are rescinded; `None` keeps them
    /// until used.
    pub offer_timeout: Option<Duration>,
    /// Most offers one framework holds at once; `None` is no limit (as in
    /// Mesos). Default [`DEFAULT_OFFER_LIMIT`]. See
    /// `AllocatorConfig::offer_limit`.
    pub offer_limit: Option<usize>,
    /// Default `refuse_seconds` of a decline without filters.
    pub default_refuse: Duration,
    /// How many completed tasks the registry keeps for display.
    pub max_completed_tasks: usize,
    /// Log entries kept before the registry writes a snapshot and compacts.
    pub snapshot_every: u64,
    /// This master's Raft id (1 or more).
    pub id: u64,
    /// The cluster's masters at bootstrap, as (Raft id, address), this one
    /// included. Empty means a one-master cluster. Only read when the data
    /// directory holds no Raft state yet; later membership changes go through
    /// the operator API.
    pub peers: Vec<(u64, String)>,
    /// Interval of the Raft clock.
    pub raft_tick: Duration,
    /// Raft ticks without a leader's heartbeat before an election.
    pub election_ticks: usize,
    /// Raft ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Start without bootstrapping a Raft group: this master waits to be
    /// added to an existing group (operator AddMember) and receives its
    /// state from the leader.
    pub join: bool,
    /// Fault injection for tests: links between masters that are cut.
    pub raft_faults: crate::raft::transport::Faults,
}

impl MasterConfig {
    /// Defaults in the spirit of Mesos, with shorter intervals suited to a
    /// small cluster.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            advertise_address: None,
            agent_ping_interval: Duration::from_secs(1),
            agent_ping_timeout: Duration::from_secs(15),
            agent_reregister_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            allocation_interval: Duration::from_secs(1),
            offer_timeout: Some(Duration::from_secs(60)),
            offer_limit: Some(DEFAULT_OFFER_LIMIT),
            default_refuse: Duration::from_secs(5),
            max_completed_tasks: 1000,
            snapshot_every: 10_000,
            id: 1,
            peers: Vec::new(),
            raft_tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            join: false,
            raft_faults: crate::raft::transport::Faults::default(),
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`MasterError::Config`] naming the offending setting.
    pub fn validate(self) -> Result<Self, MasterError> {
        let positive = [
            ("agent_ping_interval", self.agent_ping_interval),
            ("agent_ping_timeout", self.agent_ping_timeout),
            ("agent_reregister_timeout", self.agent_reregister_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("allocation_interval", self.allocation_interval),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(MasterError::Config(format!("{name} must be positive")));
            }
        }
        if self.agent_ping_timeout < self.agent_ping_interval {
            return Err(MasterError::Config(
                "agent_ping_timeout must be at least agent_ping_interval".into(),
            ));
        }
        if self.offer_limit == Some(0) {
            return Err(MasterError::Config(
                "offer_limit must be at least 1 (leave it unset for no limit)".into(),
            ));
        }
        if self.offer_timeout.is_some_and(|d| d.is_zero()) {
            return Err(MasterError::Config("offer_timeout must be positive".into()));
        }
        if self.id == 0 {
            return Err(MasterError::Config("id must be at least 1".into()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (id, address) in &self.peers {
            if *id == 0 || !ids.insert(*id) {
                return Err(MasterError::Config(format!(
                    "peer id {id} is zero or repeated"
                )));
            }
            if address.trim().is_empty() {
                return Err(MasterError::Config(format!("peer {id} has no address")));
            }
        }
        if !self.peers.is_empty() && !ids.contains(&self.id) {
            return Err(MasterError::Config(format!(
                "the peers list must include this master (id {})",
                self.id
            )));
        }
        if self.raft_tick.is_zero()
            || self.heartbeat_ticks == 0
            || self.election_ticks <= self.heartbeat_ticks
        {
            return Err(MasterError::Config(
                "raft_tick must be positive and election_ticks greater than heartbeat_ticks".into(),
            ));
        }
        if self.snapshot_every == 0 {
            return Err(MasterError::Config(
                "snapshot_every must be positive".into(),
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(MasterConfig::new("/tmp/x").validate().is_ok());
    }

    #[test]
    fn rejects_zero_and_inverted_intervals() {
        let mut c = MasterConfig::new("/tmp/x");
        c.heartbeat_interval = Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("heartbeat_interval")
        );
        let mut c = MasterConfig::new("/tmp/x");
        c.agent_ping_timeout = Duration::from_millis(1);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("agent_ping_timeout")
        );
    }
}
