//! Tests of the Docker containerizer. The pure helpers are tested always;
//! the rest needs a Docker daemon (see [`docker_or_skip`]) and the local
//! test image built by `scripts/build-test-image.sh` (run once here when the
//! image is missing).

use std::path::Path;
use std::time::Instant;

use berth_proto as pb;
use berth_scheduler_core::PortRanges;
use bollard::query_parameters::InspectContainerOptions;
use tokio::io::AsyncReadExt;

use super::*;

const UNSPECIFIED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
use crate::containerizer::{PortBinding, Protocol};

/// The image the tests run (built locally: no registry is needed).
const IMAGE: &str = berth_proto::testing::TEST_IMAGE;
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

// ---- pure helpers -------------------------------------------------------

#[test]
fn parses_docker_timestamps() {
    let t = |s| parse_rfc3339(s).unwrap();
    assert_eq!(t("1970-01-01T00:00:00Z"), LogTime { secs: 0, nanos: 0 });
    assert_eq!(
        t("2024-01-01T00:00:00.000000001Z"),
        LogTime {
            secs: 1_704_067_200,
            nanos: 1
        }
    );
    assert_eq!(
        t("2024-02-29T12:34:56.5Z"),
        LogTime {
            secs: 1_709_210_096,
            nanos: 500_000_000
        }
    );
    // An offset is applied; fractions beyond nanoseconds are cut.
    assert_eq!(
        t("2024-01-01T02:00:00.1234567891+02:00"),
        LogTime {
            secs: 1_704_067_200,
            nanos: 123_456_789
        }
    );
    assert!(t("2024-01-01T00:00:00.9Z") < t("2024-01-01T00:00:01Z"));
    assert!(t("2024-01-01T00:00:00.10Z") > t("2024-01-01T00:00:00.09Z"));
    for bad in [
        "",
        "2024-01-01",
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00+0200",
        "2024-01-01T0a:00:00Z",
        "hello world, this is",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
    }
}

#[test]
fn splits_timestamped_log_lines() {
    let (t, raw, content) = split_timestamp(b"2024-01-01T00:00:00.5Z hello world\n").unwrap();
    assert_eq!(t.nanos, 500_000_000);
    assert_eq!(raw, "2024-01-01T00:00:00.5Z");
    assert_eq!(content, b"hello world\n");
    assert!(split_timestamp(b"no timestamp here\n").is_none());
}

#[test]
fn pull_reference_names_a_tag() {
    assert_eq!(pull_reference("busybox"), "busybox:latest");
    assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
    assert_eq!(
        pull_reference("localhost:5000/team/app"),
        "localhost:5000/team/app:latest"
    );
    assert_eq!(
        pull_reference("localhost:5000/app:v2"),
        "localhost:5000/app:v2"
    );
    assert_eq!(pull_reference("app@sha256:abcd"), "app@sha256:abcd");
}

fn spec(dir: &Path, command: Command, resources: &str, container: ContainerSpec) -> LaunchSpec {
    LaunchSpec {
        container_id: ContainerId::random(),
        framework_id: "fw-1".into(),
        task_id: "task-1".into(),
        agent_id: "agent-1".into(),
        sandbox: dir.join(format!("sandboxes/fw-1/task-{}", uuid::Uuid::new_v4())),
        sandbox_prepared: false,
        command,
        env: HashMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        resources: resources.parse().unwrap(),
        container: Some(container),
        masked_values: Vec::new(),
    }
}

fn image(image: &str) -> ContainerSpec {
    ContainerSpec {
        image: image.into(),
        entrypoint: vec![],
        ports: vec![],
        volumes: vec![],
        user: String::new(),
        network: NetworkMode::Bridge,
        services: vec![],
    }
}

fn sh(s: &str) -> Command {
    Command::Shell(s.to_owned())
}

