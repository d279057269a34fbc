//! End-to-end tests against an in-process cluster: a master and agents on
//! ephemeral loopback ports, frameworks through the SDK: 100 tasks on two
//! agents, a master restart, a partitioned agent, the failover timeout, a
//! drained agent, and pending work (explained, published again after a
//! master restart, gone after teardown).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use berth_proto as pb;
use berth_sdk::{Event, FrameworkConfig, Strategy};
use berth_tests::{Cluster, Proxy, init_logging, next_matching};

/// 100 short tasks over two agents, each exiting with a known code; one
/// long task killed; every agent update acknowledged exactly as the SDK
/// counts, and no update resent afterwards (the acks reached the agents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tasks_across_two_agents() -> anyhow::Result<()> {
    init_logging();
    let cluster =
        Cluster::start(&["cpus:2;mem:2048;disk:1000", "cpus:2;mem:2048;disk:1000"]).await?;
    let agents = cluster.wait_agents(2, Duration::from_secs(10)).await?;
    let agent_ids: BTreeSet<String> = agents.iter().map(|a| a.id.clone()).collect();

    let config = FrameworkConfig::new("hundred").failover_timeout(Duration::from_secs(60));
    let (fw, mut events) = berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;

    // Task i exits with i % 4; task "long" sleeps until killed.
    let mut pending: Vec<pb::TaskInfo> = (0..100)
        .map(|i| {
            berth_sdk::shell_task(
                format!("t{i:03}"),
                format!("t{i}"),
                format!("exit {}", i % 4),
                "cpus:0.1;mem:32",
            )
        })
        .collect::<Result<_, _>>()?;
    pending.push(berth_sdk::shell_task(
        "long",
        "long",
        "sleep 600",
        "cpus:0.1;mem:32",
    )?);

    let mut terminal: BTreeMap<String, pb::TaskStatus> = BTreeMap::new();
    let mut placed_on: HashMap<String, String> = HashMap::new();
    let mut agent_updates = 0_u64;
    let mut seen_uuids: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut killed_long = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while terminal.len() < 101 {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of 101 tasks ended in time", terminal.len()))?
            .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
        match ev {
            Event::Offers(offers) => {
                // Spread: at most 20 tasks per offer so both agents get work.
                let batch: Vec<pb::TaskInfo> = pending
                    .drain(..pending.len().min(20 * offers.len()))
                    .collect();
                let plan = berth_sdk::pack_offers(&offers, batch, Strategy::FirstFit)?;
                pending.extend(plan.unplaced);
                let mut used = BTreeSet::new();
                for (offer_id, tasks) in plan.launches {
                    used.insert(offer_id.to_string());
                    for t in &tasks {
                        placed_on.insert(t.task_id.clone(), t.agent_id.clone());
                    }
                    let launched = fw
                        .accept(vec![offer_id], tasks.clone(), Some(Duration::ZERO))
                        .await?;
                    assert_eq!(launched.len(), tasks.len());
                }
                let unused: Vec<String> = offers
                    .into_iter()
                    .map(|o| o.id)
                    .filter(|id| !used.contains(id))
                    .collect();
                if !unused.is_empty() {
                    fw.decline(
                        unused
                            .into_iter()
                            .map(|id| berth_sdk::OfferId::new(id).unwrap())
                            .collect(),
                        Some(Duration::ZERO),
                    )
                    .await?;
                }
            }
            Event::Update(status) => {
                if !status.uuid.is_empty() {
                    agent_updates += 1;
                    seen_uuids.insert(status.uuid.clone());
                }
                if status.task_id == "long"
                    && berth_tests::task_state(&status) == pb::TaskState::TaskRunning
                    && !killed_long
                {
                    fw.kill(
                        &berth_sdk::TaskId::new("long").unwrap(),
                        Some(Duration::from_secs(1)),
                    )
                    .await?;
                    killed_long = true;
                }
                if berth_tests::task_state(&status).is_terminal() {
                    terminal.insert(status.task_id.clone(), status);
                }
            }
            _ => {}
        }
    }

    for i in 0..100 {
        let s = &terminal[&format!("t{i:03}")];
        let code = i % 4;
        if code == 0 {
            assert_eq!(
                berth_tests::task_state(s),
                pb::TaskState::TaskFinished,
                "t{i:03}: {s:?}"
            );
        } else {
            assert_eq!(
                berth_tests::task_state(s),
                pb::TaskState::TaskFailed,
                "t{i:03}: {s:?}"
            );
        }
        assert_eq!(s.exit_code, Some(code), "t{i:03}");
    }
    assert_eq!(
        berth_tests::task_state(&terminal["long"]),
        pb::TaskState::TaskKilled
    );
    let used_agents: BTreeSet<String> = placed_on.values().cloned().collect();
    assert_eq!(used_agents, agent_ids, "tasks should run on both agents");

    // Read one more event so the last update's automatic ack goes out, then
    // give agents time to resend anything unacknowledged (they resend after
    // 500 ms): nothing may come back.
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match events.next().await {
                Some(Event::Update(s)) if !s.uuid.is_empty() => return Some(s),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "an update was resent, so an ack did not reach its agent: {quiet:?}"
    );
    // Updates are delivered at least once: under load an agent resends one
    // whose ack is still on its way, and the SDK acks every delivery.
    assert_eq!(
        fw.acknowledged(),
        agent_updates,
        "the SDK acks every agent update it delivers"
    );
    // STARTING, RUNNING and a terminal state for each task, no more.
    assert_eq!(seen_uuids.len(), 101 * 3, "distinct agent updates");

    // The master's view agrees.
    let tasks = cluster
        .operator()
        .await?
        .list_tasks(pb::ListTasksRequest {
            framework_id: fw.id(),
            include_completed: true,
        })
        .await?
        .into_inner()
        .tasks;
    let active = tasks
        .iter()
        .filter(|t| !pb::TaskState::try_from(t.state).is_ok_and(pb::TaskState::is_terminal))
        .count();
    assert_eq!(active, 0, "no task left active");
    Ok(())
}

