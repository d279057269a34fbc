//! What the campaign asks the masters, through the operator API only:
//! who leads (each master's own `ListMembers`, never a guess), which
//! agents and frameworks are attached to the leader, each master's applied
//! index and registry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use berth_proto as pb;
use pb::operator_client::OperatorClient;
use tonic::transport::Channel;

use super::cluster::{Cluster, Topology};
use super::runs::{Lives, run_of_framework};

/// How long one operator call may take: a frozen master accepts the TCP
/// connection and never answers.
const CALL: Duration = Duration::from_millis(800);
/// How often the watch of a leader change looks.
const POLL: Duration = Duration::from_millis(50);

async fn client(addr: &str) -> Option<OperatorClient<Channel>> {
    let ch = Channel::from_shared(pb::endpoint_uri(addr))
        .ok()?
        .connect_timeout(CALL)
        .timeout(CALL);
    let ch = tokio::time::timeout(CALL, ch.connect()).await.ok()?.ok()?;
    Some(OperatorClient::new(ch))
}

/// Runs one call on a fresh connection to `addr`, within [`CALL`].
async fn ask<T, F, Fut>(addr: &str, call: F) -> Option<T>
where
    F: FnOnce(OperatorClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let op = client(addr).await?;
    let r = tokio::time::timeout(CALL, call(op)).await.ok()?.ok()?;
    Some(r.into_inner())
}

/// A master's view of the Raft group.
pub(crate) async fn members(addr: &str) -> Option<pb::MemberList> {
    ask(
        addr,
        |mut op| async move { op.list_members(pb::Empty {}).await },
    )
    .await
}

/// Agents as `addr` sees them (from its own registry and connections).
async fn agents(addr: &str) -> Option<Vec<pb::AgentView>> {
    ask(addr, |mut op| async move {
        op.list_agents(crate::stale(pb::Empty {})).await
    })
    .await
    .map(|l| l.agents)
}

/// Frameworks as `addr` sees them.
async fn frameworks(addr: &str) -> Option<Vec<pb::FrameworkView>> {
    ask(addr, |mut op| async move {
        op.list_frameworks(crate::stale(pb::Empty {})).await
    })
    .await
    .map(|l| l.frameworks)
}

/// Everything `addr` holds (stale read: its own registry).
async fn state(addr: &str) -> Option<pb::ClusterState> {
    ask(addr, |mut op| async move {
        op.get_state(crate::stale(pb::Empty {})).await
    })
    .await
}

/// The master that leads, by its own word.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Leader {
    /// Raft id.
    pub(crate) id: u64,
    /// Its term.
    pub(crate) term: u64,
    /// When it took over (Unix seconds), as it says.
    pub(crate) leading_since: f64,
}

/// The leader among `masters` (index, address): a master whose own
/// `GetLeader` answer carries `leading_since` (only a master that has taken
/// over sets it). An isolated old leader may still claim to lead in its old
/// term; the highest term wins.
pub(crate) async fn find_leader(masters: &[(usize, String)]) -> Option<Leader> {
    let answers = futures::future::join_all(masters.iter().map(|(_, addr)| {
        ask(
            addr,
            |mut op| async move { op.get_leader(pb::Empty {}).await },
        )
    }))
    .await;
    answers
        .into_iter()
        .flatten()
        .filter(|l| l.leading_since > 0.0 && l.raft_id != 0)
        .map(|l| Leader {
            id: l.raft_id,
            term: l.term,
            leading_since: l.leading_since,
        })
        .max_by_key(|l| l.term)
}

