//! SIGKILL a real `berth agent` and start it again.
//!
//! - Under 21 running Docker containers and a process task: it re-adopts
//!   them from its checkpoint (same containers, not restarted; the same
//!   process), reports the container that exited while it was down with its
//!   exit code, removes an orphan carrying its labels and leaves a foreign
//!   container alone. Needs Docker (a failure in CI, a skip elsewhere).
//! - Under 20 process tasks launched with `berth run` that end with 20
//!   distinct exit codes while it is down: their supervisors record the
//!   codes, the restarted agent reports them, and each `berth run` prints
//!   its task's whole output (read across the restart) and exits with its
//!   code.

use berth_tests::ChildProcess;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_sdk::{Event, FrameworkConfig};
use berth_tests::{TEST_IMAGE, docker, docker_ready, remove_owned_containers};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const SLEEPERS: usize = 20;

/// Removes what the test created, whatever happens.
struct Cleanup {
    owner: String,
    foreign: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_owned_containers(&self.owner);
        let _ = docker(&["rm", "-f", &self.foreign]);
    }
}

fn agent(master: &str, work: &Path) -> ChildProcess {
    berth_tests::berth_agent(
        BERTH,
        master,
        work,
        &[
            "--resources",
            "cpus:8;mem:4096;disk:1000;ports:[31300-31399]",
        ],
    )
}

