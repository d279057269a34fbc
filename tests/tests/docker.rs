//! End-to-end tests of Docker tasks: an in-process master and an agent with
//! the Docker containerizer, on this machine's Docker Engine, running the
//! local `berth/busybox` image (no registry). In CI (`CI` set) a missing
//! daemon fails these tests; elsewhere they are skipped with a notice.
//! The image is built by `scripts/build-test-image.sh`.
//!
//! Covered: limits read back inside the container, output, exit code and
//! kill after the grace period; a missing image and an OOM kill with their
//! reasons; health checks; an agent without Docker failing container tasks
//! plainly; fetched files and uploaded outputs of container tasks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_sdk::{Event, Events, Framework, FrameworkConfig};
use berth_tests::files::{FileServer, tar_gz, tar_gz_entries};
use berth_tests::{Cluster, TEST_IMAGE, docker_ready, init_logging, remove_owned_containers};

const AGENT_RESOURCES: &str = "cpus:4;mem:2048;disk:1000;ports:[31200-31299]";

/// A cluster with one Docker-enabled agent and a subscribed framework.
struct Setup {
    cluster: Cluster,
    fw: Framework,
    events: Events,
    owner: String,
    /// Updates read while waiting for another task's.
    backlog: Vec<pb::TaskStatus>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        remove_owned_containers(&self.owner);
    }
}

async fn setup(name: &str) -> anyhow::Result<Setup> {
    init_logging();
    let mut cluster = Cluster::start(&[]).await?;
    let work = cluster.dir.path().join("agent-0");
    cluster
        .add_agent_with(AGENT_RESOURCES, |c| {
            c.docker = true;
            c.default_kill_grace = Duration::from_secs(1);
        })
        .await?;
    cluster.wait_agents(1, Duration::from_secs(10)).await?;
    let config = FrameworkConfig::new(name).failover_timeout(Duration::from_secs(60));
    let (fw, events) = berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;
    Ok(Setup {
        cluster,
        fw,
        events,
        owner: work.display().to_string(),
        backlog: Vec::new(),
    })
}

/// A container task running `shell` in the test image.
fn container_task(id: &str, shell: &str, resources: &str) -> anyhow::Result<pb::TaskInfo> {
    let mut t = berth_sdk::shell_task(id, id, shell, resources)?;
    t.container = Some(pb::ContainerInfo {
        image: TEST_IMAGE.into(),
        ..Default::default()
    });
    Ok(t)
}

/// Launches `tasks` on the next offer (which must hold them all).
async fn launch(s: &mut Setup, tasks: Vec<pb::TaskInfo>) -> anyhow::Result<()> {
    let offers = berth_tests::next_matching(&mut s.events, Duration::from_secs(15), |e| match e {
        Event::Offers(o) if !o.is_empty() => Some(o),
        _ => None,
    })
    .await?;
    let offer = &offers[0];
    let launched =
        s.fw.accept(
            vec![berth_sdk::OfferId::new(offer.id.clone())?],
            tasks.clone(),
            Some(Duration::ZERO),
        )
        .await?;
    anyhow::ensure!(launched.len() == tasks.len(), "launched {launched:?}");
    let rest: Vec<String> = offers[1..].iter().map(|o| o.id.clone()).collect();
    if !rest.is_empty() {
        s.fw.decline(
            rest.into_iter()
                .filter_map(|id| berth_sdk::OfferId::new(id).ok())
                .collect(),
            Some(Duration::ZERO),
        )
        .await?;
    }
    Ok(())
}