/// Waits until every master that runs (and is not frozen) names one and
/// the same leader in one term, and the leader has every running agent
/// connected. Daemons that ended by themselves are recorded and restarted
/// on the way.
///
/// # Errors
/// What was still wrong when `timeout` passed.
pub(crate) async fn wait_healthy(
    cluster: &mut Cluster,
    timeout: Duration,
) -> Result<Leader, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        cluster.reap();
        let problem = match health(cluster).await {
            Ok(l) => return Ok(l),
            Err(p) => p,
        };
        if tokio::time::Instant::now() > deadline {
            return Err(problem);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn health(cluster: &Cluster) -> Result<Leader, String> {
    let live = cluster.live_masters();
    if live.len() < cluster.masters.len() {
        return Err(format!(
            "{} of {} masters run",
            live.len(),
            cluster.masters.len()
        ));
    }
    let views = futures::future::join_all(live.iter().map(|(_, a)| members(a))).await;
    let mut seen = BTreeSet::new();
    for ((i, _), v) in live.iter().zip(&views) {
        let v = v
            .as_ref()
            .ok_or_else(|| format!("master-{} does not answer", i + 1))?;
        seen.insert((v.leader_id, v.term));
    }
    let (id, term) = match seen.iter().collect::<Vec<_>>()[..] {
        [&(id, term)] if id != 0 => (id, term),
        _ => return Err(format!("masters disagree on (leader, term): {seen:?}")),
    };
    let idx = cluster
        .topo
        .master_index(id)
        .ok_or_else(|| format!("leader id {id} is not one of ours"))?;
    let leader = find_leader(&[(idx, cluster.topo.masters[idx].clone())])
        .await
        .filter(|l| l.id == id && l.term == term)
        .ok_or_else(|| format!("master-{} has not taken over in term {term} yet", idx + 1))?;
    let views = agents(&cluster.topo.masters[idx])
        .await
        .ok_or_else(|| format!("leader master-{} lists no agents", idx + 1))?;
    for (i, d) in cluster.agents.iter().enumerate() {
        let addr = &cluster.topo.agents[i];
        let connected = views
            .iter()
            .any(|v| v.connected && v.info.as_ref().is_some_and(|i| &i.address == addr));
        if d.is_up() && !connected {
            return Err(format!("{} is not connected to the leader", d.name));
        }
    }
    Ok(leader)
}

/// What was seen after a leader fault: when a new leader took over and when
/// each framework and agent attached to it, as the new leader reports
/// (`LeaderInfo.leading_since`, `AgentView`/`FrameworkView.connected_at`;
/// every process shares this machine's clock).
#[derive(Debug, Clone, Default)]
pub(crate) struct Reattach {
    /// The new leader's Raft id.
    pub(crate) new_leader: Option<u64>,
    /// When it took over (Unix seconds).
    pub(crate) leading_since: Option<f64>,
    /// Who attached to it when (Unix seconds): "agent-0", "run r00042".
    pub(crate) attached: Vec<(String, f64)>,
    /// Who had not attached when the watch gave up.
    pub(crate) missing: Vec<String>,
}

/// What to watch after a fault.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch<'a> {
    /// The masters to ask who leads (index, address): the faulted one
    /// left out when it cannot answer.
    pub(crate) masters: &'a [(usize, String)],
    /// The leader before the fault.
    pub(crate) old: Leader,
    /// The agents (indexes) that must attach.
    pub(crate) agents: &'a [usize],
    /// When the fault began (Unix seconds): frameworks of runs started
    /// before it must attach.
    pub(crate) since: f64,
    /// How long to watch at most.
    pub(crate) cap: Duration,
    /// When no new leader has come this long after the start, stop: the
    /// leader kept its place (a partition it rode out).
    pub(crate) no_change_after: Option<Duration>,
}