#[test]
fn create_body_carries_labels_limits_ports_and_mounts() {
    let mut c = image(IMAGE);
    c.entrypoint = vec!["/bin/env".into()];
    c.user = "1000".into();
    c.ports = vec![
        PortBinding {
            host_port: 31000,
            container_port: 80,
            protocol: Protocol::Tcp,
        },
        PortBinding {
            host_port: 31001,
            container_port: 80,
            protocol: Protocol::Tcp,
        },
        PortBinding {
            host_port: 31002,
            container_port: 53,
            protocol: Protocol::Udp,
        },
    ];
    c.volumes = vec![crate::containerizer::VolumeSpec {
        host_path: "/srv/data".into(),
        container_path: "/data".into(),
        read_only: true,
    }];
    let s = spec(
        Path::new("/work"),
        Command::Argv(vec!["run".into(), "--fast".into()]),
        "cpus:1.5;mem:100;ports:[31000-31002]",
        c.clone(),
    );
    let body = create_body(&s, &c, "/owner", UNSPECIFIED).unwrap();
    assert_eq!(body.image.as_deref(), Some(IMAGE));
    assert_eq!(body.cmd, Some(vec!["run".to_owned(), "--fast".to_owned()]));
    assert_eq!(body.entrypoint, Some(vec!["/bin/env".to_owned()]));
    assert_eq!(body.user.as_deref(), Some("1000"));
    assert_eq!(body.working_dir.as_deref(), Some(CONTAINER_SANDBOX));
    let labels = body.labels.unwrap();
    assert_eq!(labels[LABEL_OWNER], "/owner");
    assert_eq!(labels[LABEL_AGENT_ID], "agent-1");
    assert_eq!(labels[LABEL_FRAMEWORK_ID], "fw-1");
    assert_eq!(labels[LABEL_TASK_ID], "task-1");
    assert_eq!(labels[LABEL_CONTAINER_ID], s.container_id.0);
    let env = body.env.unwrap();
    assert!(env.contains(&"GREETING=hello".to_owned()), "{env:?}");
    assert!(env.contains(&format!("BERTH_SANDBOX={CONTAINER_SANDBOX}")));
    assert!(env.contains(&"BERTH_PORTS=31000-31002".to_owned()));
    assert!(
        !env.iter()
            .any(|e| e.starts_with("PATH=") || e.starts_with("HOME="))
    );
    let mut exposed = body.exposed_ports.unwrap();
    exposed.sort();
    assert_eq!(exposed, vec!["53/udp".to_owned(), "80/tcp".to_owned()]);
    let host = body.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(1_500_000_000));
    assert_eq!(host.memory, Some(100 * 1024 * 1024));
    assert_eq!(host.memory_swap, host.memory);
    assert_eq!(host.network_mode.as_deref(), Some("bridge"));
    assert_eq!(host.binds, Some(vec!["/srv/data:/data:ro".to_owned()]));
    let mounts = host.mounts.unwrap();
    assert_eq!(mounts[0].target.as_deref(), Some(CONTAINER_SANDBOX));
    assert_eq!(
        mounts[0].source.as_deref(),
        Some(s.sandbox.to_str().unwrap())
    );
    let bindings = host.port_bindings.unwrap();
    let tcp80: Vec<_> = bindings["80/tcp"]
        .as_ref()
        .unwrap()
        .iter()
        .map(|b| b.host_port.clone().unwrap())
        .collect();
    assert_eq!(tcp80, vec!["31000", "31001"]);
    assert_eq!(
        bindings["53/udp"].as_ref().unwrap()[0].host_ip.as_deref(),
        Some("0.0.0.0")
    );
    // An agent on loopback publishes its tasks' ports on loopback only.
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let body = create_body(&s, &c, "/owner", loopback).unwrap();
    let bindings = body.host_config.unwrap().port_bindings.unwrap();
    let ips: Vec<Option<String>> = bindings
        .values()
        .flat_map(|b| b.iter().flatten())
        .map(|b| b.host_ip.clone())
        .collect();
    assert_eq!(ips, vec![Some("127.0.0.1".to_owned()); 3]);

    // Host networking publishes nothing; no limits when none are asked; a
    // PATH the task sets is kept.
    let mut c = image(IMAGE);
    c.network = NetworkMode::Host;
    let mut s = spec(Path::new("/work"), sh("true"), "cpus:0;mem:0", c.clone());
    s.env.insert("PATH".into(), "/opt/bin".into());
    let body = create_body(&s, &c, "/owner", UNSPECIFIED).unwrap();
    assert_eq!(
        body.cmd,
        Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "true".to_owned()
        ])
    );
    assert!(body.env.unwrap().contains(&"PATH=/opt/bin".to_owned()));
    let host = body.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert_eq!(host.port_bindings, None);
    assert_eq!(host.memory, None);
    assert_eq!(host.nano_cpus, None);
    assert_eq!(body.exposed_ports, None);

    // No command: the image's CMD runs.
    let s = spec(
        Path::new("/work"),
        Command::Argv(vec![]),
        "cpus:0;mem:0",
        c.clone(),
    );
    assert_eq!(
        create_body(&s, &c, "/owner", UNSPECIFIED).unwrap().cmd,
        None
    );
}