/// A master restarted mid-run keeps frameworks, agents and tasks; agents
/// re-register, the framework re-subscribes with its id and keeps its
/// running task, which it can still kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_restart_keeps_frameworks_agents_and_tasks() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = Cluster::start(&["cpus:2;mem:1024", "cpus:2;mem:1024"]).await?;
    cluster.wait_agents(2, Duration::from_secs(10)).await?;
    let config = FrameworkConfig::new("survivor").failover_timeout(Duration::from_secs(60));
    let (fw, mut events) = berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;

    let offers = next_matching(&mut events, Duration::from_secs(10), |e| match e {
        Event::Offers(o) => Some(o),
        _ => None,
    })
    .await?;
    let task = berth_sdk::shell_task("sleeper", "sleeper", "sleep 600", "cpus:0.5;mem:64")?;
    let plan = berth_sdk::pack_offers(&offers, vec![task], Strategy::FirstFit)?;
    let (offer, tasks) = plan.launches.into_iter().next().expect("placed");
    fw.accept(vec![offer], tasks, None).await?;
    next_matching(&mut events, Duration::from_secs(10), |e| match e {
        Event::Update(s)
            if s.task_id == "sleeper"
                && berth_tests::task_state(&s) == pb::TaskState::TaskRunning =>
        {
            Some(())
        }
        _ => None,
    })
    .await?;

    cluster.restart_master().await?;

    // The framework comes back with the same id.
    let (id, resubscribed) = next_matching(&mut events, Duration::from_secs(20), |e| match e {
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
    cluster.wait_agents(2, Duration::from_secs(20)).await?;

    let mut op = cluster.operator().await?;
    let frameworks = op
        .list_frameworks(pb::Empty {})
        .await?
        .into_inner()
        .frameworks;
    assert_eq!(frameworks.len(), 1);
    assert_eq!(
        frameworks[0].info.as_ref().map(|i| i.id.clone()),
        Some(fw.id())
    );
    let tasks = op
        .list_tasks(pb::ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_id, "sleeper");
    assert_eq!(tasks[0].state, pb::TaskState::TaskRunning as i32);

    // Reconciliation reports it running; a kill still reaches it.
    fw.reconcile_all().await?;
    next_matching(&mut events, Duration::from_secs(10), |e| match e {
        Event::Update(s)
            if s.task_id == "sleeper" && s.reason() == pb::TaskReason::Reconciliation =>
        {
            assert_eq!(berth_tests::task_state(&s), pb::TaskState::TaskRunning);
            Some(())
        }
        _ => None,
    })
    .await?;
    fw.kill(&berth_sdk::TaskId::new("sleeper").unwrap(), None)
        .await?;
    next_matching(&mut events, Duration::from_secs(15), |e| match e {
        Event::Update(s)
            if s.task_id == "sleeper"
                && berth_tests::task_state(&s) == pb::TaskState::TaskKilled =>
        {
            Some(())
        }
        _ => None,
    })
    .await?;
    Ok(())
}

/// An agent cut off past the ping timeout: its tasks are UNREACHABLE for a
/// partition-aware framework and LOST for another; when the link is back
/// the agent re-registers and both see RUNNING again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_agent_goes_unreachable_and_comes_back() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = Cluster::start(&[]).await?;
    let proxy = Proxy::start(cluster.master.addr).await?;
    cluster
        .add_agent(&proxy.addr.to_string(), "cpus:2;mem:1024")
        .await?;
    cluster.wait_agents(1, Duration::from_secs(10)).await?;

    let mut frameworks = Vec::new();
    for (name, aware) in [("aware", true), ("plain", false)] {
        let config = FrameworkConfig::new(name)
            .partition_aware(aware)
            .failover_timeout(Duration::from_secs(60));
        let (fw, mut events) = berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;
        let offers = next_matching(&mut events, Duration::from_secs(10), |e| match e {
            Event::Offers(o) => Some(o),
            _ => None,
        })
        .await?;
        let task =
            berth_sdk::shell_task(format!("{name}-task"), name, "sleep 600", "cpus:0.5;mem:64")?;
        let plan = berth_sdk::pack_offers(&offers, vec![task], Strategy::FirstFit)?;
        let (offer, tasks) = plan.launches.into_iter().next().expect("placed");
        fw.accept(vec![offer], tasks, Some(Duration::from_secs(600)))
            .await?;
        next_matching(&mut events, Duration::from_secs(10), |e| match e {
            Event::Update(s) if berth_tests::task_state(&s) == pb::TaskState::TaskRunning => {
                Some(())
            }
            _ => None,
        })
        .await?;
        frameworks.push((fw, events, aware));
    }

    proxy.cut().await;
    for (_, events, aware) in &mut frameworks {
        let expected = if *aware {
            pb::TaskState::TaskUnreachable
        } else {
            pb::TaskState::TaskLost
        };
        let s = next_matching(events, Duration::from_secs(15), |e| match e {
            Event::Update(s) if s.reason() == pb::TaskReason::AgentUnreachable => Some(s),
            _ => None,
        })
        .await?;
        assert_eq!(berth_tests::task_state(&s), expected);
    }
    let agents = cluster
        .operator()
        .await?
        .list_agents(pb::Empty {})
        .await?
        .into_inner()
        .agents;
    assert_eq!(agents[0].state, "UNREACHABLE");

    proxy.restore();
    for (_, events, _) in &mut frameworks {
        let s = next_matching(events, Duration::from_secs(20), |e| match e {
            Event::Update(s) if s.reason() == pb::TaskReason::AgentReregistered => Some(s),
            _ => None,
        })
        .await?;
        assert_eq!(berth_tests::task_state(&s), pb::TaskState::TaskRunning);
    }
    let agents = cluster.wait_agents(1, Duration::from_secs(10)).await?;
    assert_eq!(agents[0].state, "ACTIVE");
    let tasks = cluster
        .operator()
        .await?
        .list_tasks(pb::ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    assert!(
        tasks
            .iter()
            .all(|t| t.state == pb::TaskState::TaskRunning as i32),
        "{tasks:?}"
    );
    Ok(())
}

/// A framework that disconnects keeps its tasks until its failover timeout
/// expires; then the master removes it and the agent kills its tasks.
/// A framework that comes back in time keeps its tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_timeout_kills_tasks_only_after_it_expires() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(&["cpus:2;mem:1024"]).await?;
    cluster.wait_agents(1, Duration::from_secs(10)).await?;
    let mut op = cluster.operator().await?;

    let launch = |name: &'static str, failover: Duration| {
        let master = cluster.master_addr();
        async move {
            let config = FrameworkConfig::new(name).failover_timeout(failover);
            let (fw, mut events) = berth_sdk::subscribe(vec![master], config).await?;
            let offers = next_matching(&mut events, Duration::from_secs(10), |e| match e {
                Event::Offers(o) => Some(o),
                _ => None,
            })
            .await?;
            let task =
                berth_sdk::shell_task(format!("{name}-t"), name, "sleep 600", "cpus:0.2;mem:32")?;
            let plan = berth_sdk::pack_offers(&offers, vec![task], Strategy::FirstFit)?;
            let (offer, tasks) = plan.launches.into_iter().next().expect("placed");
            fw.accept(vec![offer], tasks, Some(Duration::ZERO)).await?;
            next_matching(&mut events, Duration::from_secs(10), |e| match e {
                Event::Update(s) if berth_tests::task_state(&s) == pb::TaskState::TaskRunning => {
                    Some(())
                }
                _ => None,
            })
            .await?;
            anyhow::Ok((fw, events))
        }
    };

    // "brief" disconnects for good; "returns" comes back within its timeout.
    let (brief, brief_events) = launch("brief", Duration::from_secs(2)).await?;
    let brief_id = brief.id();
    drop(brief_events);
    let (returns, returns_events) = launch("returns", Duration::from_secs(30)).await?;
    let returns_id = returns.id();
    drop(returns_events);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Within the timeout both frameworks and tasks are still there.
    let tasks = op
        .list_tasks(pb::ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let frameworks = op
        .list_frameworks(pb::Empty {})
        .await?
        .into_inner()
        .frameworks;
    assert!(frameworks.iter().all(|f| !f.connected), "{frameworks:?}");

    // "returns" re-subscribes with its id and finds its task running.
    let config = FrameworkConfig::new("returns")
        .framework_id(returns_id.clone())
        .failover_timeout(Duration::from_secs(30));
    let (again, mut again_events) =
        berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;
    assert_eq!(again.id(), returns_id);
    again.reconcile_all().await?;
    let s = next_matching(&mut again_events, Duration::from_secs(10), |e| match e {
        Event::Update(s) if s.task_id == "returns-t" => Some(s),
        _ => None,
    })
    .await?;
    assert_eq!(berth_tests::task_state(&s), pb::TaskState::TaskRunning);

    // "brief" is removed once its 2 s run out, and its task is killed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let frameworks = op
            .list_frameworks(pb::Empty {})
            .await?
            .into_inner()
            .frameworks;
        let tasks = op
            .list_tasks(pb::ListTasksRequest {
                framework_id: String::new(),
                include_completed: true,
            })
            .await?
            .into_inner()
            .tasks;
        let brief_gone = frameworks
            .iter()
            .all(|f| f.info.as_ref().is_some_and(|i| i.id != brief_id));
        let brief_task = tasks.iter().find(|t| t.task_id == "brief-t");
        if brief_gone && brief_task.is_some_and(|t| t.state == pb::TaskState::TaskKilled as i32) {
            let returns_task = tasks
                .iter()
                .find(|t| t.task_id == "returns-t")
                .expect("returns-t listed");
            assert_eq!(returns_task.state, pb::TaskState::TaskRunning as i32);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "brief was not removed: {frameworks:?} {tasks:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its process is really gone: the agent reports the kill, which the
    // master acknowledges on the removed framework's behalf.
    let agents = op.list_agents(pb::Empty {}).await?.into_inner().agents;
    assert_eq!(agents[0].task_count, 1);
    Ok(())
}

/// A drained agent gets no new offers; reactivated, it does again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_agent_gets_no_offers() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(&["cpus:1;mem:256", "cpus:1;mem:256"]).await?;
    let agents = cluster.wait_agents(2, Duration::from_secs(10)).await?;
    let drained = agents[0].id.clone();
    let mut op = cluster.operator().await?;
    op.drain_agent(pb::AgentRef {
        agent_id: drained.clone(),
    })
    .await?;

    let config = FrameworkConfig::new("drain-watch");
    let (fw, mut events) = berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;
    // Decline everything quickly for two seconds and record the agents seen.
    let mut seen = BTreeSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(ev)) = tokio::time::timeout_at(until, events.next()).await {
        if let Event::Offers(offers) = ev {
            seen.extend(offers.iter().map(|o| o.agent_id.clone()));
            fw.decline(
                offers
                    .into_iter()
                    .map(|o| berth_sdk::OfferId::new(o.id).unwrap())
                    .collect(),
                Some(Duration::ZERO),
            )
            .await?;
        }
    }
    assert!(
        !seen.contains(&drained),
        "offers came from the drained agent"
    );
    assert_eq!(seen.len(), 1);
    let listed = op.list_agents(pb::Empty {}).await?.into_inner().agents;
    assert_eq!(
        listed
            .iter()
            .find(|a| a.id == drained)
            .map(|a| a.state.as_str()),
        Some("DRAINING")
    );

    op.reactivate_agent(pb::AgentRef {
        agent_id: drained.clone(),
    })
    .await?;
    next_matching(&mut events, Duration::from_secs(10), |e| match e {
        Event::Offers(o) if o.iter().any(|o| o.agent_id == drained) => Some(()),
        _ => None,
    })
    .await?;
    Ok(())
}

