//! End-to-end tests of the Raft-replicated master: three (or four)
//! in-process masters on fixed loopback ports with fast Raft ticks, a
//! shared fault-injecting transport, agents and frameworks that know every
//! master. Covered: leader failover keeping every acknowledged launch, an
//! isolated leader stepping down (its offers die with it), a full restart,
//! a lagging follower caught up by snapshot, members added and removed
//! while serving, and the failover timeout across a leader change.
//!
//! The tests run one at a time (`SERIAL`): two of them bound how long an
//! election or a step-down takes, and five clusters electing leaders at
//! once on a two-core machine would measure the machine, not the master.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_proto as pb;
use berth_sdk::{Event, FrameworkConfig, Strategy};
use berth_tests::{
    RaftCluster, RaftSettings, captured, init_logging_with_capture, next_offers, stale,
    subscribe_raw,
};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a timing bound allows beyond the Raft-defined limit: a pre-vote and
/// a vote round trip, two fsynced commits (the new leader's no-op and the
/// write that proves it serves), the test's 20 ms polling, and tokio timers
/// that run late on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(750);

type Operator = pb::operator_client::OperatorClient<Channel>;

fn state_of(s: &pb::TaskStatus) -> pb::TaskState {
    pb::TaskState::try_from(s.state).unwrap_or(pb::TaskState::Unspecified)
}

fn is_terminal(state: i32) -> bool {
    pb::TaskState::try_from(state).is_ok_and(pb::TaskState::is_terminal)
}

/// The replicated part of a master's registry, as its operator API shows
/// it: what must be equal on every master.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RegistryView {
    /// Framework ids and names.
    frameworks: BTreeMap<String, String>,
    /// Agent id → state ("ACTIVE", "DRAINING", "UNREACHABLE").
    agents: BTreeMap<String, String>,
    /// Task id → (framework, agent, state), completed tasks included.
    tasks: BTreeMap<String, (String, String, i32)>,
    /// Role → weight in milli-units, for roles whose weight was set.
    weights: BTreeMap<String, u64>,
}

/// Reads the registry of the master behind `op`: linearizable on the
/// leader, or from any master's own copy with `stale_read`.
async fn registry_view(op: &Operator, stale_read: bool) -> anyhow::Result<RegistryView> {
    let mut op = op.clone();
    let req = |m| {
        if stale_read {
            stale(m)
        } else {
            tonic::Request::new(m)
        }
    };
    let frameworks = op
        .list_frameworks(req(pb::Empty {}))
        .await?
        .into_inner()
        .frameworks
        .into_iter()
        .filter_map(|f| f.info)
        .map(|i| (i.id, i.name))
        .collect();
    let agents = op
        .list_agents(req(pb::Empty {}))
        .await?
        .into_inner()
        .agents
        .into_iter()
        .map(|a| (a.id, a.state))
        .collect();
    let mut list = pb::ListTasksRequest {
        framework_id: String::new(),
        include_completed: true,
    };
    let tasks = if stale_read {
        op.list_tasks(stale(std::mem::take(&mut list))).await?
    } else {
        op.list_tasks(list).await?
    }
    .into_inner()
    .tasks
    .into_iter()
    .map(|t| (t.task_id, (t.framework_id, t.agent_id, t.state)))
    .collect();
    let weights = if stale_read {
        op.list_roles(stale(pb::Empty {})).await?
    } else {
        op.list_roles(pb::Empty {}).await?
    }
    .into_inner()
    .roles
    .into_iter()
    .filter(|r| (r.weight - 1.0).abs() > 1e-9)
    .map(|r| (r.name, (r.weight * 1000.0).round() as u64))
    .collect();
    Ok(RegistryView {
        frameworks,
        agents,
        tasks,
        weights,
    })
}