// ---- against a Docker daemon --------------------------------------------

/// A containerizer with a unique owner (a temporary directory, which also
/// holds the sandboxes), or `None` when there is no Docker daemon: then the
/// test is skipped, unless `CI` is set, where that is a failure. Builds the
/// test image first if it is missing.
async fn docker_or_skip() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let owner = dir.path().display().to_string();
    let c = match DockerContainerizer::connect(owner.clone(), CALL_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but there is no usable Docker daemon: {e}"
            );
            eprintln!("skipping: no Docker daemon ({e})");
            return None;
        }
    };
    ensure_test_image(&c).await;
    Some(Fixture {
        dir,
        owner,
        c: Some(c),
    })
}

/// Builds the test image if it is missing, with the builder every crate's
/// Docker tests share.
async fn ensure_test_image(c: &DockerContainerizer) {
    if c.client().inspect_image(IMAGE).await.is_ok() {
        return;
    }
    let result = tokio::task::spawn_blocking(berth_proto::testing::ensure_test_image)
        .await
        .unwrap();
    if let Err(e) = result {
        panic!(
            "the test image {IMAGE} is missing and building it failed; run scripts/build-test-image.sh: {e}"
        );
    }
}

/// A test's containerizer. On drop (also when the test panics) every
/// container labelled with its owner is removed.
struct Fixture {
    dir: tempfile::TempDir,
    owner: String,
    c: Option<DockerContainerizer>,
}

impl Fixture {
    fn c(&self) -> &DockerContainerizer {
        self.c.as_ref().unwrap()
    }

    fn docker(&self) -> Docker {
        self.c().client().clone()
    }

    fn spec(&self, command: Command, resources: &str, container: ContainerSpec) -> LaunchSpec {
        spec(self.dir.path(), command, resources, container)
    }

    fn busybox(&self, command: &str) -> LaunchSpec {
        self.spec(sh(command), "cpus:0.1;mem:32", image(IMAGE))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.c.take());
        let owner = self.owner.clone();
        // Our own runtime on a thread: this may run inside a test's runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(remove_owned(&owner));
        });
        let _ = cleanup.join();
    }
}

/// Force-removes every container labelled with `owner`.
async fn remove_owned(owner: &str) {
    let Ok(docker) = Docker::connect_with_local_defaults() else {
        return;
    };
    let Ok(docker) = docker.negotiate_version().await else {
        return;
    };
    let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={owner}")])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    for c in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        if let Some(id) = c.id {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
        }
    }
}

