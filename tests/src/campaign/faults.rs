//! Faults: which, in what order (seeded rounds in which every kind of the
//! variant comes once), how each is injected, and how long frameworks and
//! agents took to re-attach to the new leader.
//!
//! Faults come one at a time: before each, the cluster must be healthy
//! again (every master up and agreeing on one leader, every agent attached
//! to it; 60 s at most, or the campaign stops injecting), then a seeded
//! pause of 2–5 s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::cluster::{AGENTS, Cluster, MASTERS, Topology, agent_node, master_node};
use super::observe::{self, Leader, Reattach, Watch};
use super::runs::{Gate, Lives, StopSignal};
use super::{Config, Variant, Violation};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL the leader; start it again once the others have re-attached.
    LeaderKill,
    /// SIGSTOP the leader for 8–20 s, then SIGCONT.
    LeaderStop,
    /// SIGKILL an agent; start it again on its work dir 1–5 s later.
    AgentKill,
    /// Hold runs back until none runs, let `concurrency` start at once,
    /// SIGKILL the leader 0.3–2 s later (between their offers and accepts).
    BurstLeaderKill,
    /// Cut the leader from the other masters for 6–10 s.
    LeaderFromMasters,
    /// Cut the leader from every other node (masters, agents, clients)
    /// for 6–10 s.
    LeaderFromAll,
    /// Cut an agent from every other node for the ping timeout plus 2–5 s.
    AgentCut,
    /// A master (the leader half of the time) and an agent cut from the
    /// other masters, the other agent and the clients, for 6–10 s.
    MinoritySplit,
    /// Cut and heal the leader's links to the other masters every
    /// 0.3–1.5 s for 10–14 s.
    Flapping,
}

impl FaultKind {
    /// Its name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::LeaderKill => "leader-sigkill",
            Self::LeaderStop => "leader-sigstop",
            Self::AgentKill => "agent-sigkill",
            Self::BurstLeaderKill => "burst-then-leader-sigkill",
            Self::LeaderFromMasters => "leader-cut-from-masters",
            Self::LeaderFromAll => "leader-cut-from-all",
            Self::AgentCut => "agent-cut",
            Self::MinoritySplit => "minority-split",
            Self::Flapping => "flapping-leader-links",
        }
    }

    fn of(variant: Variant) -> &'static [Self] {
        match variant {
            Variant::Processes => &[
                Self::LeaderKill,
                Self::LeaderStop,
                Self::AgentKill,
                Self::BurstLeaderKill,
            ],
            Variant::Partitions => &[
                Self::LeaderFromMasters,
                Self::LeaderFromAll,
                Self::AgentCut,
                Self::MinoritySplit,
                Self::Flapping,
            ],
        }
    }

    /// Whether issue 12's re-attach bar applies, and from when it counts:
    /// from the election after a SIGKILL, from the later of the election
    /// and the heartbeat timeout after a SIGSTOP. Partitions are measured
    /// and reported, but the issue sets no bar for them.
    #[must_use]
    pub fn bar_after_heartbeat(self) -> Option<bool> {
        match self {
            Self::LeaderKill | Self::BurstLeaderKill => Some(false),
            Self::LeaderStop => Some(true),
            _ => None,
        }
    }
}

/// One injected fault and what followed.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// Which.
    pub kind: FaultKind,
    /// What it hit ("master-2", "agent-0", "m1+a0 | m2 m3 a1 cli").
    pub target: String,
    /// When (Unix seconds).
    pub at: f64,
    /// Its parameters ("stopped 12.3 s").
    pub detail: String,
    /// `berth run`s running when it was injected (what it could hit).
    pub runs_in_flight: usize,
    /// The leader before it.
    pub old_leader: Option<u64>,
    /// The leader elected after it, if one was.
    pub new_leader: Option<u64>,
    /// Seconds from the fault to the new leader's election.
    pub election_after: Option<f64>,
    /// Seconds from the bar's start (see [`FaultKind::bar_after_heartbeat`];
    /// the election for partitions) to the last framework or agent
    /// re-attached to the new leader.
    pub reattach: Option<f64>,
    /// Seconds from the election to the last re-attachment (the same as
    /// `reattach` but for SIGSTOP, whose bar counts from later).
    pub reattach_after_election: Option<f64>,
    /// Who re-attached last ("agent-1", "run r00042").
    pub last_attached: Option<String>,
    /// Who had not re-attached when the campaign stopped waiting.
    pub missing: Vec<String>,
    /// Seconds from the fault until the cluster was healthy again.
    pub recovered_after: Option<f64>,
    /// Why injecting it failed, if it did.
    pub error: Option<String>,
}