/// Watches a leader change: asks the masters who leads until one leads in
/// a term above the old leader's, then asks it, every 50 ms, until every
/// agent and every framework of a `berth run` that started before the
/// fault and still runs is connected to it. Should the leader change again
/// meanwhile, the watch follows the newest one and takes its times.
pub(crate) async fn watch_reattach(topo: &Topology, lives: &Lives, w: Watch<'_>) -> Reattach {
    let Watch {
        masters,
        old,
        agents: agents_expected,
        since,
        cap,
        no_change_after,
    } = w;
    let start = tokio::time::Instant::now();
    let no_change_by = no_change_after.map(|d| start + d);
    let deadline = start + cap;
    let mut out = Reattach::default();
    let mut attached: BTreeMap<String, f64> = BTreeMap::new();
    let mut pending: BTreeSet<String>;
    loop {
        pending = BTreeSet::new();
        let leader = find_leader(masters).await.filter(|l| l.term > old.term);
        if let Some(l) = leader
            && let Some(idx) = topo.master_index(l.id)
        {
            if out.new_leader != Some(l.id) || out.leading_since != Some(l.leading_since) {
                out.new_leader = Some(l.id);
                out.leading_since = Some(l.leading_since);
                attached.clear();
            }
            let addr = &topo.masters[idx];
            let (agent_views, fw_views) = tokio::join!(agents(addr), frameworks(addr));
            match agent_views {
                Some(views) => {
                    for &i in agents_expected {
                        let name = format!("agent-{i}");
                        let at = views
                            .iter()
                            .find(|v| v.info.as_ref().is_some_and(|x| x.address == topo.agents[i]))
                            .filter(|v| v.connected && v.connected_at > 0.0)
                            .map(|v| v.connected_at);
                        match at {
                            Some(at) => {
                                attached.insert(name, at);
                            }
                            None => {
                                attached.remove(&name);
                                pending.insert(name);
                            }
                        }
                    }
                }
                None => {
                    pending.insert("the new leader's agent list".into());
                }
            }
            match fw_views {
                Some(views) => {
                    for v in views {
                        let Some(run) = v.info.as_ref().and_then(|i| run_of_framework(&i.name))
                        else {
                            continue;
                        };
                        // A run started after the fault subscribes for
                        // the first time: it does not re-attach.
                        if !lives.started_before(run, since) {
                            continue;
                        }
                        let name = format!("run {run}");
                        if v.connected && v.connected_at > 0.0 {
                            attached.insert(name, v.connected_at);
                        } else if lives.running(run) {
                            attached.remove(&name);
                            pending.insert(name);
                        }
                    }
                }
                None => {
                    pending.insert("the new leader's framework list".into());
                }
            }
            if pending.is_empty() {
                break;
            }
        } else if out.new_leader.is_none()
            && no_change_by.is_some_and(|t| tokio::time::Instant::now() > t)
        {
            break;
        } else {
            pending.insert("a new leader".into());
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    out.attached = attached.into_iter().collect();
    out.missing = pending.into_iter().collect();
    out
}

/// How the masters ended up: one applied index and one registry, or not.
#[derive(Debug, Clone, Default)]
pub struct Convergence {
    /// Each master's applied index (Raft id, index) at the last look.
    pub indexes: Vec<(u64, u64)>,
    /// Whether every master had the same applied index, stable across
    /// the read of its registry.
    pub same_index: bool,
    /// What differed between the registries at that index, if anything
    /// (or why they could not be compared).
    pub registry_diff: Option<String>,
    /// Agents, frameworks and tasks (completed ones included) in the
    /// registry compared.
    pub counts: (usize, usize, usize),
    /// Runs whose framework was still registered after every `berth run`
    /// had ended (`berth run` tears its framework down on every exit path).
    pub leftover: Vec<String>,
}

/// Waits up to `timeout` for every master to reach one applied index and
/// compares their registries there.
pub(crate) async fn converge(cluster: &mut Cluster, timeout: Duration) -> Convergence {
    if let Some(net) = cluster.net.as_mut()
        && let Err(e) = net.heal_all()
    {
        return Convergence {
            registry_diff: Some(format!("could not heal the network: {e:#}")),
            ..Convergence::default()
        };
    }
    if let Err(e) = wait_healthy(cluster, Duration::from_secs(60)).await {
        return Convergence {
            registry_diff: Some(format!("the cluster did not become healthy: {e}")),
            ..Convergence::default()
        };
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = Convergence::default();
    loop {
        match look(&cluster.topo.masters).await {
            Some(c) => last = c,
            None => {
                last.same_index = false;
                last.registry_diff = Some("a master did not answer ListMembers or GetState".into());
            }
        }
        if last.same_index && last.registry_diff.is_none() {
            return last;
        }
        if tokio::time::Instant::now() > deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One look at every master: index, registry, index again.
async fn look(masters: &[String]) -> Option<Convergence> {
    let own_index = |m: &pb::MemberList| {
        m.members
            .iter()
            .find(|x| x.id == m.answered_by)
            .map(|x| (m.answered_by, x.index))
    };
    let before = futures::future::join_all(masters.iter().map(|a| members(a))).await;
    let states = futures::future::join_all(masters.iter().map(|a| state(a))).await;
    let after = futures::future::join_all(masters.iter().map(|a| members(a))).await;
    let mut indexes = Vec::new();
    let mut stable = true;
    for (b, a) in before.iter().zip(&after) {
        let (b, a) = (
            b.as_ref().and_then(own_index)?,
            a.as_ref().and_then(own_index)?,
        );
        stable &= a == b;
        indexes.push(a);
    }
    let same_index = stable && indexes.windows(2).all(|w| w[0].1 == w[1].1);
    let states: Vec<pb::ClusterState> = states.into_iter().collect::<Option<_>>()?;
    let states: Vec<pb::ClusterState> = states.into_iter().map(replicated_part).collect();
    let first = &states[0];
    let counts = (
        first.agents.len(),
        first.frameworks.len(),
        first.tasks.len(),
    );
    let leftover = first
        .frameworks
        .iter()
        .filter_map(|f| f.info.as_ref().and_then(|i| run_of_framework(&i.name)))
        .map(str::to_string)
        .collect();
    let mut diff = String::new();
    for (i, s) in states.iter().enumerate().skip(1) {
        if s != first {
            let _ = writeln!(
                diff,
                "master-{} and master-{} differ: {}",
                indexes[0].0,
                indexes[i].0,
                describe_diff(first, s)
            );
        }
    }
    Some(Convergence {
        indexes,
        same_index,
        registry_diff: (!same_index || !diff.is_empty()).then(|| {
            if diff.is_empty() {
                "the applied indexes differ".to_string()
            } else {
                diff
            }
        }),
        counts,
        leftover,
    })
}

/// A master's state without what only the leader holds, sorted by id, so
/// that states of different masters compare equal when their registries
/// are. Left out, as leader-only soft state (not replicated):
/// - `ClusterState.leader`: each master's own view of who leads;
/// - `AgentView.connected`, `FrameworkView.connected` and their
///   `connected_at`: live streams, which only the leader has;
/// - `AgentView.offered`, `FrameworkView.offered`: the leader's offer book;
/// - `RoleView.allocated`: on the leader it counts offers, on followers
///   only tasks.
///
/// Everything else (agents with their state, resources, task counts and
/// registration times; frameworks with their info and disconnect times;
/// every task with its state and latest status; roles' weights, quotas
/// and frameworks) comes from the replicated registry and must be equal.
fn replicated_part(mut s: pb::ClusterState) -> pb::ClusterState {
    s.leader = None;
    for a in &mut s.agents {
        a.connected = false;
        a.connected_at = 0.0;
        a.offered = None;
    }
    for f in &mut s.frameworks {
        f.connected = false;
        f.connected_at = 0.0;
        f.offered = None;
    }
    for r in &mut s.roles {
        r.allocated = None;
    }
    s.agents.sort_by(|a, b| a.id.cmp(&b.id));
    s.frameworks.sort_by(|a, b| fw_id(a).cmp(fw_id(b)));
    s.tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    s.roles.sort_by(|a, b| a.name.cmp(&b.name));
    s
}

fn fw_id(f: &pb::FrameworkView) -> &str {
    f.info.as_ref().map_or("", |i| i.id.as_str())
}

/// Two different texts from a little before where they first differ, each
/// quoted as berth quotes input (cut at 64 bytes).
fn first_difference(a: &str, b: &str) -> (String, String) {
    let same = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let mut start = same.saturating_sub(24);
    // a and b agree on their first `same` bytes, so a boundary of one is a
    // boundary of the other.
    while !a.is_char_boundary(start) {
        start -= 1;
    }
    let show = |s: &str| format!("…{}", berth_proto::quoted(&s[start..]));
    (show(a), show(b))
}

/// The first few differences between two registries, by id.
fn describe_diff(a: &pb::ClusterState, b: &pb::ClusterState) -> String {
    fn section<T: std::fmt::Debug + PartialEq>(
        what: &str,
        a: &[T],
        b: &[T],
        key: impl Fn(&T) -> String,
        out: &mut Vec<String>,
    ) {
        let ka: BTreeMap<String, &T> = a.iter().map(|x| (key(x), x)).collect();
        let kb: BTreeMap<String, &T> = b.iter().map(|x| (key(x), x)).collect();
        for k in ka.keys().chain(kb.keys()).collect::<BTreeSet<_>>() {
            match (ka.get(k), kb.get(k)) {
                (Some(x), Some(y)) if x == y => {}
                (Some(x), Some(y)) => {
                    let (x, y) = first_difference(&format!("{x:?}"), &format!("{y:?}"));
                    out.push(format!("{what} {k}: {x} vs {y}"));
                }
                (Some(_), None) => out.push(format!("{what} {k} only on the first")),
                (None, Some(_)) => out.push(format!("{what} {k} only on the second")),
                (None, None) => {}
            }
        }
    }
    let mut out = Vec::new();
    section("agent", &a.agents, &b.agents, |x| x.id.clone(), &mut out);
    section(
        "framework",
        &a.frameworks,
        &b.frameworks,
        |x| fw_id(x).to_string(),
        &mut out,
    );
    section("task", &a.tasks, &b.tasks, |x| x.task_id.clone(), &mut out);
    section("role", &a.roles, &b.roles, |x| x.name.clone(), &mut out);
    let n = out.len();
    out.truncate(5);
    if n > 5 {
        out.push(format!("and {} more", n - 5));
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_is_shown_where_it_is() {
        let a = format!(
            "TaskView {{ task_id: \"r00042-abcdef\", state: {} }}",
            "TaskFinished"
        );
        let b = format!(
            "TaskView {{ task_id: \"r00042-abcdef\", state: {} }}",
            "TaskLost"
        );
        let (x, y) = first_difference(&a, &b);
        // From 24 bytes before the first difference ("F" vs "L").
        assert_eq!(x, r#"…"042-abcdef\", state: TaskFinished }""#);
        assert_eq!(y, r#"…"042-abcdef\", state: TaskLost }""#);
        let mut s1 = pb::ClusterState::default();
        let mut s2 = pb::ClusterState::default();
        s1.tasks.push(pb::TaskView {
            task_id: "t1".into(),
            state: 1,
            ..Default::default()
        });
        s2.tasks.push(pb::TaskView {
            task_id: "t1".into(),
            state: 2,
            ..Default::default()
        });
        s2.tasks.push(pb::TaskView {
            task_id: "t2".into(),
            ..Default::default()
        });
        let d = describe_diff(&s1, &s2);
        assert!(d.starts_with("task t1: …"), "{d}");
        assert!(d.ends_with("task t2 only on the second"), "{d}");
    }

    #[test]
    fn leader_only_state_is_left_out_of_the_comparison() {
        let agent = |connected, offered: Option<pb::Resources>| pb::AgentView {
            id: "a1".into(),
            connected,
            connected_at: if connected { 12.5 } else { 0.0 },
            offered,
            task_count: 3,
            ..Default::default()
        };
        let leader = pb::ClusterState {
            leader: Some(pb::LeaderInfo {
                raft_id: 1,
                ..Default::default()
            }),
            agents: vec![agent(true, Some(pb::Resources::default()))],
            ..Default::default()
        };
        let follower = pb::ClusterState {
            agents: vec![agent(false, None)],
            ..Default::default()
        };
        assert_eq!(replicated_part(leader.clone()), replicated_part(follower));
        let mut other = leader;
        other.agents[0].task_count = 4;
        assert_ne!(
            replicated_part(other),
            replicated_part(pb::ClusterState {
                agents: vec![agent(false, None)],
                ..Default::default()
            })
        );
    }
}