async fn wait_for_file_content(path: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never contained {needle:?}; it has {:?}",
            path.display(),
            std::fs::read_to_string(path)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn inspect(docker: &Docker, name: &str) -> Option<bollard::models::ContainerInspectResponse> {
    docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .ok()
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn runs_a_task_with_output_env_labels_and_exit_code() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let s = fx.busybox(
        "echo hi; echo err >&2; env | sort > env.txt; pwd > pwd.txt; printf no-newline; exit 3",
    );
    let id = s.container_id.clone();
    let sandbox = s.sandbox.clone();
    let launched = fx.c().launch(s).await.unwrap();
    assert_eq!(launched.container_id, id);
    assert_eq!((launched.pid, launched.pgid), (0, 0));
    let t = fx.c().wait(&id).await.unwrap();
    assert_eq!(t, Termination::Exited(3));
    // All output is in the files as soon as `wait` resolves.
    assert_eq!(read(sandbox.join("stdout")), "hi\nno-newline");
    assert_eq!(read(sandbox.join("stderr")), "err\n");
    let env = read(sandbox.join("env.txt"));
    for want in [
        "BERTH_TASK_ID=task-1",
        "BERTH_FRAMEWORK_ID=fw-1",
        "BERTH_AGENT_ID=agent-1",
        "BERTH_CPUS=0.1",
        "BERTH_MEM=32",
        "BERTH_SANDBOX=/mnt/berth/sandbox",
        "GREETING=hello",
        // The image's PATH, not the agent's.
        "PATH=/bin",
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in\n{env}");
    }
    assert_eq!(read(sandbox.join("pwd.txt")), "/mnt/berth/sandbox\n");
    assert!(sandbox.join(LOG_SINCE_FILE).exists());
    // Waiting again gives the same answer; destroying an exited container
    // returns its termination.
    assert_eq!(fx.c().wait(&id).await.unwrap(), t);
    assert_eq!(fx.c().destroy(&id, Duration::ZERO).await.unwrap(), t);

    let info = inspect(&fx.docker(), &container_name(&id)).await.unwrap();
    let labels = info.config.unwrap().labels.unwrap();
    assert_eq!(labels[LABEL_OWNER], fx.owner);
    assert_eq!(labels[LABEL_CONTAINER_ID], id.0);
    assert_eq!(labels[LABEL_TASK_ID], "task-1");
    assert_eq!(labels[LABEL_FRAMEWORK_ID], "fw-1");
    assert_eq!(labels[LABEL_AGENT_ID], "agent-1");

    // Cleanup removes the container and forgets it; the sandbox stays.
    fx.c().cleanup(&id).await;
    assert!(inspect(&fx.docker(), &container_name(&id)).await.is_none());
    assert!(matches!(
        fx.c().wait(&id).await,
        Err(ContainerError::UnknownContainer(_))
    ));
    assert!(sandbox.join("stdout").exists());
}

#[tokio::test]
async fn masked_values_never_reach_the_sandbox_files() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    // Split across writes (and so across Docker's messages), on both
    // streams, and at the very end without a newline.
    let mut s = fx.busybox(
        "printf 'a s3cr'; sleep 0.3; printf \"et-value-1 b\\n\"; echo \"err $OTHER\" >&2; printf \"tail $OTHER\"; exit 4",
    );
    s.env.insert("OTHER".into(), "other-secret-22".into());
    s.masked_values = vec!["s3cret-value-1".into(), "other-secret-22".into()];
    let (id, sandbox) = (s.container_id.clone(), s.sandbox.clone());
    fx.c().launch(s).await.unwrap();
    assert_eq!(fx.c().wait(&id).await.unwrap(), Termination::Exited(4));
    assert_eq!(read(sandbox.join("stdout")), "a [MASKED] b\ntail [MASKED]");
    assert_eq!(read(sandbox.join("stderr")), "err [MASKED]\n");
    fx.c().cleanup(&id).await;
}