/// Polls every master in `ids` with stale reads until all registries equal
/// the leader's linearizable one; returns it.
async fn converged(
    cluster: &RaftCluster,
    ids: &[u64],
    timeout: Duration,
) -> anyhow::Result<RegistryView> {
    let deadline = Instant::now() + timeout;
    loop {
        let leader = cluster.leader(timeout).await?;
        let mut last = None;
        if let Ok(want) = registry_view(&cluster.operator(leader)?, false).await {
            let mut all = true;
            for id in ids {
                let got = registry_view(&cluster.operator(*id)?, true).await;
                if got.as_ref().ok() != Some(&want) {
                    all = false;
                    last = Some((*id, got.map_err(|e| e.to_string()), want.clone()));
                    break;
                }
            }
            if all {
                return Ok(want);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("registries did not converge within {timeout:?}: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn accept_request(header: &pb::CallHeader, offer: &str, task: &str) -> pb::AcceptRequest {
    pb::AcceptRequest {
        header: Some(header.clone()),
        offer_ids: vec![offer.to_string()],
        operations: vec![pb::Operation {
            operation: Some(pb::operation::Operation::Launch(pb::Launch {
                tasks: vec![pb::TaskInfo {
                    task_id: task.to_string(),
                    name: task.to_string(),
                    resources: Some(pb::Resources {
                        cpus: 0.1,
                        mem: 32.0,
                        ..Default::default()
                    }),
                    command: Some(pb::CommandInfo {
                        shell: "sleep 600".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            })),
        }],
        filters: None,
    }
}

// ---------------------------------------------------------------------------
// 1. Leader failover during launches
// ---------------------------------------------------------------------------

/// What the launching framework saw.
#[derive(Debug, Default)]
struct LaunchLog {
    /// Task ids an ACCEPT returned OK for.
    accepted: BTreeSet<String>,
    /// Task ids of ACCEPTs that failed after being sent: they may or may not
    /// have been recorded (their tasks were resubmitted under new ids).
    ambiguous: BTreeSet<String>,
    /// Every status update delivered.
    updates: Vec<pb::TaskStatus>,
}

/// Launches `tasks` through the SDK until each one is accepted (a batch
/// whose ACCEPT failed is resubmitted under new ids) and every accepted
/// task has reached a terminal state (from its updates or, for updates the
/// master generated while the framework was away, from the registry).
async fn launch_all(
    fw: berth_sdk::Framework,
    mut events: berth_sdk::Events,
    mut pending: Vec<pb::TaskInfo>,
    masters: Vec<String>,
    progress: tokio::sync::watch::Sender<usize>,
    deadline: Instant,
) -> anyhow::Result<LaunchLog> {
    let mut log = LaunchLog::default();
    let mut terminal: BTreeSet<String> = BTreeSet::new();
    let mut retries = 0_u32;
    let mut last_registry_check = Instant::now();
    loop {
        if pending.is_empty() && log.accepted.iter().all(|t| terminal.contains(t)) {
            return Ok(log);
        }
        // Updates the master generated while the framework was re-subscribing
        // (TASK_LOST of a task whose RunTask died with the old leader) are
        // not resent: the registry has the last word.
        if pending.is_empty() && last_registry_check.elapsed() > Duration::from_secs(1) {
            last_registry_check = Instant::now();
            for m in &masters {
                let ch = Channel::from_shared(pb::endpoint_uri(m))?.connect_lazy();
                let mut op = pb::operator_client::OperatorClient::new(ch);
                if let Ok(list) = op
                    .list_tasks(pb::ListTasksRequest {
                        framework_id: fw.id(),
                        include_completed: true,
                    })
                    .await
                {
                    for t in list.into_inner().tasks {
                        if is_terminal(t.state) {
                            terminal.insert(t.task_id);
                        }
                    }
                    break;
                }
            }
            continue;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "launches did not finish in time: {} pending, {} accepted, {} terminal",
            pending.len(),
            log.accepted.len(),
            terminal.len()
        );
        let wait = Instant::now() + Duration::from_millis(500);
        let ev = match tokio::time::timeout_at(wait.min(deadline), events.next()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => anyhow::bail!("event stream ended"),
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => anyhow::bail!(
                "launches did not finish in time: {} pending, {} accepted, {} terminal",
                pending.len(),
                log.accepted.len(),
                terminal.len()
            ),
        };
        match ev {
            Event::Offers(offers) => {
                let batch: Vec<pb::TaskInfo> = pending
                    .drain(..pending.len().min(25 * offers.len()))
                    .collect();
                let plan = berth_sdk::pack_offers(&offers, batch, Strategy::FirstFit)?;
                pending.extend(plan.unplaced);
                let mut used = BTreeSet::new();
                for (offer_id, tasks) in plan.launches {
                    used.insert(offer_id.to_string());
                    let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
                    match fw
                        .accept(vec![offer_id], tasks.clone(), Some(Duration::ZERO))
                        .await
                    {
                        Ok(launched) => {
                            assert_eq!(launched, ids, "the reply lists the launched tasks");
                            log.accepted.extend(launched.into_iter().map(String::from));
                            progress.send_replace(log.accepted.len());
                        }
                        Err(e) => {
                            // Not sent at all, or refused before anything was
                            // recorded: the same ids can be used again.
                            let unsent = matches!(
                                e,
                                berth_sdk::SdkError::NotSubscribed
                                    | berth_sdk::SdkError::Rpc {
                                        kind: berth_sdk::ErrorKind::Invalid,
                                        ..
                                    }
                            );
                            if unsent {
                                pending.extend(tasks);
                            } else {
                                // Ambiguous: maybe recorded. Never reuse the
                                // ids; resubmit the work under new ones.
                                retries += 1;
                                log.ambiguous.extend(ids);
                                for mut t in tasks {
                                    t.task_id = format!("{}-r{retries}", t.task_id);
                                    t.name.clone_from(&t.task_id);
                                    t.agent_id.clear();
                                    pending.push(t);
                                }
                            }
                        }
                    }
                }
                let unused: Vec<String> = offers
                    .into_iter()
                    .map(|o| o.id)
                    .filter(|id| !used.contains(id))
                    .collect();
                if !unused.is_empty() {
                    let _ = fw
                        .decline(
                            unused
                                .into_iter()
                                .filter_map(|id| berth_sdk::OfferId::new(id).ok())
                                .collect(),
                            Some(Duration::ZERO),
                        )
                        .await;
                }
            }
            Event::Update(status) => {
                if state_of(&status).is_terminal() {
                    terminal.insert(status.task_id.clone());
                }
                log.updates.push(status);
            }
            _ => {}
        }
    }
}

/// The leader is stopped while a framework (SDK, all three addresses)
/// launches 300 short tasks over two agents. Afterwards: every launch the
/// framework saw accepted is in the new leader's registry; the registry
/// holds nothing the framework did not submit; no task ran twice (each
/// task appends one line to a shared run log, has one sandbox on one agent,
/// and all its updates name one agent and carry at most one terminal
/// uuid); and a new leader committed a write within 2 × the election
/// timeout (+ `SLACK`) of the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_keeps_every_acknowledged_launch() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let resources = "cpus:4;mem:4096;disk:1000";
    let mut cluster = RaftCluster::start(
        &[11, 12, 13],
        &[resources, resources],
        RaftSettings::default(),
    )
    .await?;
    let old = cluster.leader(Duration::from_secs(10)).await?;
    cluster.wait_agents(2, Duration::from_secs(15)).await?;

    let runs = cluster.dir.path().join("runs.log");
    const TOTAL: usize = 300;
    let tasks: Vec<pb::TaskInfo> = (0..TOTAL)
        .map(|i| {
            berth_sdk::shell_task(
                format!("t{i:04}"),
                format!("t{i:04}"),
                format!(
                    "echo \"$BERTH_TASK_ID $BERTH_AGENT_ID\" >> '{}'",
                    runs.display()
                ),
                "cpus:0.1;mem:16",
            )
        })
        .collect::<Result<_, _>>()?;
    let config = FrameworkConfig::new("failover").failover_timeout(Duration::from_secs(120));
    let (fw, events) = berth_sdk::subscribe(cluster.addresses(), config).await?;
    let framework_id = fw.id();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0_usize);
    let launcher = tokio::spawn(launch_all(
        fw.clone(),
        events,
        tasks,
        cluster.addresses(),
        progress_tx,
        Instant::now() + Duration::from_secs(60),
    ));

    // Mid-way: stop the leader.
    tokio::time::timeout(
        Duration::from_secs(30),
        progress.wait_for(|n| *n >= TOTAL / 3),
    )
    .await??;
    let accepted_before_stop = *progress.borrow();
    let mut old_master = cluster.masters.remove(&old).expect("the leader runs");
    let stopped_at = Instant::now();
    let stopping = tokio::spawn(async move { old_master.stop().await });

    // The first operator write that commits marks the new leader serving.
    let others: Vec<u64> = cluster.masters.keys().copied().collect();
    let ops: Vec<Operator> = others
        .iter()
        .map(|id| cluster.operator(*id))
        .collect::<anyhow::Result<_>>()?;
    let (serving_after, new_leader) = 'serving: loop {
        for (id, op) in others.iter().zip(&ops) {
            let mut op = op.clone();
            let write = op.set_weight(pb::SetWeightRequest {
                role: "failover".into(),
                weight: 2.0,
            });
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), write).await {
                break 'serving (stopped_at.elapsed(), *id);
            }
        }
        anyhow::ensure!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "no master served a write within 10 s of the leader's stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stopping.await??;
    let bound = cluster.election_timeout() * 2 + SLACK;
    eprintln!("failover: a new leader served a write {serving_after:?} after the stop");
    assert!(
        serving_after <= bound,
        "a new leader served {serving_after:?} after the stop; bound {bound:?} \
         (2 × election timeout {:?} + slack)",
        cluster.election_timeout()
    );
    assert_ne!(new_leader, old);
    let info = ops[others.iter().position(|i| *i == new_leader).expect("known")]
        .clone()
        .get_leader(pb::Empty {})
        .await?
        .into_inner();
    assert_eq!(info.raft_id, new_leader);

    let log = launcher.await??;
    assert!(
        accepted_before_stop < TOTAL,
        "the stop came mid-way ({accepted_before_stop} of {TOTAL} accepted before it)"
    );
    assert_eq!(
        log.accepted.len(),
        TOTAL,
        "every task was eventually launched once (failed batches under new ids)"
    );

    // The new leader's registry: every acknowledged launch, nothing else.
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    assert_eq!(leader, new_leader);
    let registry: BTreeMap<String, pb::TaskView> = cluster
        .operator(leader)?
        .list_tasks(pb::ListTasksRequest {
            framework_id: framework_id.clone(),
            include_completed: true,
        })
        .await?
        .into_inner()
        .tasks
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    for id in &log.accepted {
        let t = registry
            .get(id)
            .unwrap_or_else(|| panic!("accepted task {id} is not in the new leader's registry"));
        assert!(is_terminal(t.state), "{id} did not end: {t:?}");
    }
    for id in registry.keys() {
        assert!(
            log.accepted.contains(id) || log.ambiguous.contains(id),
            "{id} is in the registry but was never submitted"
        );
    }

    // Nothing ran twice: one run-log line per task at most, on the agent
    // the registry names; exactly one for a task that FINISHED.
    let mut ran: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(&runs)?.lines() {
        let (task, agent) = line.split_once(' ').expect("task and agent");
        ran.entry(task.to_string())
            .or_default()
            .push(agent.to_string());
    }
    for (task, agents) in &ran {
        assert_eq!(
            agents.len(),
            1,
            "{task} ran {} times: {agents:?}",
            agents.len()
        );
        let t = registry
            .get(task)
            .unwrap_or_else(|| panic!("{task} ran but the registry does not know it"));
        assert_eq!(agents[0], t.agent_id, "{task} ran on another agent");
    }
    let mut finished = 0;
    for (id, t) in &registry {
        if t.state == pb::TaskState::TaskFinished as i32 {
            finished += 1;
            assert!(ran.contains_key(id), "{id} finished but never ran");
        }
        let sandboxes = (0..cluster.agents.len())
            .filter(|i| {
                cluster
                    .agent_dir(*i)
                    .join("sandboxes")
                    .join(&framework_id)
                    .join(id)
                    .exists()
            })
            .count();
        assert!(sandboxes <= 1, "{id} has a sandbox on {sandboxes} agents");
    }
    assert!(
        finished >= TOTAL * 9 / 10,
        "only {finished} of {TOTAL} tasks finished"
    );

    // The update stream agrees: one agent per task, one terminal update
    // (redeliveries carry the same uuid).
    let mut agent_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut terminal_uuids: BTreeMap<&str, BTreeSet<&[u8]>> = BTreeMap::new();
    for s in &log.updates {
        if !s.agent_id.is_empty() {
            agent_of.entry(&s.task_id).or_default().insert(&s.agent_id);
        }
        if state_of(s).is_terminal() && !s.uuid.is_empty() {
            terminal_uuids
                .entry(&s.task_id)
                .or_default()
                .insert(&s.uuid);
        }
    }
    for (task, agents) in &agent_of {
        assert_eq!(agents.len(), 1, "{task} reported from agents {agents:?}");
    }
    for (task, uuids) in &terminal_uuids {
        assert_eq!(uuids.len(), 1, "{task} ended {} times", uuids.len());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Isolated leader
// ---------------------------------------------------------------------------

/// The leader is cut off from both followers (fault-injecting transport).
/// It steps down within the check-quorum period; an ACCEPT it received
/// just after the cut, with an offer it had issued, never takes effect
/// (answered UNAVAILABLE, and the task appears on no master); the two
/// others elect a leader, which refuses the old offer id before and after
/// the heal; after the heal the old leader follows the new one without
/// disrupting it and every registry converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_steps_down_and_its_offers_die() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let ids = [21, 22, 23];
    let cluster = RaftCluster::start(&ids, &["cpus:2;mem:1024"], RaftSettings::default()).await?;
    let old = cluster.leader(Duration::from_secs(10)).await?;
    cluster.wait_agents(1, Duration::from_secs(15)).await?;
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != old).collect();

    let mut fw = subscribe_raw(&cluster.addr(old), "", "isolated").await?;
    let old_offer = next_offers(&mut fw).await?[0].id.clone();

    // Cut the leader off, and at once ask it to launch with its offer.
    let cut_at = Instant::now();
    cluster.faults.isolate(old, &others);
    let ghost = {
        let mut client = fw.client.clone();
        let req = accept_request(&fw.header, &old_offer, "ghost");
        tokio::spawn(async move { client.accept(req).await })
    };

    // It steps down: Raft no longer has it as leader and its core stopped
    // serving. With check_quorum the leader checks every election timeout
    // whether it heard from a quorum during the last one; the first check
    // after the cut may still count messages from before it, so the bound
    // is 2 × the election timeout.
    let op_old = cluster.operator(old)?;
    let stepped_down_after = loop {
        let members = op_old
            .clone()
            .list_members(pb::Empty {})
            .await?
            .into_inner();
        let info = op_old.clone().get_leader(pb::Empty {}).await?.into_inner();
        if members.leader_id != old && info.master_id.is_empty() {
            assert_eq!(members.answered_by, old);
            break cut_at.elapsed();
        }
        anyhow::ensure!(
            cut_at.elapsed() < Duration::from_secs(10),
            "the isolated leader did not step down: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let bound = cluster.election_timeout() * 2 + SLACK;
    eprintln!("isolation: the old leader stepped down {stepped_down_after:?} after the cut");
    assert!(
        stepped_down_after <= bound,
        "stepped down after {stepped_down_after:?}; bound {bound:?}"
    );
    let refused = tokio::time::timeout(Duration::from_secs(15), ghost).await??;
    assert_eq!(
        refused.as_ref().map_err(tonic::Status::code).err(),
        Some(Code::Unavailable),
        "the accept sent to the isolated leader: {refused:?}"
    );
    // Sent now, an accept is refused as a follower would refuse it.
    let late = fw
        .client
        .accept(accept_request(&fw.header, &old_offer, "ghost-2"))
        .await;
    assert_eq!(
        late.map_err(|s| s.code()).err(),
        Some(Code::Unavailable),
        "an accept to the stepped-down leader"
    );

    // The others elect a leader; the framework moves there.
    let new = cluster
        .leader_among(&others, Duration::from_secs(10))
        .await?;
    let mut op_new = cluster.operator(new)?;
    op_new
        .set_weight(pb::SetWeightRequest {
            role: "partitioned".into(),
            weight: 3.0,
        })
        .await?;
    let fw_id = fw.header.framework_id.clone();
    let mut fw2 = subscribe_raw(&cluster.addr(new), &fw_id, "isolated").await?;
    let old_id_refused = fw2
        .client
        .accept(accept_request(&fw2.header, &old_offer, "ghost-3"))
        .await
        .expect_err("the new leader accepted an offer of the old term");
    assert_eq!(old_id_refused.code(), Code::InvalidArgument);
    // A launch on one of its own offers works (the agent moved over too).
    let offer = next_offers(&mut fw2).await?[0].id.clone();
    fw2.client
        .accept(accept_request(&fw2.header, &offer, "survivor"))
        .await?;

    // Heal: the old leader follows the new one, which keeps leading
    // (pre-vote: a returning node cannot force an election).
    cluster.faults.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = op_old
            .clone()
            .list_members(pb::Empty {})
            .await?
            .into_inner();
        if m.leader_id == new {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the old leader did not rejoin: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = fw2
        .client
        .accept(accept_request(&fw2.header, &old_offer, "ghost-4"))
        .await
        .expect_err("the new leader accepted an offer of the old term after the heal");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("unknown") || err.message().contains("rescinded"),
        "{}",
        err.message()
    );

    let view = converged(&cluster, &ids, Duration::from_secs(15)).await?;
    assert_eq!(cluster.leader(Duration::from_secs(5)).await?, new);
    assert!(view.tasks.contains_key("survivor"), "{view:?}");
    for ghost in ["ghost", "ghost-2", "ghost-3", "ghost-4"] {
        assert!(!view.tasks.contains_key(ghost), "{ghost} took effect");
    }
    assert_eq!(view.weights.get("partitioned"), Some(&3000));
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Full restart
// ---------------------------------------------------------------------------

/// All three masters stop and start again on the same ports and data:
/// frameworks, agents, tasks (running and completed) and weights are as
/// before, a leader is elected, and the framework resubscribes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_keeps_the_registry() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let ids = [31, 32, 33];
    let settings = RaftSettings {
        // Agents must not time out while every master is down.
        agent_ping_timeout: Duration::from_secs(20),
        ..RaftSettings::default()
    };
    let mut cluster = RaftCluster::start(&ids, &["cpus:2;mem:1024"], settings).await?;
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    cluster.wait_agents(1, Duration::from_secs(15)).await?;
    cluster
        .operator(leader)?
        .set_weight(pb::SetWeightRequest {
            role: "restart".into(),
            weight: 2.5,
        })
        .await?;

    let config = FrameworkConfig::new("restart").failover_timeout(Duration::from_secs(120));
    let (fw, mut events) = berth_sdk::subscribe(cluster.addresses(), config).await?;
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(berth_sdk::shell_task(
            format!("short-{i}"),
            "short",
            "exit 0",
            "cpus:0.1;mem:16",
        )?);
    }
    for i in 0..2 {
        tasks.push(berth_sdk::shell_task(
            format!("long-{i}"),
            "long",
            "sleep 600",
            "cpus:0.1;mem:16",
        )?);
    }
    let mut done = BTreeSet::new();
    let mut running = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.len() < 3 || running.len() < 2 {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        match ev {
            Event::Offers(offers) => {
                let plan = berth_sdk::pack_offers(
                    &offers,
                    std::mem::take(&mut tasks),
                    Strategy::FirstFit,
                )?;
                tasks = plan.unplaced;
                for (offer, t) in plan.launches {
                    fw.accept(vec![offer], t, None).await?;
                }
            }
            Event::Update(s) if state_of(&s) == pb::TaskState::TaskFinished => {
                done.insert(s.task_id);
            }
            Event::Update(s)
                if state_of(&s) == pb::TaskState::TaskRunning && s.task_id.starts_with("long") =>
            {
                running.insert(s.task_id);
            }
            _ => {}
        }
    }
    let before = converged(&cluster, &ids, Duration::from_secs(10)).await?;
    assert_eq!(before.tasks.len(), 5);
    assert_eq!(before.agents.len(), 1);
    assert_eq!(before.frameworks.len(), 1);

    for id in ids {
        cluster.stop(id).await?;
    }
    for id in ids {
        cluster.start_master(id).await?;
    }
    let leader = cluster.leader(Duration::from_secs(15)).await?;
    let after = registry_view(&cluster.operator(leader)?, false).await?;
    assert_eq!(after, before, "the registry changed across the restart");
    // Every master restored the same state, and the cluster serves: the
    // framework comes back with its id and the agent re-registers.
    let after_all = converged(&cluster, &ids, Duration::from_secs(15)).await?;
    assert_eq!(after_all, before);
    let (id, resubscribed) =
        berth_tests::next_matching(&mut events, Duration::from_secs(20), |e| match e {
            Event::Subscribed {
                framework_id,
                resubscribed,
                ..
            } => Some((framework_id, resubscribed)),
            _ => None,
        })
        .await?;
    assert_eq!(id, fw.id());
    assert!(resubscribed);
    cluster.wait_agents(1, Duration::from_secs(20)).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Snapshot catch-up
// ---------------------------------------------------------------------------

/// A follower is stopped while the leader commits 300 writes with
/// `snapshot_every` 50, so the leader compacts its log past everything the
/// follower has. Restarted, the follower is sent the leader's snapshot
/// (raft-rs cannot send it compacted entries; the node logs that it
/// restores from one) and its registry equals the leader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let ids = [41, 42, 43];
    let settings = RaftSettings {
        snapshot_every: 50,
        ..RaftSettings::default()
    };
    let mut cluster = RaftCluster::start(&ids, &[], settings).await?;
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let follower = *ids.iter().find(|i| **i != leader).expect("three members");
    cluster.stop(follower).await?;
    let stopped_index = cluster
        .operator(leader)?
        .list_members(pb::Empty {})
        .await?
        .into_inner()
        .members
        .iter()
        .find(|m| m.id == follower)
        .map(|m| m.index)
        .expect("listed");

    let mut op = cluster.operator(leader)?;
    for i in 0..300 {
        op.set_weight(pb::SetWeightRequest {
            role: format!("role-{i:03}"),
            weight: 1.0 + f64::from(i + 1) / 1000.0,
        })
        .await?;
    }
    let leader_view = registry_view(&op, false).await?;
    assert_eq!(leader_view.weights.len(), 300);

    cluster.start_master(follower).await?;
    let caught_up = converged(&cluster, &[follower], Duration::from_secs(15)).await?;
    assert_eq!(caught_up, leader_view);
    assert_eq!(cluster.leader(Duration::from_secs(5)).await?, leader);

    // It got there by a snapshot taken past the point where it stopped.
    let restored = captured(|e| {
        e.message == "restoring from a leader's snapshot"
            && e.fields.get("id") == Some(&follower.to_string())
    });
    let index: u64 = restored
        .last()
        .unwrap_or_else(|| panic!("follower {follower} was not sent a snapshot"))
        .fields["index"]
        .parse()?;
    assert!(
        index > stopped_index + 50,
        "snapshot at {index}, follower stopped at {stopped_index}"
    );
    // And it keeps up with new writes from the log.
    op.set_weight(pb::SetWeightRequest {
        role: "after".into(),
        weight: 4.0,
    })
    .await?;
    let view = converged(&cluster, &ids, Duration::from_secs(10)).await?;
    assert_eq!(view.weights.get("after"), Some(&4000));
    Ok(())
}

// ---------------------------------------------------------------------------
// 5. Membership
// ---------------------------------------------------------------------------

async fn members(cluster: &RaftCluster, id: u64) -> anyhow::Result<pb::MemberList> {
    Ok(cluster
        .operator(id)?
        .list_members(pb::Empty {})
        .await?
        .into_inner())
}

/// A fourth master started with `join` is added through the operator API,
/// receives the state, and counts as a voter; a follower is then removed.
/// Writes keep committing throughout (never more than a second without
/// one), and ListMembers shows the expected members and roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_while_serving() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let ids = [51, 52, 53];
    let mut cluster = RaftCluster::start(&ids, &[], RaftSettings::default()).await?;
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let op = cluster.operator(leader)?;

    // A writer commits a weight every 10 ms and records when each landed.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let mut op = op.clone();
        tokio::spawn(async move {
            let mut landed = vec![Instant::now()];
            let mut errors = Vec::new();
            for i in 0_u32.. {
                if stop_rx.try_recv().is_ok() {
                    break;
                }
                match op
                    .set_weight(pb::SetWeightRequest {
                        role: "writer".into(),
                        weight: 1.0 + f64::from(i % 1000) / 100.0,
                    })
                    .await
                {
                    Ok(_) => landed.push(Instant::now()),
                    Err(e) => errors.push(e),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            landed.push(Instant::now());
            (landed, errors)
        })
    };

    let roles = |m: &pb::MemberList| -> BTreeMap<u64, String> {
        m.members.iter().map(|v| (v.id, v.role.clone())).collect()
    };

    op.clone()
        .set_weight(pb::SetWeightRequest {
            role: "marker".into(),
            weight: 5.0,
        })
        .await?;

    // Add master 54.
    let joiner = 54;
    let address = cluster.start_joining(joiner).await?;
    let add = pb::AddMemberRequest {
        id: joiner,
        address: address.clone(),
    };
    // First a learner; a voter once it has caught up (a second call).
    assert_eq!(
        op.clone().add_member(add.clone()).await?.into_inner().role,
        "LEARNER"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match op.clone().add_member(add.clone()).await {
            Ok(r) => {
                assert_eq!(r.into_inner().role, "VOTER");
                break;
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                anyhow::ensure!(Instant::now() < deadline, "{joiner} did not catch up: {s}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => return Err(s.into()),
        }
    }
    let again = op.clone().add_member(add.clone()).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again}");
    // The leader sees it replicate the log; it sees itself as a follower of
    // the same leader with the same state.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = members(&cluster, leader).await?;
        let own = m.members.iter().find(|v| v.id == leader).map(|v| v.index);
        let theirs = m.members.iter().find(|v| v.id == joiner).map(|v| v.index);
        if theirs.is_some() && theirs >= own.map(|i| i.saturating_sub(5)) && theirs > Some(0) {
            let mut want: BTreeMap<u64, String> =
                ids.iter().map(|i| (*i, "FOLLOWER".to_string())).collect();
            want.insert(leader, "LEADER".into());
            want.insert(joiner, "FOLLOWER".into());
            assert_eq!(roles(&m), want);
            assert_eq!(
                m.members
                    .iter()
                    .find(|v| v.id == joiner)
                    .map(|v| v.address.clone()),
                Some(address.clone())
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{joiner} did not catch up: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_by_joiner = members(&cluster, joiner).await?;
    assert_eq!(seen_by_joiner.answered_by, joiner);
    assert_eq!(seen_by_joiner.leader_id, leader);
    assert_eq!(seen_by_joiner.members.len(), 4);
    // It holds the state from before it joined (the writer keeps changing
    // its own role, so compare another one).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = registry_view(&cluster.operator(joiner)?, true).await?;
        if view.weights.get("marker") == Some(&5000) && view.weights.contains_key("writer") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{joiner} lacks state: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Remove a follower, then stop it.
    let removed = *ids.iter().find(|i| **i != leader).expect("a follower");
    op.clone()
        .remove_member(pb::RemoveMemberRequest { id: removed })
        .await?;
    let m = members(&cluster, leader).await?;
    let mut want: BTreeMap<u64, String> = ids
        .iter()
        .filter(|i| **i != removed)
        .map(|i| (*i, "FOLLOWER".to_string()))
        .collect();
    want.insert(leader, "LEADER".into());
    want.insert(joiner, "FOLLOWER".into());
    assert_eq!(roles(&m), want);
    cluster.stop(removed).await?;

    // The joiner is a real voter: with the third remaining member stopped
    // too, the leader and the joiner are a quorum of the three members.
    let third = *ids
        .iter()
        .find(|i| **i != leader && **i != removed)
        .expect("a third member");
    cluster.stop(third).await?;
    tokio::time::sleep(cluster.election_timeout() * 3).await;
    let _ = stop_tx.send(());
    let (landed, errors) = writer.await?;
    assert!(errors.is_empty(), "writes failed: {errors:?}");
    let longest = landed
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest < Duration::from_secs(1),
        "no write committed for {longest:?}"
    );
    assert!(landed.len() > 20, "only {} writes", landed.len());
    assert_eq!(cluster.leader(Duration::from_secs(5)).await?, leader);
    let m = members(&cluster, joiner).await?;
    assert_eq!(m.leader_id, leader);
    assert_eq!(m.members.len(), 3, "{m:?}");
    Ok(())
}

/// A framework's failover timeout keeps running across a leader change
/// (Mesos lost it, MESOS-4659): the new leader removes the framework when
/// the time counted from its disconnect runs out, not a full timeout after
/// the takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_timeout_survives_a_leader_change() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let ids = [61, 62, 63];
    let mut cluster = RaftCluster::start(&ids, &[], RaftSettings::default()).await?;
    let leader = cluster.leader(Duration::from_secs(10)).await?;

    let failover = Duration::from_secs(4);
    let config = FrameworkConfig::new("short-lived").failover_timeout(failover);
    let (fw, events) = berth_sdk::subscribe(cluster.addresses(), config).await?;
    let id = fw.id();
    drop(events); // the framework goes away; its failover clock starts
    let disconnected = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The leader changes 1.5 s into the 4 s timeout.
    cluster.stop(leader).await?;
    let new = cluster.leader(Duration::from_secs(10)).await?;
    assert_ne!(new, leader);

    let listed = |cluster: &RaftCluster| {
        let op = cluster.operator(new);
        let id = id.clone();
        async move {
            let frameworks = op?
                .list_frameworks(pb::Empty {})
                .await?
                .into_inner()
                .frameworks;
            anyhow::Ok(
                frameworks
                    .iter()
                    .any(|f| f.info.as_ref().is_some_and(|i| i.id == id)),
            )
        }
    };
    assert!(
        listed(&cluster).await?,
        "the framework is kept within its timeout"
    );
    let removed_at = loop {
        if !listed(&cluster).await? {
            break disconnected.elapsed();
        }
        assert!(
            disconnected.elapsed() < failover + Duration::from_secs(3),
            "the framework outlived its failover timeout by 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Removed after the timeout counted from the disconnect, well before a
    // timeout counted from the takeover (1.5 s + election + 4 s).
    assert!(
        removed_at >= failover,
        "removed early, after {removed_at:?}"
    );
    assert!(
        removed_at < failover + Duration::from_millis(1500),
        "removed {removed_at:?} after the disconnect: the clock restarted at the takeover"
    );
    Ok(())
}