/// Waits for the first update of `task` that `pick` accepts; returns it
/// and every update of `task` seen up to it.
async fn wait_update(
    s: &mut Setup,
    task: &str,
    timeout: Duration,
    mut pick: impl FnMut(&pb::TaskStatus) -> bool,
) -> anyhow::Result<(pb::TaskStatus, Vec<pb::TaskStatus>)> {
    let mut seen = Vec::new();
    let task = task.to_string();
    while let Some(i) = s.backlog.iter().position(|st| st.task_id == task) {
        let st = s.backlog.remove(i);
        seen.push(st.clone());
        if pick(&st) {
            return Ok((st, seen));
        }
    }
    let backlog = &mut s.backlog;
    let status = berth_tests::next_matching(&mut s.events, timeout, |e| match e {
        Event::Update(st) if st.task_id == task => {
            seen.push(st.clone());
            pick(&st).then_some(st)
        }
        Event::Update(st) => {
            backlog.push(st);
            None
        }
        _ => None,
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; updates of {task}: {seen:#?}"))?;
    Ok((status, seen))
}

/// Reads a task's whole stdout or stderr through the agent's log API.
async fn read_log(
    s: &Setup,
    framework: &str,
    task: &str,
    file: pb::LogFile,
) -> anyhow::Result<String> {
    let addr = s.cluster.agents[0].addr.to_string();
    let ch = tonic::transport::Channel::from_shared(pb::endpoint_uri(&addr))?
        .connect()
        .await?;
    let mut client = pb::agent_client::AgentClient::new(ch);
    let mut stream = client
        .read_log(pb::ReadLogRequest {
            task_id: task.into(),
            framework_id: framework.into(),
            file: file as i32,
            offset: 0,
            follow: true,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) =
        tokio::time::timeout(Duration::from_secs(10), stream.message()).await??
    {
        out.extend_from_slice(&chunk.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The cgroup limits read back from inside the container, the output in the
/// log stream, the exit code; and a kill that ends in KILLED after the
/// grace period (the task ignores SIGTERM, so SIGKILL ends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_gets_limits_output_exit_code_and_is_killed() -> anyhow::Result<()> {
    if !docker_ready("container_gets_limits_output_exit_code_and_is_killed") {
        return Ok(());
    }
    let mut s = setup("docker-limits").await?;
    // cgroup v2 files, or the v1 ones.
    let limits = "cat /sys/fs/cgroup/memory.max 2>/dev/null \
                  || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                  cat /sys/fs/cgroup/cpu.max 2>/dev/null \
                  || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; \
                  echo to-stderr >&2; exit 3";
    let mut stubborn = container_task(
        "stubborn",
        "trap '' TERM; while true; do sleep 1; done",
        "cpus:0.1;mem:32",
    )?;
    stubborn.kill_grace_period_seconds = 1.0;
    launch(
        &mut s,
        vec![
            container_task("limits", limits, "cpus:0.5;mem:64")?,
            stubborn,
        ],
    )
    .await?;

    let (end, _) = wait_update(&mut s, "limits", Duration::from_secs(60), |st| {
        berth_tests::task_state(st).is_terminal()
    })
    .await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFailed,
        "{end:?}"
    );
    assert_eq!(end.exit_code, Some(3), "{end:?}");
    assert!(!end.container_id.is_empty());
    let fw = s.fw.id();
    let out = read_log(&s, &fw, "limits", pb::LogFile::Stdout).await?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("67108864"), "stdout: {out:?}");
    // cgroup v2 "50000 100000", v1 quota "50000" (period 100000).
    assert!(
        lines.get(1).is_some_and(|l| l.starts_with("50000")),
        "stdout: {out:?}"
    );
    let err = read_log(&s, &fw, "limits", pb::LogFile::Stderr).await?;
    assert_eq!(err.trim(), "to-stderr");

    wait_update(&mut s, "stubborn", Duration::from_secs(60), |st| {
        berth_tests::task_state(st) == pb::TaskState::TaskRunning
    })
    .await?;
    let started = Instant::now();
    s.fw.kill(&berth_sdk::TaskId::new("stubborn").unwrap(), None)
        .await?;
    let (end, _) = wait_update(&mut s, "stubborn", Duration::from_secs(30), |st| {
        berth_tests::task_state(st).is_terminal()
    })
    .await?;
    let took = started.elapsed();
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskKilled,
        "{end:?}"
    );
    assert_eq!(end.reason(), pb::TaskReason::KilledByRequest);
    assert!(
        took >= Duration::from_millis(900),
        "it ignores SIGTERM, so only SIGKILL after the 1 s grace ends it; took {took:?}"
    );
    assert!(took < Duration::from_secs(8), "killed too slowly: {took:?}");
    Ok(())
}

/// A missing image fails the task with the daemon's message; a task that
/// exceeds its memory limit fails with reason OOM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_and_oom_fail_with_their_reasons() -> anyhow::Result<()> {
    if !docker_ready("missing_image_and_oom_fail_with_their_reasons") {
        return Ok(());
    }
    let mut s = setup("docker-failures").await?;
    // Not on this machine, and its registry (the discard port on loopback)
    // refuses at once, so the pull fails fast even without a network.
    let mut missing = container_task("missing", "true", "cpus:0.1;mem:32")?;
    if let Some(c) = missing.container.as_mut() {
        c.image = "127.0.0.1:9/berth/does-not-exist:1".into();
    }
    let oom = container_task("oom", "head -c 200m /dev/zero | tail", "cpus:0.5;mem:16")?;
    launch(&mut s, vec![missing, oom]).await?;

    let mut ends = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ends.len() < 2 {
        let ev = tokio::time::timeout_at(deadline, s.events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        if let Event::Update(st) = ev
            && berth_tests::task_state(&st).is_terminal()
        {
            ends.insert(st.task_id.clone(), st);
        }
    }
    let missing = &ends["missing"];
    assert_eq!(
        berth_tests::task_state(missing),
        pb::TaskState::TaskFailed,
        "{missing:?}"
    );
    assert_eq!(missing.reason(), pb::TaskReason::LaunchFailed);
    assert!(
        missing
            .message
            .contains("127.0.0.1:9/berth/does-not-exist:1"),
        "the daemon's message names the image: {}",
        missing.message
    );
    let oom = &ends["oom"];
    assert_eq!(
        berth_tests::task_state(oom),
        pb::TaskState::TaskFailed,
        "{oom:?}"
    );
    assert_eq!(oom.reason(), pb::TaskReason::Oom, "{oom:?}");
    Ok(())
}

/// An HTTP check against a published port reports the task healthy; a
/// command check that starts failing gets the task killed with the reason;
/// a process task's TCP check against a closed port kills it after the
/// grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_report_healthy_and_kill_failing_tasks() -> anyhow::Result<()> {
    if !docker_ready("health_checks_report_healthy_and_kill_failing_tasks") {
        return Ok(());
    }
    let mut s = setup("docker-health").await?;
    // Failures in the grace period (while the container starts) do not
    // count until the task was healthy once.
    let fast = |hc: &mut pb::HealthCheck| {
        hc.interval_seconds = 0.2;
        hc.timeout_seconds = 2.0;
        hc.grace_period_seconds = 5.0;
        hc.consecutive_failures = 2;
    };

    // httpd on container port 8080, published on host port 31200.
    let mut web = container_task(
        "web",
        "echo ok > /tmp/index.html && httpd -f -p 8080 -h /tmp",
        "cpus:0.1;mem:32",
    )?;
    if let Some(r) = web.resources.as_mut() {
        r.ports = vec![pb::Range {
            begin: 31200,
            end: 31200,
        }];
    }
    if let Some(c) = web.container.as_mut() {
        c.port_mappings = vec![pb::PortMapping {
            container_port: 8080,
            host_port: 31200,
            protocol: String::new(),
        }];
    }
    let mut hc = pb::HealthCheck {
        http: Some(pb::HttpCheck {
            port: 31200,
            path: "/index.html".into(),
            scheme: String::new(),
        }),
        ..Default::default()
    };
    fast(&mut hc);
    web.health_check = Some(hc);

    // Healthy while /tmp/ok exists (about 3 s), then failing.
    let mut flaky = container_task(
        "flaky",
        "touch /tmp/ok; sleep 3; rm /tmp/ok; sleep 1000",
        "cpus:0.1;mem:32",
    )?;
    let mut hc = pb::HealthCheck {
        command: Some(pb::CommandInfo {
            shell: "test -f /tmp/ok".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    fast(&mut hc);
    flaky.health_check = Some(hc);

    // A process task whose TCP check never connects.
    let mut deaf = berth_sdk::shell_task("deaf", "deaf", "sleep 1000", "cpus:0.1;mem:32")?;
    let mut hc = pb::HealthCheck {
        tcp: Some(pb::TcpCheck { port: 31299 }),
        ..Default::default()
    };
    fast(&mut hc);
    hc.grace_period_seconds = 0.5;
    deaf.health_check = Some(hc);

    launch(&mut s, vec![web, flaky, deaf]).await?;

    let mut healthy: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    let mut ends = BTreeMap::new();
    let mut web_ports = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !(ends.contains_key("flaky")
        && ends.contains_key("deaf")
        && healthy.get("web").is_some_and(|h| h.contains(&true)))
    {
        let ev = tokio::time::timeout_at(deadline, s.events.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out; health {healthy:?}, ends {ends:#?}"))?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        let Event::Update(st) = ev else { continue };
        if let Some(h) = st.healthy
            && st.reason() == pb::TaskReason::HealthCheck
        {
            healthy.entry(st.task_id.clone()).or_default().push(h);
        }
        if st.task_id == "web" && berth_tests::task_state(&st) == pb::TaskState::TaskRunning {
            web_ports.clone_from(&st.ports);
        }
        if berth_tests::task_state(&st).is_terminal() {
            ends.insert(st.task_id.clone(), st);
        }
    }
    assert_eq!(
        web_ports,
        vec![pb::PortMapping {
            container_port: 8080,
            host_port: 31200,
            protocol: "tcp".into()
        }]
    );
    // The agent listens on loopback: so is the published port (and the
    // health check reached it there).
    let owner = format!("label=berth.owner={}", s.owner);
    let web = berth_tests::docker(&[
        "ps",
        "-q",
        "--filter",
        &owner,
        "--filter",
        "label=berth.task_id=web",
    ])
    .ok_or_else(|| anyhow::anyhow!("docker ps failed"))?;
    let bindings = berth_tests::docker(&[
        "inspect",
        "--format",
        "{{json .HostConfig.PortBindings}}",
        &web,
    ])
    .ok_or_else(|| anyhow::anyhow!("docker inspect {web} failed"))?;
    assert_eq!(
        bindings,
        r#"{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":"31200"}]}"#
    );
    assert!(!ends.contains_key("web"), "the healthy task keeps running");
    assert_eq!(healthy["flaky"], vec![true, false], "{healthy:?}");
    for id in ["flaky", "deaf"] {
        let end = &ends[id];
        assert_eq!(
            berth_tests::task_state(end),
            pb::TaskState::TaskKilled,
            "{end:?}"
        );
        assert_eq!(end.reason(), pb::TaskReason::HealthCheckFailed, "{end:?}");
        assert!(end.message.contains("health check failed"), "{end:?}");
        assert_eq!(end.healthy, Some(false), "{end:?}");
    }
    assert!(
        !healthy.get("deaf").is_some_and(|h| h.contains(&true)),
        "never healthy: {healthy:?}"
    );
    Ok(())
}

/// An agent without Docker fails a container task at once, saying why, and
/// still runs process tasks. Needs no Docker daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_without_docker_fails_container_tasks_plainly() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(&[AGENT_RESOURCES]).await?;
    cluster.wait_agents(1, Duration::from_secs(10)).await?;
    let config = FrameworkConfig::new("no-docker");
    let (fw, events) = berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;
    let mut s = Setup {
        cluster,
        fw,
        events,
        owner: String::from("/nonexistent-owner"),
        backlog: Vec::new(),
    };
    let plain = berth_sdk::shell_task("plain", "plain", "exit 0", "cpus:0.1;mem:16")?;
    launch(
        &mut s,
        vec![container_task("boxed", "true", "cpus:0.1;mem:16")?, plain],
    )
    .await?;
    let (end, _) = wait_update(&mut s, "boxed", Duration::from_secs(30), |st| {
        berth_tests::task_state(st).is_terminal()
    })
    .await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFailed,
        "{end:?}"
    );
    assert_eq!(end.reason(), pb::TaskReason::LaunchFailed);
    assert!(end.message.contains("no Docker daemon"), "{end:?}");
    let (end, _) = wait_update(&mut s, "plain", Duration::from_secs(30), |st| {
        berth_tests::task_state(st).is_terminal()
    })
    .await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFinished,
        "{end:?}"
    );
    Ok(())
}

/// A container task reads a file the agent fetched and extracted into its
/// sandbox (the image has no HTTP client) and leaves an artifact that the
/// agent uploads from the sandbox on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_tasks_get_fetched_files_and_upload_outputs() -> anyhow::Result<()> {
    if !docker_ready("container_tasks_get_fetched_files_and_upload_outputs") {
        return Ok(());
    }
    let mut s = setup("docker-transfer").await?;
    let server = FileServer::start().await?;
    server.serve("input.tgz", tar_gz(&[("data/in.txt", b"42\n", 0o644)]));
    let mut t = container_task(
        "xfer",
        "mkdir -p out && sed 's/42/forty-two/' data/in.txt > out/result.txt && echo done",
        "cpus:0.1;mem:32",
    )?;
    if let Some(c) = t.command.as_mut() {
        c.uris = vec![pb::FetchUri {
            url: server.url("/files/input.tgz"),
            extract: true,
            ..Default::default()
        }];
    }
    t.outputs = vec![pb::OutputUpload {
        url: server.url("/upload/xfer"),
        paths: vec!["out/".into()],
        name: "result".into(),
        ..Default::default()
    }];
    launch(&mut s, vec![t]).await?;
    let (end, _) = wait_update(&mut s, "xfer", Duration::from_secs(120), |st| {
        berth_tests::task_state(st).is_terminal()
    })
    .await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFinished,
        "{end:?}"
    );
    assert_eq!(end.outputs.len(), 1, "{:?}", end.outputs);
    assert!(end.outputs[0].ok, "{:?}", end.outputs[0]);
    assert_eq!(end.outputs[0].files, 1);
    let uploads = server.uploads();
    let entries = tar_gz_entries(&uploads["xfer"].body)?;
    let got: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, _, c)| (n.as_str(), c.as_slice()))
        .collect();
    assert_eq!(
        got,
        [("out", &b""[..]), ("out/result.txt", &b"forty-two\n"[..])]
    );
    let fw = s.fw.id();
    let err = read_log(&s, &fw, "xfer", pb::LogFile::Stderr).await?;
    assert!(err.contains("berth: fetched"), "{err}");
    assert!(err.contains("berth: uploaded result (1 files,"), "{err}");
    Ok(())
}