impl FaultRecord {
    fn new(kind: FaultKind, target: String, old: Option<Leader>) -> Self {
        Self {
            kind,
            target,
            at: super::now(),
            detail: String::new(),
            runs_in_flight: 0,
            old_leader: old.map(|l| l.id),
            new_leader: None,
            election_after: None,
            reattach: None,
            reattach_after_election: None,
            last_attached: None,
            missing: Vec::new(),
            recovered_after: None,
            error: None,
        }
    }

    /// Takes in what a re-attach watch saw.
    fn with_watch(&mut self, w: &Reattach, heartbeat: Option<Duration>) {
        self.new_leader = w.new_leader;
        self.election_after = w.leading_since.map(|t| t - self.at);
        self.missing.clone_from(&w.missing);
        self.last_attached = w
            .attached
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(who, _)| who.clone());
        if let Some(since) = w.leading_since
            && w.missing.is_empty()
        {
            self.reattach = Some(reattach_seconds(self.at, since, heartbeat, &w.attached));
            self.reattach_after_election =
                Some(reattach_seconds(self.at, since, None, &w.attached));
        }
    }

    /// Says so in the detail when the last re-attachment came only after
    /// the fault ended (`after` past it): clients waited for the frozen
    /// or cut-off leader instead of finding the new one.
    fn note_late(&mut self, w: &Reattach, after: Duration, end: &str) {
        let last = w.attached.iter().map(|(_, t)| *t).fold(f64::MIN, f64::max);
        if !w.attached.is_empty() && last >= self.at + after.as_secs_f64() {
            self.detail
                .push_str(&format!("; the last re-attached only after {end}"));
        }
    }
}

/// The re-attach time: from the new leader's election — or, when clients
/// had to notice a silent leader first, from the fault plus `heartbeat`
/// if that is later — to the last attachment. The times are the new
/// leader's own `leading_since` and the `connected_at` of each agent and
/// framework it lists (one clock: every process runs on this machine).
pub(crate) fn reattach_seconds(
    fault_at: f64,
    leading_since: f64,
    heartbeat: Option<Duration>,
    attached: &[(String, f64)],
) -> f64 {
    let from = heartbeat.map_or(leading_since, |hb| {
        leading_since.max(fault_at + hb.as_secs_f64())
    });
    attached.iter().map(|(_, t)| t - from).fold(0.0, f64::max)
}

/// Injects faults until the campaign has enough of them and has lasted
/// long enough.
#[derive(Debug)]
pub(crate) struct Injector {
    pub(crate) config: Config,
    pub(crate) cluster: Cluster,
    pub(crate) rng: StdRng,
    pub(crate) lives: Lives,
    pub(crate) stop: StopSignal,
    pub(crate) gate: Gate,
    pub(crate) deadline: Instant,
}