#[tokio::test]
async fn relaunch_cleans_the_sandbox_and_argv_runs_directly() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let s = fx.busybox("echo first > marker");
    let sandbox = s.sandbox.clone();
    let id = s.container_id.clone();
    fx.c().launch(s).await.unwrap();
    assert_eq!(fx.c().wait(&id).await.unwrap(), Termination::Exited(0));
    assert!(sandbox.join("marker").exists());

    let mut s = fx.busybox("");
    s.command = Command::Argv(vec!["echo".into(), "a  b".into()]);
    s.sandbox = sandbox.clone();
    let id = s.container_id.clone();
    fx.c().launch(s).await.unwrap();
    assert_eq!(fx.c().wait(&id).await.unwrap(), Termination::Exited(0));
    assert!(!sandbox.join("marker").exists());
    assert_eq!(read(sandbox.join("stdout")), "a  b\n");
}

#[tokio::test]
async fn cgroup_limits_are_visible_inside() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    // cgroup v2 files first, then v1.
    let s = fx.spec(
        sh("cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
            if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max; \
            else echo \"$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)\"; fi"),
        "cpus:0.5;mem:64",
        image(IMAGE),
    );
    let (id, sandbox) = (s.container_id.clone(), s.sandbox.clone());
    fx.c().launch(s).await.unwrap();
    assert_eq!(fx.c().wait(&id).await.unwrap(), Termination::Exited(0));
    assert_eq!(read(sandbox.join("stdout")), "67108864\n50000 100000\n");
}

#[tokio::test]
async fn destroy_escalates_to_sigkill_after_the_grace_period() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let s = fx.busybox("trap '' TERM; echo ready; sleep 1000");
    let (id, sandbox) = (s.container_id.clone(), s.sandbox.clone());
    fx.c().launch(s).await.unwrap();
    wait_for_file_content(&sandbox.join("stdout"), "ready").await;
    let start = Instant::now();
    let t = fx.c().destroy(&id, Duration::from_secs(1)).await.unwrap();
    let took = start.elapsed();
    assert_eq!(t.exit_code(), Some(137), "{t}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_eq!(fx.c().wait(&id).await.unwrap(), t);
    let info = inspect(&fx.docker(), &container_name(&id)).await.unwrap();
    assert_eq!(info.state.unwrap().running, Some(false));
}

#[tokio::test]
async fn destroy_ends_a_well_behaved_task_at_sigterm() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    // A task that handles SIGTERM, and one that takes its default action.
    let trapping =
        fx.busybox("trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done");
    let plain = fx.busybox("echo ready; sleep 1000");
    for (s, want) in [
        (trapping, Termination::Exited(7)),
        (plain, Termination::Exited(143)),
    ] {
        let (id, sandbox) = (s.container_id.clone(), s.sandbox.clone());
        fx.c().launch(s).await.unwrap();
        wait_for_file_content(&sandbox.join("stdout"), "ready").await;
        let start = Instant::now();
        let t = fx.c().destroy(&id, Duration::from_secs(20)).await.unwrap();
        assert_eq!(t, want);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        if want == Termination::Exited(7) {
            assert!(read(sandbox.join("stdout")).contains("got-term"));
        }
    }
}

#[tokio::test]
async fn missing_image_is_a_docker_error_naming_it() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let c = DockerContainerizer::connect(fx.owner.clone(), CALL_TIMEOUT)
        .await
        .unwrap()
        .with_pull_timeout(Duration::from_secs(30));
    let s = fx.spec(
        sh("true"),
        "cpus:0.1;mem:32",
        image("127.0.0.1:9/berth/does-not-exist:1"),
    );
    let id = s.container_id.clone();
    let err = c.launch(s).await.unwrap_err();
    let ContainerError::Docker(msg) = &err else {
        panic!("expected a docker error, got {err:?}");
    };
    assert!(msg.contains("127.0.0.1:9/berth/does-not-exist:1"), "{msg}");
    assert!(msg.contains("No such image"), "{msg}");
    assert!(matches!(
        c.wait(&id).await,
        Err(ContainerError::UnknownContainer(_))
    ));
}

