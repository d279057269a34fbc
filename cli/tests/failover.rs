//! Three real `berth master` processes and two agents: SIGKILL the leader
//! while a framework launches 1,000 tasks.

use berth_tests::{ChildProcess, free_port};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_sdk::{Event, FrameworkConfig, Strategy};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// raft-rs randomizes the election timeout in [10, 20) ticks of 100 ms.
const MAX_ELECTION_TIMEOUT: Duration = Duration::from_secs(2);
const TASKS: usize = 1000;

/// Where a daemon's log goes: `<dir>/<name>.log`, for [`log_tails`].
fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The last lines of every daemon's log in `dir`, for a failure message.
fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut logs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("== {}\n", log.display()));
        for line in &lines[lines.len().saturating_sub(25)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn master(id: u64, addrs: &[String], dir: &Path) -> ChildProcess {
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    ChildProcess(
        Command::new(BERTH)
            .args([
                "master",
                "--id",
                &id.to_string(),
                "--peers",
                &peers.join(","),
            ])
            .args([
                "--listen",
                &addrs[usize::try_from(id).expect("small id") - 1],
            ])
            .arg("--data-dir")
            .arg(dir.join(format!("master-{id}")))
            .args([
                "--max-completed-tasks",
                "5000",
                "--agent-ping-interval",
                "0.5",
            ])
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("master-{id}")))
            .spawn()
            .expect("berth master starts"),
    )
}

async fn operator(
    addr: &str,
) -> Option<pb::operator_client::OperatorClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Channel::from_shared(pb::endpoint_uri(addr))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .ok()?;
    Some(pb::operator_client::OperatorClient::new(ch))
}

/// The Raft id of the leader, as any live master sees it.
async fn leader(addrs: &[String]) -> Option<u64> {
    for a in addrs {
        if let Some(mut op) = operator(a).await
            && let Ok(l) = op.get_leader(pb::Empty {}).await
        {
            let l = l.into_inner();
            if l.raft_id != 0 {
                return Some(l.raft_id);
            }
        }
    }
    None
}

/// Whether the leader at `addr` commits a write.
async fn writes(addr: &str) -> bool {
    let Some(mut op) = operator(addr).await else {
        return false;
    };
    op.set_weight(pb::SetWeightRequest {
        role: "probe".into(),
        weight: 1.0,
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_leader_while_launching_a_thousand_tasks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let marks = dir.path().join("runs");
    std::fs::create_dir_all(&marks)?;
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut masters: BTreeMap<u64, ChildProcess> = (1..=3)
        .map(|id| (id, master(id, &addrs, dir.path())))
        .collect();
    let mut agents = Vec::new();
    for a in 0..2 {
        agents.push(ChildProcess(
            Command::new(BERTH)
                .args([
                    "agent",
                    "--master",
                    &addrs.join(","),
                    "--listen",
                    "127.0.0.1:0",
                ])
                .arg("--work-dir")
                .arg(dir.path().join(format!("agent-{a}")))
                .args(["--resources", "cpus:16;mem:16384"])
                .stdout(Stdio::null())
                .stderr(log_file(dir.path(), &format!("agent-{a}")))
                .spawn()?,
        ));
    }

    let config = FrameworkConfig::new("thousand").failover_timeout(Duration::from_secs(300));
    let (fw, mut events) = berth_sdk::subscribe(addrs.clone(), config).await?;

    let mut accepted: BTreeSet<String> = BTreeSet::new();
    let mut next = 0_usize;
    let mut killed: Option<(u64, Instant)> = None;
    let mut serving_after: Option<Duration> = None;
    let mut finished: BTreeMap<String, String> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while finished.len() < TASKS || accepted.len() < TASKS {
        assert!(
            Instant::now() < deadline,
            "{} accepted, {} finished in time; the daemons' logs end:\n{}",
            accepted.len(),
            finished.len(),
            log_tails(dir.path())
        );
        // Kill the leader once a third of the tasks are accepted.
        if killed.is_none() && accepted.len() >= TASKS / 3 {
            let id = leader(&addrs).await.expect("a leader");
            drop(masters.remove(&id));
            killed = Some((id, Instant::now()));
        }
        if let (Some((id, at)), None) = (killed, serving_after)
            && let Some(new) = leader(&addrs).await
            && new != id
            && writes(&addrs[usize::try_from(new)? - 1]).await
        {
            serving_after = Some(at.elapsed());
        }
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await
        else {
            continue;
        };
        match ev {
            Event::Offers(offers) => {
                let want = TASKS.saturating_sub(accepted.len()).min(100 * offers.len());
                let tasks: Vec<pb::TaskInfo> = (0..want)
                    .map(|_| {
                        next += 1;
                        let mut t = berth_sdk::shell_task(
                            format!("t{next:05}"),
                            "mark",
                            format!("echo run >> {}/$BERTH_TASK_ID", marks.display()),
                            "cpus:0.01;mem:1",
                        )
                        .expect("valid task");
                        t.kill_grace_period_seconds = 1.0;
                        t
                    })
                    .collect();
                let plan = berth_sdk::pack_offers(&offers, tasks, Strategy::FirstFit)?;
                for (offer, tasks) in plan.launches {
                    // A launch counts only if the master said OK; one that
                    // failed during the failover is not retried under the
                    // same id.
                    if let Ok(ids) = fw.accept(vec![offer], tasks, Some(Duration::ZERO)).await {
                        accepted.extend(ids);
                    }
                }
                if !plan.unused.is_empty() {
                    let _ = fw.decline(plan.unused, Some(Duration::ZERO)).await;
                }
            }
            Event::Update(s) => {
                let state = pb::TaskState::try_from(s.state).unwrap_or(pb::TaskState::Unspecified);
                if state.is_terminal() && accepted.contains(&s.task_id) {
                    assert_eq!(state, pb::TaskState::TaskFinished, "{s:?}");
                    if let Some(agent) = finished.insert(s.task_id.clone(), s.agent_id.clone()) {
                        assert_eq!(agent, s.agent_id, "task {} ended on two agents", s.task_id);
                    }
                }
            }
            _ => {}
        }
    }
    let (killed_id, _) = killed.expect("the leader was killed");
    let serving_after = serving_after.expect("a new leader served");
    eprintln!("new leader served a write {serving_after:?} after the SIGKILL");
    assert!(
        serving_after <= 2 * MAX_ELECTION_TIMEOUT,
        "new leader took {serving_after:?}, more than twice the election timeout"
    );

    // Every accepted launch is in the new leader's registry, finished.
    let new = leader(&addrs).await.expect("a leader");
    assert_ne!(new, killed_id);
    let mut op = operator(&addrs[usize::try_from(new)? - 1])
        .await
        .expect("leader reachable");
    let tasks = op
        .list_tasks(pb::ListTasksRequest {
            framework_id: fw.id(),
            include_completed: true,
        })
        .await?
        .into_inner()
        .tasks;
    let in_registry: BTreeMap<&str, i32> = tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.state))
        .collect();
    for id in &accepted {
        assert_eq!(
            in_registry.get(id.as_str()).copied(),
            Some(pb::TaskState::TaskFinished as i32),
            "accepted task {id} missing or not finished in the new leader's registry"
        );
    }
    // No task ran twice: each wrote its mark exactly once.
    for entry in std::fs::read_dir(&marks)? {
        let entry = entry?;
        let runs = std::fs::read_to_string(entry.path())?.lines().count();
        assert_eq!(runs, 1, "task {:?} ran {runs} times", entry.file_name());
    }
    drop(agents);
    Ok(())
}