impl Injector {
    /// Runs the faults; gives the cluster back with what happened.
    pub(crate) async fn run(
        mut self,
        started: Instant,
    ) -> (Cluster, Vec<FaultRecord>, Vec<Violation>) {
        let mut records: Vec<FaultRecord> = Vec::new();
        let mut violations = Vec::new();
        let mut order: VecDeque<FaultKind> = VecDeque::new();
        loop {
            if records.len() >= self.config.min_faults && started.elapsed() >= self.config.duration
            {
                break;
            }
            if Instant::now() > self.deadline {
                violations.push(Violation::new(
                    "campaign",
                    format!(
                        "bound of {:?} reached after {} of {} faults",
                        self.config.max_time,
                        records.len(),
                        self.config.min_faults
                    ),
                ));
                self.stop.abort();
                break;
            }
            let leader = match observe::wait_healthy(&mut self.cluster, Duration::from_secs(60))
                .await
            {
                Ok(l) => l,
                Err(why) => {
                    violations.push(Violation::new(
                        "recovery",
                        format!(
                            "the cluster was not healthy within 60 s after fault {} ({}): {why}; no more faults injected",
                            records.len(),
                            records.last().map_or("none", |r| r.kind.name())
                        ),
                    ));
                    self.stop.abort();
                    break;
                }
            };
            if let Some(last) = records.last_mut() {
                last.recovered_after = Some(super::now() - last.at);
            }
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(2_000..=5_000))).await;
            if order.is_empty() {
                let mut round = FaultKind::of(self.config.variant).to_vec();
                round.shuffle(&mut self.rng);
                order.extend(round);
            }
            let Some(kind) = order.pop_front() else { break };
            let mut record = self.inject(kind, leader).await;
            record.runs_in_flight = self.lives.running_at(record.at);
            if let Some(e) = &record.error {
                violations.push(Violation::new(
                    "campaign",
                    format!("injecting {} failed: {e}", kind.name()),
                ));
            }
            records.push(record);
        }
        self.gate.open();
        // The last fault's recovery, and the end of the cut links.
        if let Some(net) = self.cluster.net.as_mut()
            && let Err(e) = net.heal_all()
        {
            violations.push(Violation::new("campaign", format!("healing: {e:#}")));
        }
        if observe::wait_healthy(&mut self.cluster, Duration::from_secs(60))
            .await
            .is_ok()
            && let Some(last) = records.last_mut()
        {
            last.recovered_after = Some(super::now() - last.at);
        }
        self.stop.faults_done();
        (self.cluster, records, violations)
    }

    async fn inject(&mut self, kind: FaultKind, leader: Leader) -> FaultRecord {
        let result = match kind {
            FaultKind::LeaderKill => self.leader_kill(kind, leader).await,
            FaultKind::BurstLeaderKill => self.burst_then_kill().await,
            FaultKind::LeaderStop => self.leader_stop(leader).await,
            FaultKind::AgentKill => self.agent_kill(leader).await,
            FaultKind::LeaderFromMasters
            | FaultKind::LeaderFromAll
            | FaultKind::MinoritySplit
            | FaultKind::Flapping
            | FaultKind::AgentCut => self.partition(kind, leader).await,
        };
        result.unwrap_or_else(|(mut record, e)| {
            record.error = Some(format!("{e:#}"));
            record
        })
    }

    fn leader_index(&self, leader: Leader) -> Result<usize, anyhow::Error> {
        self.cluster
            .topo
            .master_index(leader.id)
            .ok_or_else(|| anyhow::anyhow!("leader id {} is not one of ours", leader.id))
    }

    fn others(&self, except: usize) -> Vec<(usize, String)> {
        self.cluster
            .live_masters()
            .into_iter()
            .filter(|(i, _)| *i != except)
            .collect()
    }

    async fn watch(&self, masters: &[(usize, String)], old: Leader, at: f64) -> Reattach {
        let agents: Vec<usize> = (0..AGENTS).collect();
        let w = Watch {
            masters,
            old,
            agents: &agents,
            since: at,
            cap: self.config.reattach_cap,
            no_change_after: None,
        };
        observe::watch_reattach(&self.cluster.topo, &self.lives, w).await
    }

    async fn leader_kill(&mut self, kind: FaultKind, leader: Leader) -> Injected {
        let idx = self
            .leader_index(leader)
            .map_err(|e| (blank(kind, leader), e))?;
        let mut record = FaultRecord::new(kind, format!("master-{}", idx + 1), Some(leader));
        self.cluster.masters[idx].kill();
        record.at = super::now();
        let others = self.others(idx);
        let w = self.watch(&others, leader, record.at).await;
        record.with_watch(&w, None);
        let down = Duration::from_millis(self.rng.random_range(0..=2_000));
        tokio::time::sleep(down).await;
        record.detail = format!(
            "started again {:.1} s after the fault",
            super::now() - record.at
        );
        if let Err(e) = self.cluster.masters[idx].restart() {
            return Err((record, e));
        }
        Ok(record)
    }

    async fn burst_then_kill(&mut self) -> Injected {
        let kind = FaultKind::BurstLeaderKill;
        self.gate.close();
        let drained = wait_until(Duration::from_secs(30), || self.gate.inflight() == 0).await;
        self.gate.open();
        let want = self.config.concurrency;
        wait_until(Duration::from_secs(5), || self.gate.inflight() >= want).await;
        let burst = self.gate.inflight();
        let delay = Duration::from_millis(self.rng.random_range(300..=2_000));
        tokio::time::sleep(delay).await;
        let leader = observe::find_leader(&self.cluster.live_masters()).await;
        let Some(leader) = leader else {
            let mut r = FaultRecord::new(kind, "leader".into(), None);
            r.error = Some("no leader to kill after the burst".into());
            return Ok(r);
        };
        let mut record = self.leader_kill(kind, leader).await?;
        record.detail = format!(
            "{} runs started at once{}, leader killed {:.1} s later; {}",
            burst,
            if drained {
                ""
            } else {
                " (runs had not drained)"
            },
            delay.as_secs_f64(),
            record.detail
        );
        Ok(record)
    }

    async fn leader_stop(&mut self, leader: Leader) -> Injected {
        let kind = FaultKind::LeaderStop;
        let idx = self
            .leader_index(leader)
            .map_err(|e| (blank(kind, leader), e))?;
        let mut record = FaultRecord::new(kind, format!("master-{}", idx + 1), Some(leader));
        let frozen_for = Duration::from_millis(self.rng.random_range(8_000..=20_000));
        if let Err(e) = self.cluster.masters[idx].freeze() {
            return Err((record, e));
        }
        record.at = super::now();
        record.detail = format!("stopped {:.1} s", frozen_for.as_secs_f64());
        let others = self.others(idx);
        let agents: Vec<usize> = (0..AGENTS).collect();
        let (topo, lives, cap) = (&self.cluster.topo, &self.lives, self.config.reattach_cap);
        let daemon = &mut self.cluster.masters[idx];
        let (w, thawed) = tokio::join!(
            observe::watch_reattach(
                topo,
                lives,
                Watch {
                    masters: &others,
                    old: leader,
                    agents: &agents,
                    since: record.at,
                    cap,
                    no_change_after: None,
                }
            ),
            async {
                tokio::time::sleep(frozen_for).await;
                daemon.thaw()
            }
        );
        record.with_watch(&w, Some(self.config.heartbeat_timeout));
        record.note_late(&w, frozen_for, "SIGCONT");
        if let Err(e) = thawed {
            return Err((record, e));
        }
        Ok(record)
    }

    async fn agent_kill(&mut self, leader: Leader) -> Injected {
        let i = self.rng.random_range(0..AGENTS);
        let mut record = FaultRecord::new(FaultKind::AgentKill, format!("agent-{i}"), Some(leader));
        let down = Duration::from_millis(self.rng.random_range(1_000..=5_000));
        self.cluster.agents[i].kill();
        record.at = super::now();
        tokio::time::sleep(down).await;
        record.detail = format!("down {:.1} s", down.as_secs_f64());
        if let Err(e) = self.cluster.agents[i].restart() {
            return Err((record, e));
        }
        Ok(record)
    }

    async fn partition(&mut self, kind: FaultKind, leader: Leader) -> Injected {
        let idx = self
            .leader_index(leader)
            .map_err(|e| (blank(kind, leader), e))?;
        let all: Vec<String> = (0..MASTERS)
            .map(master_node)
            .chain((0..AGENTS).map(agent_node))
            .chain(["cli".to_string()])
            .collect();
        let lead = vec![master_node(idx)];
        let other_masters: Vec<String> = (0..MASTERS)
            .filter(|&m| m != idx)
            .map(master_node)
            .collect();
        let rest = |side: &[String]| -> Vec<String> {
            all.iter().filter(|n| !side.contains(n)).cloned().collect()
        };
        let secs =
            |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..=hi));
        // (one side, the other, how long, whether a new leader should come)
        let (a, b, how_long, leader_change) = match kind {
            FaultKind::LeaderFromMasters => (
                lead.clone(),
                other_masters,
                secs(&mut self.rng, 6_000, 10_000),
                true,
            ),
            FaultKind::LeaderFromAll => (
                lead.clone(),
                rest(&lead),
                secs(&mut self.rng, 6_000, 10_000),
                true,
            ),
            FaultKind::AgentCut => {
                let agent = vec![agent_node(self.rng.random_range(0..AGENTS))];
                let ping = self
                    .config
                    .agent_ping_timeout
                    .unwrap_or(Duration::from_secs(15));
                let d = ping + secs(&mut self.rng, 2_000, 5_000);
                (agent.clone(), rest(&agent), d, false)
            }
            FaultKind::MinoritySplit => {
                let m = if self.rng.random_bool(0.5) {
                    idx
                } else {
                    self.rng.random_range(0..MASTERS)
                };
                let side = vec![master_node(m), agent_node(self.rng.random_range(0..AGENTS))];
                (
                    side.clone(),
                    rest(&side),
                    secs(&mut self.rng, 6_000, 10_000),
                    m == idx,
                )
            }
            FaultKind::Flapping => (
                lead.clone(),
                other_masters,
                secs(&mut self.rng, 10_000, 14_000),
                true,
            ),
            _ => unreachable!("not a partition: {kind:?}"),
        };
        let mut record = FaultRecord::new(
            kind,
            format!("{} | {}", a.join("+"), b.join(" ")),
            Some(leader),
        );
        let flaps: Vec<Duration> = if kind == FaultKind::Flapping {
            let mut left = how_long;
            let mut v = Vec::new();
            while !left.is_zero() {
                let step = secs(&mut self.rng, 300, 1_500).min(left);
                v.push(step);
                left -= step;
            }
            v
        } else {
            vec![how_long]
        };
        let net = self.cluster.net.as_mut().ok_or_else(|| {
            (
                FaultRecord::new(kind, "network".into(), Some(leader)),
                anyhow::anyhow!("the partitions variant has no network"),
            )
        });
        let net = match net {
            Ok(n) => n,
            Err(e) => return Err(e),
        };
        if let Err(e) = net.cut(&a, &b) {
            return Err((record, e));
        }
        record.at = super::now();
        record.detail = format!("{:.1} s", how_long.as_secs_f64());
        if kind == FaultKind::Flapping {
            record.detail.push_str(&format!(", {} flips", flaps.len()));
        }
        let masters: Vec<(usize, String)> = self
            .cluster
            .topo
            .masters
            .iter()
            .cloned()
            .enumerate()
            .collect();
        let agents: Vec<usize> = (0..AGENTS).collect();
        let topo: &Topology = &self.cluster.topo;
        let (lives, cap) = (&self.lives, self.config.reattach_cap);
        let at = record.at;
        // A new leader should come; should the old one keep its place
        // through the whole fault (a flap too short), stop waiting 3 s
        // after the heal.
        let w = Watch {
            masters: &masters,
            old: leader,
            agents: &agents,
            since: at,
            cap,
            no_change_after: Some(how_long + Duration::from_secs(3)),
        };
        let watch = async {
            if leader_change {
                Some(observe::watch_reattach(topo, lives, w).await)
            } else {
                None
            }
        };
        let timeline = async {
            let mut cut = true;
            for step in &flaps {
                tokio::time::sleep(*step).await;
                if cut {
                    net.heal(&a, &b)?;
                } else {
                    net.cut(&a, &b)?;
                }
                cut = !cut;
            }
            if cut { net.heal(&a, &b) } else { Ok(()) }
        };
        let (w, healed): (Option<Reattach>, anyhow::Result<()>) = tokio::join!(watch, timeline);
        match w {
            Some(w) if w.new_leader.is_none() && w.missing.is_empty() => {
                record.detail.push_str("; the leader kept its place");
            }
            Some(w) => {
                record.with_watch(&w, None);
                record.note_late(&w, how_long, "the heal");
            }
            None => {}
        }
        if let Err(e) = healed {
            return Err((record, e));
        }
        Ok(record)
    }
}