#[tokio::test]
async fn launch_needs_a_container_spec() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let mut s = fx.busybox("true");
    s.container = None;
    let err = fx.c().launch(s).await.unwrap_err();
    assert!(matches!(err, ContainerError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_out_of_memory() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let s = fx.spec(
        sh("head -c 100m /dev/zero | tail"),
        "cpus:0.5;mem:16",
        image(IMAGE),
    );
    let id = s.container_id.clone();
    fx.c().launch(s).await.unwrap();
    let t = fx.c().wait(&id).await.unwrap();
    assert!(matches!(t, Termination::OutOfMemory(_)), "{t}");
}

/// A host port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

#[tokio::test]
async fn published_port_serves_http() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let port = free_port();
    let info = pb::ContainerInfo {
        image: IMAGE.into(),
        port_mappings: vec![pb::PortMapping {
            container_port: 8080,
            host_port: 0,
            protocol: String::new(),
        }],
        ..Default::default()
    };
    let container = ContainerSpec::from_proto(&info, &PortRanges::range(port, port)).unwrap();
    assert_eq!(container.ports[0].host_port, port);
    let s = fx.spec(
        sh("echo hello-berth > index.html; exec httpd -f -p 8080 -h /mnt/berth/sandbox"),
        &format!("cpus:0.1;mem:32;ports:[{port}-{port}]"),
        container,
    );
    let id = s.container_id.clone();
    fx.c().launch(s).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        match http_get(port, "/index.html").await {
            Ok(b) if b.contains("hello-berth") => break b,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no answer on port {port}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(body.starts_with("HTTP/1."), "{body}");
    fx.c().destroy(&id, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn recover_readopts_running_and_exited_containers_and_removes_orphans() {
    let Some(mut fx) = docker_or_skip().await else {
        return;
    };
    let docker = fx.docker();
    let a = fx.c.take().unwrap();
    let running1 = fx.busybox("echo one; sleep 1000");
    let running2 = fx.busybox("echo two; sleep 1000");
    let exiting = fx.busybox("echo three; sleep 1; echo bye; exit 7");
    let orphan = fx.busybox("sleep 1000");
    for s in [&running1, &running2, &exiting, &orphan] {
        a.launch(s.clone()).await.unwrap();
    }
    // A container of someone else's.
    let foreign = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&format!("berth-test-foreign-{}", uuid::Uuid::new_v4()))
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(IMAGE.into()),
                cmd: Some(vec!["sleep".into(), "1000".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    docker.start_container(&foreign, None).await.unwrap();

    for (s, line) in [(&running1, "one"), (&running2, "two"), (&exiting, "three")] {
        wait_for_file_content(&s.sandbox.join("stdout"), line).await;
    }
    let started = |info: Option<bollard::models::ContainerInspectResponse>| {
        let info = info.unwrap();
        (info.id.unwrap(), info.state.unwrap().started_at.unwrap())
    };
    let before1 = started(inspect(&docker, &container_name(&running1.container_id)).await);
    let before2 = started(inspect(&docker, &container_name(&running2.container_id)).await);

    // The agent "crashes": its watchers and log followers stop, the
    // containers keep running, and one exits meanwhile.
    drop(a);
    let exiting_name = container_name(&exiting.container_id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while inspect(&docker, &exiting_name)
        .await
        .and_then(|i| i.state)
        .and_then(|s| s.running)
        != Some(false)
    {
        assert!(Instant::now() < deadline, "{exiting_name} did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let b = DockerContainerizer::connect(fx.owner.clone(), CALL_TIMEOUT)
        .await
        .unwrap();
    let record = |s: &LaunchSpec| RecoverRecord {
        container_id: s.container_id.clone(),
        framework_id: s.framework_id.clone(),
        task_id: s.task_id.clone(),
        pid: 0,
        pgid: 0,
        sandbox: s.sandbox.clone(),
        masked_values: s.masked_values.clone(),
    };
    let gone = ContainerId::random();
    let mut records = vec![record(&running1), record(&running2), record(&exiting)];
    records.push(RecoverRecord {
        container_id: gone.clone(),
        ..record(&running1)
    });
    let mut adopted = b.recover(records).await.unwrap();
    adopted.sort();
    let mut want = vec![
        running1.container_id.clone(),
        running2.container_id.clone(),
        exiting.container_id.clone(),
    ];
    want.sort();
    assert_eq!(adopted, want);

    // Not restarted: same Docker containers, same start times.
    let after1 = started(inspect(&docker, &container_name(&running1.container_id)).await);
    let after2 = started(inspect(&docker, &container_name(&running2.container_id)).await);
    assert_eq!(before1, after1);
    assert_eq!(before2, after2);
    assert_eq!(b.docker_id(&running1.container_id).unwrap(), after1.0);

    // The exited one resolves at once, its missed output written once.
    let t = tokio::time::timeout(Duration::from_secs(10), b.wait(&exiting.container_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t, Termination::Exited(7));
    assert_eq!(read(exiting.sandbox.join("stdout")), "three\nbye\n");

    // The orphan is gone; the foreign container is untouched.
    assert!(
        inspect(&docker, &container_name(&orphan.container_id))
            .await
            .is_none()
    );
    let foreign_state = inspect(&docker, &foreign).await.unwrap().state.unwrap();
    assert_eq!(foreign_state.running, Some(true));

    // The re-adopted running ones are watched and stoppable.
    for s in [&running1, &running2] {
        let t = b
            .destroy(&s.container_id, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(t, Termination::Exited(143));
        b.cleanup(&s.container_id).await;
    }
    // Their output was not duplicated by the resumed followers.
    assert_eq!(read(running1.sandbox.join("stdout")), "one\n");
    assert_eq!(read(running2.sandbox.join("stdout")), "two\n");
    assert!(matches!(
        b.wait(&gone).await,
        Err(ContainerError::UnknownContainer(_))
    ));

    docker
        .remove_container(
            &foreign,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    fx.c = Some(b);
}

#[tokio::test]
async fn exec_returns_exit_codes_and_times_out() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let s = fx.busybox("echo ready; sleep 1000");
    let (id, sandbox) = (s.container_id.clone(), s.sandbox.clone());
    fx.c().launch(s).await.unwrap();
    wait_for_file_content(&sandbox.join("stdout"), "ready").await;
    let t = Duration::from_secs(10);
    assert_eq!(fx.c().exec(&id, sh("exit 0"), t).await.unwrap(), 0);
    assert_eq!(
        fx.c().exec(&id, sh("echo noise; exit 1"), t).await.unwrap(),
        1
    );
    assert_eq!(
        fx.c()
            .exec(&id, Command::Argv(vec!["false".into()]), t)
            .await
            .unwrap(),
        1
    );
    // The task's environment and working directory.
    assert_eq!(
        fx.c()
            .exec(
                &id,
                sh("test \"$BERTH_TASK_ID\" = task-1 && test \"$(pwd)\" = /mnt/berth/sandbox"),
                t
            )
            .await
            .unwrap(),
        0
    );
    let start = Instant::now();
    let err = fx
        .c()
        .exec(&id, sh("sleep 30"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, ContainerError::Timeout(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The timed-out command was killed.
    let top = fx
        .c()
        .exec(&id, sh("! ps | grep -v grep | grep -q 'sleep 30'"), t)
        .await
        .unwrap();
    assert_eq!(top, 0, "the timed-out exec is still running");

    let unknown = ContainerId::random();
    assert!(matches!(
        fx.c().exec(&unknown, sh("true"), t).await,
        Err(ContainerError::UnknownContainer(_))
    ));
    assert!(matches!(
        fx.c().destroy(&unknown, t).await,
        Err(ContainerError::UnknownContainer(_))
    ));
    fx.c().destroy(&id, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_daemon_that_does_not_answer_is_a_timeout() {
    // A socket that accepts connections and never answers.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let docker =
        Docker::connect_with_unix(path.to_str().unwrap(), 120, bollard::API_DEFAULT_VERSION)
            .unwrap();
    let start = Instant::now();
    let err = DockerContainerizer::connect_with(docker, "owner".into(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ContainerError::DaemonTimeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    silent.abort();
}

mod services;