/// Docker id and start time of every container of `owner`, by task id.
fn containers(owner: &str) -> BTreeMap<String, (String, String)> {
    let filter = format!("label=berth.owner={owner}");
    let ids = docker(&["ps", "-q", "--no-trunc", "--filter", &filter]).unwrap_or_default();
    ids.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|id| {
            let info = docker(&[
                "inspect",
                "--format",
                "{{index .Config.Labels \"berth.task_id\"}} {{.State.StartedAt}} {{.RestartCount}}",
                id,
            ])?;
            let mut parts = info.split_whitespace();
            let task = parts.next()?.to_string();
            let started = format!("{} restarts={}", parts.next()?, parts.next()?);
            Some((task, (id.to_string(), started)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_readopts_its_containers() -> anyhow::Result<()> {
    if !docker_ready("sigkilled_agent_readopts_its_containers") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let work = std::path::absolute(dir.path().join("agent"))?;
    let owner = work.display().to_string();
    let suffix = dir
        .path()
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        })
        .unwrap_or_default();
    let cleanup = Cleanup {
        owner: owner.clone(),
        foreign: format!("berth-test-foreign-{suffix}"),
    };
    let (_master, master_addr) = berth_tests::berth_master(BERTH, &dir.path().join("master"));
    let mut agent_proc = agent(&master_addr, &work);

    let config = FrameworkConfig::new("agent-restart").failover_timeout(Duration::from_secs(300));
    let (fw, mut events) = berth_sdk::subscribe(vec![master_addr.clone()], config).await?;
    let container = |id: &str, shell: &str| -> anyhow::Result<pb::TaskInfo> {
        let mut t = berth_sdk::shell_task(id, id, shell, "cpus:0.1;mem:16")?;
        t.container = Some(pb::ContainerInfo {
            image: TEST_IMAGE.into(),
            ..Default::default()
        });
        Ok(t)
    };
    let mut tasks: Vec<pb::TaskInfo> = (0..SLEEPERS)
        .map(|i| container(&format!("sleeper-{i:02}"), "sleep 1000"))
        .collect::<Result<_, _>>()?;
    // A plain process task (no container): re-adopted by pid.
    tasks.push(berth_sdk::shell_task(
        "process",
        "process",
        "sleep 1000",
        "cpus:0.1;mem:16",
    )?);
    // Exits with 7 once the test creates `go` in its sandbox.
    tasks.push(container(
        "exiter",
        "while [ ! -f /mnt/berth/sandbox/go ]; do sleep 0.2; done; exit 7",
    )?);

    // Launch all 21 on the one agent and wait until they run.
    let mut running = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut pending = Some(tasks);
    while running.len() < SLEEPERS + 2 {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} tasks running in time", running.len()))?
            .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
        match ev {
            Event::Offers(offers) => {
                if let Some(tasks) = pending.take() {
                    fw.accept(
                        vec![berth_sdk::OfferId::new(offers[0].id.clone()).unwrap()],
                        tasks,
                        Some(Duration::ZERO),
                    )
                    .await?;
                }
            }
            Event::Update(st) => {
                anyhow::ensure!(
                    !berth_tests::task_state(&st).is_terminal(),
                    "task ended early: {st:?}"
                );
                if berth_tests::task_state(&st) == pb::TaskState::TaskRunning {
                    running.insert(st.task_id.clone(), st);
                }
            }
            _ => {}
        }
    }
    let before = containers(&owner);
    assert_eq!(before.len(), SLEEPERS + 1, "{before:#?}");

    // SIGKILL the agent; the exiter exits while it is down.
    agent_proc.0.kill()?;
    agent_proc.0.wait()?;
    std::fs::write(
        work.join("sandboxes")
            .join(fw.id())
            .join("exiter")
            .join("go"),
        b"",
    )?;
    let exiter_id = before["exiter"].0.clone();
    let t0 = Instant::now();
    while docker(&["inspect", "--format", "{{.State.Running}}", &exiter_id]).as_deref()
        != Some("false")
    {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "the exiter did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An orphan with this agent's labels but no checkpoint record, and a
    // container berth did not create.
    let orphan = format!("berth-test-orphan-{suffix}");
    docker(&[
        "run",
        "-d",
        "--name",
        &orphan,
        "--label",
        &format!("berth.owner={owner}"),
        "--label",
        "berth.container_id=not-in-the-checkpoint",
        TEST_IMAGE,
        "sleep",
        "1000",
    ])
    .ok_or_else(|| anyhow::anyhow!("cannot start the orphan"))?;
    docker(&[
        "run",
        "-d",
        "--name",
        &cleanup.foreign,
        TEST_IMAGE,
        "sleep",
        "1000",
    ])
    .ok_or_else(|| anyhow::anyhow!("cannot start the foreign container"))?;

    let _agent = agent(&master_addr, &work);

    // The exit that happened while the agent was down is reported.
    let end = berth_tests::next_matching(&mut events, Duration::from_secs(60), |e| match e {
        Event::Update(st) if berth_tests::task_state(&st).is_terminal() => Some(st),
        _ => None,
    })
    .await?;
    assert_eq!(end.task_id, "exiter", "{end:?}");
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFailed,
        "{end:?}"
    );
    assert_eq!(end.exit_code, Some(7), "{end:?}");

    // The orphan goes; the 20 sleepers are the same containers, never
    // restarted; the foreign one is untouched.
    let t0 = Instant::now();
    while docker(&["inspect", &orphan]).is_some() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "the orphan was not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = containers(&owner);
    for i in 0..SLEEPERS {
        let task = format!("sleeper-{i:02}");
        assert_eq!(after.get(&task), before.get(&task), "{task}");
        let running = docker(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            &before[&task].0,
        ]);
        assert_eq!(running.as_deref(), Some("true"), "{task}");
    }
    assert_eq!(
        docker(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            &cleanup.foreign
        ])
        .as_deref(),
        Some("true"),
        "the foreign container is left alone"
    );

    // And the master sees the 20 containers and the process running on the
    // re-registered agent.
    let ch = tonic::transport::Channel::from_shared(pb::endpoint_uri(&master_addr))?
        .connect()
        .await?;
    let mut op = pb::operator_client::OperatorClient::new(ch);
    let t0 = Instant::now();
    loop {
        let tasks = op
            .list_tasks(pb::ListTasksRequest {
                framework_id: fw.id(),
                include_completed: false,
            })
            .await?
            .into_inner()
            .tasks;
        let n = tasks
            .iter()
            .filter(|t| t.state == pb::TaskState::TaskRunning as i32)
            .count();
        if n == SLEEPERS + 1 {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "master shows {n} running tasks, not {}",
            SLEEPERS + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The process task really is the same process: kill it through berth
    // and it ends as KILLED (not as an unknown exit).
    fw.kill(&berth_sdk::TaskId::new("process").unwrap(), None)
        .await?;
    let end = berth_tests::next_matching(&mut events, Duration::from_secs(30), |e| match e {
        Event::Update(st)
            if st.task_id == "process" && berth_tests::task_state(&st).is_terminal() =>
        {
            Some(st)
        }
        _ => None,
    })
    .await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskKilled,
        "{end:?}"
    );
    drop(cleanup);
    Ok(())
}