/// A fault's record, or the record so far with why it failed.
type Injected = Result<FaultRecord, (FaultRecord, anyhow::Error)>;

fn blank(kind: FaultKind, leader: Leader) -> FaultRecord {
    FaultRecord::new(kind, String::new(), Some(leader))
}

/// Polls `done` every 50 ms for at most `timeout`; whether it came true.
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reattach_counts_from_the_election_or_the_heartbeat_timeout() {
        let attached = vec![
            ("agent-0".to_string(), 103.5),
            ("run r00001".to_string(), 104.0),
        ];
        // SIGKILL: from the election at 102.5 to the last attachment.
        assert!((reattach_seconds(100.0, 102.5, None, &attached) - 1.5).abs() < 1e-9);
        // SIGSTOP with a 5 s heartbeat timeout: from 105 (later than the
        // election); attaching before it counts as 0.
        let hb = Some(Duration::from_secs(5));
        assert!((reattach_seconds(100.0, 102.5, hb, &attached) - 0.0).abs() < 1e-9);
        let late = vec![("agent-1".to_string(), 107.25)];
        assert!((reattach_seconds(100.0, 102.5, hb, &late) - 2.25).abs() < 1e-9);
        // An election after the heartbeat timeout counts from the election.
        assert!((reattach_seconds(100.0, 106.0, hb, &late) - 1.25).abs() < 1e-9);
        assert!((reattach_seconds(100.0, 101.0, None, &[]) - 0.0).abs() < 1e-9);
    }

    #[test]
    fn every_kind_of_a_variant_has_a_name_and_only_process_faults_a_bar() {
        for k in FaultKind::of(Variant::Processes) {
            assert!(k.bar_after_heartbeat().is_some() || *k == FaultKind::AgentKill);
        }
        for k in FaultKind::of(Variant::Partitions) {
            assert_eq!(k.bar_after_heartbeat(), None, "{}", k.name());
        }
        assert_eq!(FaultKind::LeaderStop.bar_after_heartbeat(), Some(true));
    }
}