/// A task that needs more memory than any agent has is published as
/// pending with its per-dimension explanation; `ListPending` shows it. A
/// restarted master starts without pending work and gets it back when the
/// SDK re-subscribes (with the time the task started waiting kept); after
/// teardown it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_work_is_explained_republished_and_dropped() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = Cluster::start(&["cpus:2;mem:1024", "cpus:2;mem:512"]).await?;
    cluster.wait_agents(2, Duration::from_secs(10)).await?;
    let config = FrameworkConfig::new("too-big").failover_timeout(Duration::from_secs(60));
    let (fw, mut events) = berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;

    // Hold one offer of each agent, then pack into them.
    let mut held: BTreeMap<String, pb::Offer> = BTreeMap::new();
    while held.len() < 2 {
        let offers = next_matching(&mut events, Duration::from_secs(10), |e| match e {
            Event::Offers(o) => Some(o),
            _ => None,
        })
        .await?;
        held.extend(offers.into_iter().map(|o| (o.agent_id.clone(), o)));
    }
    let held: Vec<pb::Offer> = held.into_values().collect();
    let task = berth_sdk::shell_task("huge", "huge", "true", "cpus:1;mem:4096")?;
    let plan = berth_sdk::pack_offers(&held, vec![task], Strategy::BestFit)?;
    assert_eq!(plan.placed(), 0);
    fw.update_pending(berth_sdk::pending_tasks(&held, &plan.unplaced)?)
        .await?;

    let mut op = cluster.operator().await?;
    let listed = op
        .list_pending(pb::ListPendingRequest::default())
        .await?
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let view = &listed[0];
    assert_eq!(view.framework_id, fw.id());
    assert_eq!(view.framework_name, "too-big");
    assert!(view.connected);
    let task = view.task.clone().expect("the task");
    assert_eq!(task.task_id, "huge");
    assert_eq!((task.considered, task.fit), (2, 0));
    let short = task.short_on.expect("counts");
    assert_eq!((short.cpus, short.mem, short.disk), (0, 2, 0));
    assert_eq!(task.reason, "no offer fits: 2 short on mem");
    assert_eq!(task.resources.as_ref().map(|r| r.mem), Some(4096.0));
    assert!(task.since > 0.0 && task.since <= view.updated_at);
    let other = op
        .list_pending(pb::ListPendingRequest {
            framework_id: "fw-someone-else".into(),
        })
        .await?
        .into_inner()
        .tasks;
    assert!(other.is_empty());

    // Soft state: the restarted master has none until the SDK publishes
    // it again after re-subscribing.
    cluster.restart_master().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let again = loop {
        if let Ok(mut op) = cluster.operator().await
            && let Ok(list) = op.list_pending(pb::ListPendingRequest::default()).await
            && let [view] = list.into_inner().tasks.as_slice()
        {
            break view.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pending task was not published again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let republished = again.task.expect("the task");
    assert_eq!(republished.reason, task.reason);
    // Kept by the SDK (the master rounds a time later than its own clock
    // down to its millisecond).
    assert!(
        (republished.since - task.since).abs() < 0.01,
        "the waiting time is kept: {} then {}",
        task.since,
        republished.since
    );

    // Teardown drops it.
    next_matching(&mut events, Duration::from_secs(30), |e| match e {
        Event::Subscribed { .. } => Some(()),
        _ => None,
    })
    .await?;
    fw.teardown().await?;
    let mut op = cluster.operator().await?;
    let after = op
        .list_pending(pb::ListPendingRequest::default())
        .await?
        .into_inner()
        .tasks;
    assert!(after.is_empty(), "{after:?}");
    Ok(())
}
