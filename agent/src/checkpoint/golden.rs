//! Golden-bytes tests of the checkpoint's stored values (every value type
//! of every table), and of a whole checkpoint file written by this
//! version. The files are in `agent/testdata/`; see
//! [`berth_proto::golden`] and the module docs of [`super`] for what to do
//! when one fails.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::*;
use berth_proto::golden;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

const FW: &str = "4f0c2a9e-5b7d-4e11-9c3a-0d2f6b8e1a57-0000";
const AGENT: &str = "b2d7e9c1-3a54-4f8e-a6b0-7c19d2e4f305-S0";
const T0: f64 = 1_765_432_100.25;

fn task_info(id: &str, docker: bool) -> Vec<u8> {
    pb::TaskInfo {
        task_id: id.into(),
        name: format!("build {id}"),
        agent_id: AGENT.into(),
        command: Some(pb::CommandInfo {
            shell: "cargo test --workspace".into(),
            env: [("CI".to_owned(), "true".to_owned())].into(),
            ..Default::default()
        }),
        kill_grace_period_seconds: 10.0,
        container: docker.then(|| pb::ContainerInfo {
            image: "berth/busybox:latest".into(),
            port_mappings: vec![pb::PortMapping {
                host_port: 0,
                container_port: 8080,
                protocol: "tcp".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The task records of the golden checkpoint: a running process task, a
/// Docker task being killed, and one not launched yet whose sandbox is
/// not UTF-8.
fn tasks() -> Vec<(&'static str, TaskCheckpoint)> {
    vec![
        (
            "task_process",
            TaskCheckpoint {
                framework_id: FW.into(),
                task_id: "build-42-1".into(),
                task_info: task_info("build-42-1", false),
                state: pb::TaskState::TaskRunning as i32,
                sandbox: PathBuf::from(format!("/var/lib/berth/sandboxes/{FW}/build-42-1")),
                containerizer: ContainerizerKind::Process,
                container_id: Some("berth-7d3c5a1e".into()),
                pid: 48_213,
                pgid: 48_213,
                kill: None,
                ports: vec![(31_000, 31_000, "tcp".into())],
            },
        ),
        (
            "task_docker_killing",
            TaskCheckpoint {
                framework_id: FW.into(),
                task_id: "web-7".into(),
                task_info: task_info("web-7", true),
                state: pb::TaskState::TaskKilling as i32,
                sandbox: PathBuf::from(format!("/var/lib/berth/sandboxes/{FW}/web-7")),
                containerizer: ContainerizerKind::Docker,
                container_id: Some("berth-0e9b44c2".into()),
                pid: 0,
                pgid: 0,
                kill: Some((10_000, "KILLED_BY_REQUEST".into())),
                ports: vec![(31_001, 8080, "tcp".into()), (31_002, 53, "udp".into())],
            },
        ),
        (
            "task_not_launched",
            TaskCheckpoint {
                framework_id: FW.into(),
                task_id: "a-first".into(),
                task_info: task_info("a-first", false),
                state: pb::TaskState::TaskStarting as i32,
                sandbox: PathBuf::from(OsStr::from_bytes(b"/var/lib/berth/sandboxes/\xff\xfe")),
                containerizer: ContainerizerKind::Process,
                container_id: None,
                pid: 0,
                pgid: 0,
                kill: None,
                ports: Vec::new(),
            },
        ),
    ]
}

/// An update as the agent queues it, with no reason (its type is
/// changing; the bytes of the other fields are what these tests hold).
fn update(task: &str, state: pb::TaskState, n: u8) -> pb::StatusUpdate {
    pb::StatusUpdate {
        framework_id: FW.into(),
        status: Some(pb::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            message: format!("{state:?}"),
            source: pb::StatusSource::Agent as i32,
            agent_id: AGENT.into(),
            exit_code: (state == pb::TaskState::TaskKilled).then_some(137),
            uuid: vec![n; 16],
            timestamp: T0 + f64::from(n),
            healthy: (n == 2).then_some(true),
            ports: vec![pb::PortMapping {
                host_port: 31_001,
                container_port: 8080,
                protocol: "tcp".into(),
            }],
            container_id: "berth-0e9b44c2".into(),
            ..Default::default()
        }),
    }
}

/// The update queues of the golden checkpoint, by task.
fn queues() -> Vec<(&'static str, &'static str, Vec<pb::StatusUpdate>)> {
    vec![
        (
            "updates_web",
            "web-7",
            vec![
                update("web-7", pb::TaskState::TaskRunning, 1),
                update("web-7", pb::TaskState::TaskRunning, 2),
                update("web-7", pb::TaskState::TaskKilled, 3),
            ],
        ),
        (
            "updates_lost",
            "never-known",
            vec![update("never-known", pb::TaskState::TaskLost, 4)],
        ),
    ]
}

const V1_VALUES: &str = "checkpoint-values-v1.hex";
const V1_HEADER: &str = "The values the agent checkpoint of schema version 1 stores
(agent/src/checkpoint.rs): meta's schema_version and agent_id, task
records, update queues. Written once by checkpoint::golden; never edit or
rewrite.";

#[test]
fn version_1_values_keep_their_bytes() {
    let path = testdata(V1_VALUES);
    let tasks = tasks();
    let queues = queues();
    let mut current: Vec<(&str, Vec<u8>)> = vec![
        ("schema_version", SCHEMA_VERSION.to_le_bytes().to_vec()),
        ("agent_id", AGENT.as_bytes().to_vec()),
    ];
    current.extend(
        tasks
            .iter()
            .map(|(name, t)| (*name, encode_task(t).unwrap())),
    );
    current.extend(
        queues
            .iter()
            .map(|(name, task, q)| (*name, encode_queue(FW, task, q).unwrap().unwrap())),
    );
    let golden = golden::load(&path, V1_HEADER, &current);

    assert_eq!(decode_version(&golden["schema_version"]).unwrap(), 1);
    assert_eq!(golden["agent_id"], AGENT.as_bytes());
    for (name, t) in &tasks {
        let bytes = &golden[*name];
        assert_eq!(decode_task(FW, &t.task_id, bytes).unwrap(), *t, "{name}");
        golden::assert_same(&path, name, &encode_task(t).unwrap(), bytes);
    }
    for (name, task, q) in &queues {
        let bytes = &golden[*name];
        assert_eq!(decode_queue(FW, task, bytes).unwrap(), *q, "{name}");
        let written = encode_queue(FW, task, q).unwrap().unwrap();
        golden::assert_same(&path, name, &written, bytes);
    }
    for (name, bytes) in &current {
        golden::assert_same(&path, name, bytes, &golden[*name]);
    }
}

/// What the golden checkpoint file holds.
fn golden_recovered() -> Recovered {
    let mut tasks: Vec<TaskCheckpoint> = tasks().into_iter().map(|(_, t)| t).collect();
    tasks.sort_by(|a, b| (&a.framework_id, &a.task_id).cmp(&(&b.framework_id, &b.task_id)));
    let mut updates: Vec<_> = queues()
        .into_iter()
        .map(|(_, task, q)| ((FW.to_owned(), task.to_owned()), q))
        .collect();
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    Recovered {
        agent_id: AGENT.into(),
        tasks,
        updates,
    }
}

const V1_FILE: &str = "checkpoint-v1.redb";

/// A whole checkpoint file of schema version 1, written by this agent
/// through the same calls it makes when it runs, opens and reads back.
/// This also catches a redb upgrade that cannot read the files of the one
/// before (redb's own file format has versions too).
#[test]
fn a_version_1_checkpoint_file_opens_and_reads_back() {
    let path = testdata(V1_FILE);
    if !path.exists() && std::env::var_os("BERTH_WRITE_GOLDEN").is_some() {
        let c = Checkpoint::open(&path).unwrap();
        c.set_agent_id(AGENT).unwrap();
        let tasks = tasks();
        let queues = queues();
        c.put_task(&tasks[0].1).unwrap();
        c.put_task_and_updates(&tasks[1].1, &queues[0].2).unwrap();
        c.put_task(&tasks[2].1).unwrap();
        c.put_updates(FW, queues[1].1, &queues[1].2).unwrap();
        drop(c);
        panic!("wrote {}: review and commit it", path.display());
    }
    assert!(
        path.exists(),
        "{} is missing: run this test with BERTH_WRITE_GOLDEN=1 to write it",
        path.display()
    );
    // Opening writes (the schema check is a write transaction): open a copy.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(FILE_NAME);
    std::fs::copy(&path, &copy).unwrap();
    let c = Checkpoint::open(&copy).unwrap();
    assert_eq!(c.load().unwrap(), golden_recovered());
    // And it goes on working: a later write is read back too.
    c.remove_task(FW, "web-7").unwrap();
    let r = c.load().unwrap();
    assert_eq!(r.tasks.len(), 2);
    assert_eq!(r.updates.len(), 1);
}