/// Tasks of the process bar.
const RUNS: usize = 20;
/// Lines each of them writes before and after the agent's death; task 0
/// writes [`BIG_LINES`] longer ones (about 500 KB each time: many chunks
/// of the log API, read across the restart from an offset).
const LINES: usize = 40;
const BIG_LINES: usize = 5000;
/// What the long lines of task 0 end with.
const PAD: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";

/// How many lines task `i` writes in each phase, and what ends them.
fn shape(i: usize) -> (usize, &'static str) {
    if i == 0 {
        (BIG_LINES, PAD)
    } else {
        (LINES, "")
    }
}

/// Starts `berth agent` on `listen` (a fixed address: the restarted agent
/// must be where `berth run` reads the logs), process tasks only, its log
/// appended to `log`.
fn agent_on(master: &str, work: &Path, listen: &str, log: &Path) -> ChildProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    let child = std::process::Command::new(BERTH)
        .args(["agent", "--master", master, "--listen", listen])
        .arg("--work-dir")
        .arg(work)
        .args(["--no-docker", "--resources", "cpus:8;mem:4096"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("berth agent starts");
    ChildProcess(child)
}

/// What task `i` writes to stdout.
fn expected_stdout(i: usize) -> String {
    let (lines, pad) = shape(i);
    let mut s = String::new();
    for phase in ["before", "after"] {
        for line in 0..lines {
            s.push_str(&format!("task {i} line {line} {phase}{pad}\n"));
        }
    }
    s
}

/// The sandbox of `berth run --name t<i>`'s task (its id is the name and
/// a suffix of the framework id).
fn sandbox_of(work: &Path, i: usize) -> Option<std::path::PathBuf> {
    let prefix = format!("t{i}-");
    std::fs::read_dir(work.join("sandboxes"))
        .ok()?
        .flatten()
        .filter_map(|fw| std::fs::read_dir(fw.path()).ok())
        .flatten()
        .flatten()
        .find(|t| t.file_name().to_string_lossy().starts_with(&prefix))
        .map(|t| t.path())
}

fn text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_tasks_that_end_while_the_agent_is_down_keep_their_exit_codes_and_output()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let work = std::path::absolute(dir.path().join("agent"))?;
    let agent_log = dir.path().join("agent.log");
    let (_master, master_addr) = berth_tests::berth_master(BERTH, &dir.path().join("master"));
    let listen = format!("127.0.0.1:{}", berth_tests::free_port());
    let mut agent_proc = agent_on(&master_addr, &work, &listen, &agent_log);
    let go = dir.path().join("go");

    // 20 `berth run`s: each task writes LINES lines, waits for `go`, writes
    // LINES more and a line on stderr, and exits with its own code.
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let (lines, pad) = shape(i);
        let script = format!(
            "n=0; while [ $n -lt {lines} ]; do echo \"task {i} line $n before{pad}\"; n=$((n+1)); done; \
             echo 'task {i} stderr before' >&2; \
             while [ ! -f {go} ]; do sleep 0.05; done; \
             n=0; while [ $n -lt {lines} ]; do echo \"task {i} line $n after{pad}\"; n=$((n+1)); done; \
             echo 'task {i} stderr after' >&2; exit {i}",
            go = go.display()
        );
        let out = dir.path().join(format!("run-{i}.stdout"));
        let err = dir.path().join(format!("run-{i}.stderr"));
        let child = std::process::Command::new(BERTH)
            .args([
                "run",
                "--master",
                &master_addr,
                "--cpus",
                "0.1",
                "--mem",
                "16",
            ])
            .args(["--name", &format!("t{i}"), "--", "sh", "-c", &script])
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()?;
        runs.push((ChildProcess(child), out, err));
    }

    // Every task has written its first part and every `berth run` has
    // shown it: the log streams are open when the agent dies.
    let t0 = Instant::now();
    for (i, (_, out, _)) in runs.iter().enumerate() {
        let (lines, pad) = shape(i);
        let last = format!("task {i} line {} before{pad}\n", lines - 1);
        while !text(out).contains(&last) {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "berth run {i} never showed its first part; stdout: {:?}, stderr: {:?}, agent: {}",
                text(out),
                text(&runs[i].2),
                text(&agent_log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // SIGKILL the agent; the tasks finish while it is down, and their
    // supervisors record how.
    agent_proc.0.kill()?;
    agent_proc.0.wait()?;
    std::fs::write(&go, b"")?;
    let t0 = Instant::now();
    for i in 0..RUNS {
        loop {
            let recorded = sandbox_of(&work, i).is_some_and(|s| s.join(".berth-exit").exists());
            if recorded {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "task {i} did not end while the agent was down"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _agent = agent_on(&master_addr, &work, &listen, &agent_log);

    // Each `berth run` exits with its task's code and has shown all of its
    // output, once.
    let t0 = Instant::now();
    for (i, (child, out, err)) in runs.iter_mut().enumerate() {
        let status = loop {
            if let Some(s) = child.0.try_wait()? {
                break s;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "berth run {i} did not end; stderr: {}",
                text(err)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status.code(),
            Some(i32::try_from(i)?),
            "berth run {i}; stderr: {}",
            text(err)
        );
        let shown = text(out);
        assert!(
            shown == expected_stdout(i),
            "berth run {i}'s stdout differs: {} bytes, {} expected; stderr: {}",
            shown.len(),
            expected_stdout(i).len(),
            text(err)
        );
        let shown = text(err);
        for line in [
            format!("task {i} stderr before\n"),
            format!("task {i} stderr after\n"),
        ] {
            assert_eq!(shown.matches(&line).count(), 1, "{line:?} in {shown}");
        }
    }

    // The master holds the true end of each task.
    let ch = tonic::transport::Channel::from_shared(pb::endpoint_uri(&master_addr))?
        .connect()
        .await?;
    let mut op = pb::operator_client::OperatorClient::new(ch);
    let tasks = op
        .list_tasks(pb::ListTasksRequest {
            framework_id: String::new(),
            include_completed: true,
        })
        .await?
        .into_inner()
        .tasks;
    for i in 0..RUNS {
        let prefix = format!("t{i}-");
        let t = tasks
            .iter()
            .find(|t| t.task_id.starts_with(&prefix))
            .ok_or_else(|| anyhow::anyhow!("task {i} is not listed"))?;
        let st = t.status.clone().unwrap_or_default();
        let want = if i == 0 {
            pb::TaskState::TaskFinished
        } else {
            pb::TaskState::TaskFailed
        };
        assert_eq!(berth_tests::task_state(&st), want, "{st:?}");
        assert_eq!(st.exit_code, Some(i32::try_from(i)?), "{st:?}");
        assert_eq!(st.reason(), pb::TaskReason::Exited, "{st:?}");
    }
    Ok(())
}
