//! Golden-bytes tests of everything the master persists: log entries of
//! every version (one per command), membership contexts, and a registry
//! snapshot of the state those entries build. The files are in
//! `master/testdata/`; see [`berth_proto::golden`] and the module docs of
//! [`super`] for what to do when one fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_proto as pb;
use berth_proto::golden;
use berth_scheduler_core::{AgentId, Allocated, FrameworkId, Quota, Resources, Role, TaskId};
use prost::Message;

use super::*;
use crate::error::EntryError;
use crate::registry::legacy::TaskRecordV0;
use crate::registry::{AgentRecord, FrameworkRecord, Registry, TaskRecord, kv};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The variants of [`Command`] by name, as its serde derive lists them:
/// a new variant without a golden entry fails
/// `the_golden_entries_hold_every_command`.
fn command_variants() -> &'static [&'static str] {
    /// A deserializer that only records the variants it is asked for.
    struct Probe;
    #[derive(Debug)]
    struct Found(&'static [&'static str]);
    impl std::fmt::Display for Found {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Found {}
    impl serde::de::Error for Found {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Found(&[])
        }
    }
    impl<'de> serde::Deserializer<'de> for Probe {
        type Error = Found;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(&[]))
        }
        fn deserialize_enum<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(variants))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            struct identifier ignored_any
        }
    }
    match <Command as serde::Deserialize>::deserialize(Probe) {
        Err(Found(variants)) => variants,
        Ok(_) => unreachable!("the probe yields no value"),
    }
}

/// The name of a command's variant. A new variant breaks this match:
/// give it a golden entry too.
fn variant(cmd: &Command) -> &'static str {
    match cmd {
        Command::Noop => "Noop",
        Command::SubscribeFramework { .. } => "SubscribeFramework",
        Command::DisconnectFramework { .. } => "DisconnectFramework",
        Command::RemoveFramework { .. } => "RemoveFramework",
        Command::RegisterAgent { .. } => "RegisterAgent",
        Command::MarkAgentUnreachable { .. } => "MarkAgentUnreachable",
        Command::SetAgentDraining { .. } => "SetAgentDraining",
        Command::LaunchTasksV0 { .. } => "LaunchTasksV0",
        Command::UpdateTask { .. } => "UpdateTask",
        Command::SetWeight { .. } => "SetWeight",
        Command::SetQuota { .. } => "SetQuota",
        Command::RemoveQuota { .. } => "RemoveQuota",
        Command::LaunchTasks { .. } => "LaunchTasks",
        Command::RecordMembers { .. } => "RecordMembers",
        Command::KvTxn { .. } => "KvTxn",
        Command::KvLeaseGrant { .. } => "KvLeaseGrant",
        Command::KvLeaseRevoke { .. } => "KvLeaseRevoke",
    }
}

fn fw(s: &str) -> FrameworkId {
    FrameworkId::new(s).unwrap()
}
fn agent(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}
fn tid(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}
fn role(s: &str) -> Role {
    Role::new(s).unwrap()
}
fn res(s: &str) -> Resources {
    s.parse().unwrap()
}

/// A proposal origin as `rand_u64` makes them: its seventh byte holds the
/// UUID version nibble 4.
const ORIGIN: u64 = 0x9e41_7c3a_52d0_1b86;
const T0: u64 = 1_765_432_100_000;

const CI: &str = "4f0c2a9e-5b7d-4e11-9c3a-0d2f6b8e1a57-0000";
const JOBS: &str = "4f0c2a9e-5b7d-4e11-9c3a-0d2f6b8e1a57-0001";
const NODE1: &str = "b2d7e9c1-3a54-4f8e-a6b0-7c19d2e4f305-S0";
const NODE2: &str = "b2d7e9c1-3a54-4f8e-a6b0-7c19d2e4f305-S1";

fn framework(id: &str, name: &str, roles: &[&str], partition_aware: bool) -> FrameworkRecord {
    FrameworkRecord {
        id: fw(id),
        name: name.into(),
        roles: roles.iter().map(|r| role(r)).collect(),
        failover_timeout_ms: 604_800_000,
        partition_aware,
        hostname: "sched-1.example.org".into(),
        registered_at_ms: T0,
        disconnected_at_ms: None,
    }
}

fn agent_record(id: &str, host: &str, reserved: Option<(&str, &str)>) -> AgentRecord {
    AgentRecord {
        id: agent(id),
        hostname: host.into(),
        address: format!("{host}:5051"),
        unreserved: res("cpus:8;mem:16384;disk:100000;ports:[31000-32000]"),
        reserved: reserved
            .map(|(r, s)| (role(r), res(s)))
            .into_iter()
            .collect(),
        attributes: vec![
            ("rack".into(), "r12".into()),
            ("zone".into(), "eu-west-1a".into()),
        ],
        draining: false,
        registered_at_ms: T0 + 1_000,
        unreachable_since_ms: None,
    }
}

/// A `TaskInfo` as a framework launches it (prost-encoded in the record).
fn task_info(id: &str, script: &str) -> Vec<u8> {
    pb::TaskInfo {
        task_id: id.into(),
        name: format!("build {id}"),
        agent_id: NODE1.into(),
        command: Some(pb::CommandInfo {
            shell: script.into(),
            env: [("CI".to_owned(), "true".to_owned())].into(),
            ..Default::default()
        }),
        labels: vec![pb::Label {
            key: "pipeline".into(),
            value: "42".into(),
        }],
        kill_grace_period_seconds: 10.0,
        ..Default::default()
    }
    .encode_to_vec()
}

fn task(id: &str, role_name: &str, unreserved: &str, reserved: &str) -> TaskRecord {
    TaskRecord {
        framework: fw(CI),
        id: tid(id),
        agent: agent(NODE1),
        role: role(role_name),
        allocated: Allocated {
            unreserved: res(unreserved),
            reserved: res(reserved),
        },
        info: task_info(id, "cargo test --workspace"),
        state: pb::TaskState::TaskStaging as i32,
        status: Vec::new(),
        launched_at_ms: T0 + 2_000,
        running_at_ms: None,
        ended_at_ms: None,
        reported: false,
    }
}

/// A status update as an agent sends it, with no reason (its type is
/// changing; the bytes of the other fields are what these tests hold).
fn status(task: &str, state: pb::TaskState, n: u8, at_ms: u64) -> Vec<u8> {
    pb::TaskStatus {
        task_id: task.into(),
        state: state as i32,
        message: format!("{state:?}"),
        source: pb::StatusSource::Agent as i32,
        agent_id: NODE1.into(),
        exit_code: (state == pb::TaskState::TaskFinished).then_some(0),
        uuid: vec![n; 16],
        #[allow(clippy::cast_precision_loss)]
        timestamp: at_ms as f64 / 1000.0,
        ports: vec![pb::PortMapping {
            host_port: 31_000,
            container_port: 8080,
            protocol: "tcp".into(),
        }],
        container_id: format!("berth-{task}"),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The commands of the golden log, in the order they apply: one of each
/// variant this berth writes, with values such as a cluster holds.
fn commands() -> Vec<(&'static str, Command)> {
    vec![
        ("noop", Command::Noop),
        (
            "subscribe_framework",
            Command::SubscribeFramework {
                record: framework(CI, "berth-ci", &["ci", "*"], true),
            },
        ),
        (
            "subscribe_framework_jobs",
            Command::SubscribeFramework {
                record: framework(JOBS, "berth-jobs", &["batch"], false),
            },
        ),
        (
            "register_agent",
            Command::RegisterAgent {
                record: agent_record(NODE1, "node-1.example.org", Some(("ci", "cpus:2;mem:4096"))),
                reported: None,
                at_ms: T0 + 1_000,
            },
        ),
        (
            "register_agent_node2",
            Command::RegisterAgent {
                record: agent_record(NODE2, "node-2.example.org", None),
                reported: None,
                at_ms: T0 + 1_100,
            },
        ),
        (
            "launch_tasks",
            Command::LaunchTasks {
                framework: fw(CI),
                agent: agent(NODE1),
                tasks: vec![
                    task(
                        "build-42-1",
                        "ci",
                        "cpus:0.5;mem:256;ports:[31000-31000]",
                        "cpus:1;mem:1024",
                    ),
                    task("test-42-2", "*", "cpus:1.5;mem:2048", ""),
                ],
            },
        ),
        (
            "update_task",
            Command::UpdateTask {
                framework: fw(CI),
                task: tid("build-42-1"),
                status: status("build-42-1", pb::TaskState::TaskRunning, 1, T0 + 2_500),
            },
        ),
        (
            "update_task_finished",
            Command::UpdateTask {
                framework: fw(CI),
                task: tid("test-42-2"),
                status: status("test-42-2", pb::TaskState::TaskFinished, 2, T0 + 9_000),
            },
        ),
        (
            "register_agent_again",
            Command::RegisterAgent {
                record: agent_record(NODE1, "node-1.example.org", Some(("ci", "cpus:2;mem:4096"))),
                reported: Some(vec![(
                    fw(CI),
                    tid("build-42-1"),
                    pb::TaskState::TaskRunning as i32,
                )]),
                at_ms: T0 + 10_000,
            },
        ),
        (
            "set_weight",
            Command::SetWeight {
                role: role("ci"),
                weight_milli: 2_500,
            },
        ),
        (
            "set_quota",
            Command::SetQuota {
                role: role("ci"),
                quota: Quota {
                    guarantee: res("cpus:4;mem:8192"),
                    limit: Some(res("cpus:16;mem:32768")),
                },
            },
        ),
        (
            "set_quota_batch",
            Command::SetQuota {
                role: role("batch"),
                quota: Quota {
                    guarantee: res("cpus:1"),
                    limit: None,
                },
            },
        ),
        (
            "remove_quota",
            Command::RemoveQuota {
                role: role("batch"),
            },
        ),
        (
            "set_agent_draining",
            Command::SetAgentDraining {
                id: agent(NODE1),
                draining: true,
            },
        ),
        (
            "mark_agent_unreachable",
            Command::MarkAgentUnreachable {
                id: agent(NODE2),
                at_ms: T0 + 20_000,
            },
        ),
        (
            "disconnect_framework",
            Command::DisconnectFramework {
                id: fw(CI),
                at_ms: T0 + 30_000,
            },
        ),
        (
            "remove_framework",
            Command::RemoveFramework {
                id: fw(JOBS),
                at_ms: T0 + 40_000,
                reason: "failover timeout of 604800 s expired".into(),
            },
        ),
        (
            "record_members",
            Command::RecordMembers {
                members: BTreeMap::from([
                    (1, "10.0.0.1:5050".to_owned()),
                    (2, "10.0.0.2:5050".to_owned()),
                    (3, "[fd00::3]:5050".to_owned()),
                ]),
            },
        ),
        (
            "kv_txn",
            Command::KvTxn {
                txn: kv::Txn {
                    namespace: "service".into(),
                    compares: vec![
                        kv::Compare::Version {
                            key: "apps/shop/web".into(),
                            version: 3,
                        },
                        kv::Compare::LeaseHeld {
                            name: "active".into(),
                            holder: "service-1".into(),
                            epoch: 2,
                        },
                    ],
                    ops: vec![
                        kv::Op::Put {
                            key: "apps/shop/web".into(),
                            value: b"{\"instances\":4}".to_vec(),
                        },
                        kv::Op::Delete {
                            key: "deployments/old".into(),
                        },
                        kv::Op::DeletePrefix {
                            prefix: "versions/shop/web/".into(),
                        },
                    ],
                },
            },
        ),
        (
            "kv_lease_grant",
            Command::KvLeaseGrant {
                namespace: "service".into(),
                name: "active".into(),
                holder: "service-2".into(),
                ttl_ms: 15_000,
                expect_epoch: 2,
            },
        ),
        (
            "kv_lease_revoke",
            Command::KvLeaseRevoke {
                namespace: "service".into(),
                name: "active".into(),
                epoch: 3,
            },
        ),
    ]
}

fn proposals() -> Vec<(&'static str, Proposal)> {
    commands()
        .into_iter()
        .zip(1..)
        .map(|((name, cmd), seq)| {
            (
                name,
                Proposal {
                    origin: ORIGIN,
                    seq,
                    cmd,
                },
            )
        })
        .collect()
}

fn members() -> Vec<(&'static str, MemberContext)> {
    vec![
        (
            "member_add",
            MemberContext {
                id: 4,
                address: "10.0.0.4:5050".into(),
            },
        ),
        (
            "member_remove",
            MemberContext {
                id: 2,
                address: String::new(),
            },
        ),
    ]
}

const V1_ENTRIES: &str = "log-entries-v1.hex";
const V1_HEADER: &str = "Raft log entries of format version 1 (master/src/entry.rs), one per
line: proposals of every command, then membership contexts. Written once
by entry::tests; never edit or rewrite: see the module docs.";

#[test]
fn version_1_entries_keep_their_bytes() {
    let path = testdata(V1_ENTRIES);
    let proposals = proposals();
    let members = members();
    let mut current: Vec<(&str, Vec<u8>)> = proposals
        .iter()
        .map(|(name, p)| (*name, encode_proposal(p).unwrap()))
        .collect();
    current.extend(
        members
            .iter()
            .map(|(name, m)| (*name, encode_member(m).unwrap())),
    );
    let golden = golden::load(&path, V1_HEADER, &current);
    for (name, p) in &proposals {
        let bytes = &golden[*name];
        assert_eq!(&bytes[..3], [ENTRY_TAG, 1, ENTRY_GUARD], "{name}");
        assert_eq!(decode_proposal(bytes).unwrap(), *p, "{name} as decoded");
        golden::assert_same(&path, name, &encode_proposal(p).unwrap(), bytes);
    }
    for (name, m) in &members {
        let bytes = &golden[*name];
        assert_eq!(decode_member(bytes).unwrap().as_ref(), Some(m), "{name}");
        golden::assert_same(&path, name, &encode_member(m).unwrap(), bytes);
    }
}

#[test]
fn the_golden_entries_hold_every_command() {
    let mut seen: Vec<&str> = proposals().iter().map(|(_, p)| variant(&p.cmd)).collect();
    // `LaunchTasksV0` is never written: only version 0 entries hold it.
    seen.extend(legacy_proposals().iter().map(|(_, p)| variant(&p.cmd)));
    seen.sort_unstable();
    seen.dedup();
    let mut all = command_variants().to_vec();
    all.sort_unstable();
    assert_eq!(seen, all);
}

/// Entries as berth wrote them before entries had a version: the same
/// postcard values, no prefix.
fn legacy_proposals() -> Vec<(&'static str, Proposal)> {
    let v0_task = |id: &str| TaskRecordV0 {
        framework: fw(CI),
        id: tid(id),
        agent: agent(NODE1),
        role: role("ci"),
        allocated: Allocated {
            unreserved: res("cpus:1;mem:128"),
            reserved: Resources::empty(),
        },
        info: task_info(id, "make"),
        state: pb::TaskState::TaskStaging as i32,
        status: Vec::new(),
        launched_at_ms: T0,
    };
    let p = |seq, cmd| Proposal {
        origin: ORIGIN,
        seq,
        cmd,
    };
    vec![
        ("noop", p(1, Command::Noop)),
        (
            "subscribe_framework",
            p(
                2,
                Command::SubscribeFramework {
                    record: framework(CI, "berth-ci", &["ci"], true),
                },
            ),
        ),
        (
            "register_agent",
            p(
                3,
                Command::RegisterAgent {
                    record: agent_record(NODE1, "node-1.example.org", None),
                    reported: None,
                    at_ms: T0 + 1_000,
                },
            ),
        ),
        (
            "launch_tasks_v0",
            p(
                4,
                Command::LaunchTasksV0 {
                    framework: fw(CI),
                    agent: agent(NODE1),
                    tasks: vec![v0_task("t1"), v0_task("t2")],
                },
            ),
        ),
        (
            "update_task",
            p(
                5,
                Command::UpdateTask {
                    framework: fw(CI),
                    task: tid("t1"),
                    status: status("t1", pb::TaskState::TaskRunning, 1, T0 + 500),
                },
            ),
        ),
    ]
}

fn legacy_members() -> Vec<(&'static str, MemberContext)> {
    vec![(
        "member_add",
        MemberContext {
            id: 2,
            address: "10.0.0.2:5050".into(),
        },
    )]
}

const V0_ENTRIES: &str = "log-entries-v0.hex";
const V0_HEADER: &str = "Raft log entries of format version 0 (before entries had a version:
postcard values without a prefix), as berth wrote them up to commit
9057630. Read for ever; never edit.";

#[test]
fn version_0_entries_are_read() {
    let path = testdata(V0_ENTRIES);
    let proposals = legacy_proposals();
    let members = legacy_members();
    // What berth wrote before: the bare postcard value.
    let mut current: Vec<(&str, Vec<u8>)> = proposals
        .iter()
        .map(|(name, p)| (*name, postcard::to_stdvec(p).unwrap()))
        .collect();
    current.extend(members.iter().map(|(name, m)| {
        (
            *name,
            postcard::to_stdvec(&(m.id, m.address.clone())).unwrap(),
        )
    }));
    let golden = golden::load(&path, V0_HEADER, &current);
    for (name, p) in &proposals {
        let bytes = &golden[*name];
        assert_ne!(bytes[0], ENTRY_TAG, "{name}");
        assert_eq!(decode_proposal(bytes).unwrap(), *p, "{name}");
    }
    for (name, m) in &members {
        assert_eq!(
            decode_member(&golden[*name]).unwrap().as_ref(),
            Some(m),
            "{name}"
        );
    }
    // The version 0 launch applies as today's launch of the same tasks.
    let mut r = Registry::new(10);
    for (_, p) in &proposals {
        r.apply(&p.cmd).unwrap();
    }
    let t1 = r.tasks().find(|t| t.id == tid("t1")).unwrap();
    assert_eq!(t1.state(), pb::TaskState::TaskRunning);
    assert_eq!(t1.running_at_ms, Some(T0 + 500));
    assert_eq!(t1.task_info().command.unwrap().shell, "make");
}

#[test]
fn newer_and_broken_entries_are_refused() {
    let p = &proposals()[5].1;
    let bytes = encode_proposal(p).unwrap();
    let mut newer = bytes.clone();
    newer[1] = ENTRY_VERSION + 1;
    let e = decode_proposal(&newer).unwrap_err();
    assert!(matches!(e, EntryError::Version(2)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("version 2") && msg.contains("0 to 1"), "{msg}");
    let e = decode_member(&[ENTRY_TAG, 9, 4]).unwrap_err();
    assert!(e.to_string().contains("version 9"), "{e}");

    assert!(matches!(
        decode_proposal(&[ENTRY_TAG]),
        Err(EntryError::Header)
    ));
    assert!(matches!(
        decode_proposal(&[ENTRY_TAG, 1]),
        Err(EntryError::Header)
    ));
    assert!(matches!(
        decode_proposal(&[ENTRY_TAG, 1, 0, 1]),
        Err(EntryError::Header)
    ));
    let mut long = bytes.clone();
    long.extend_from_slice(b"xy");
    assert!(matches!(
        decode_proposal(&long),
        Err(EntryError::Trailing(2))
    ));
    let e = decode_proposal(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(matches!(e, EntryError::Decode(_)), "{e}");
    assert!(matches!(
        decode_proposal(&[0xff; 3]),
        Err(EntryError::Decode(_))
    ));

    // A master from before versions, which reads every entry as a bare
    // proposal, stops on every versioned one rather than misread it.
    for (name, p) in proposals() {
        let bytes = encode_proposal(&p).unwrap();
        assert!(postcard::from_bytes::<Proposal>(&bytes).is_err(), "{name}");
    }

    // An empty context is Raft's own change, not a member's.
    assert_eq!(decode_member(&[]).unwrap(), None);
}

/// The entries the golden snapshot of version 1 is the state of: the
/// commands of [`commands`] when it was written. Commands added later
/// have golden entries but stay out of it, so that the snapshot's bytes
/// do not change with them.
const V1_SNAPSHOT_LOG: [&str; 18] = [
    "noop",
    "subscribe_framework",
    "subscribe_framework_jobs",
    "register_agent",
    "register_agent_node2",
    "launch_tasks",
    "update_task",
    "update_task_finished",
    "register_agent_again",
    "set_weight",
    "set_quota",
    "set_quota_batch",
    "remove_quota",
    "set_agent_draining",
    "mark_agent_unreachable",
    "disconnect_framework",
    "remove_framework",
    "record_members",
];

/// The registry the golden log builds.
fn golden_registry() -> Registry {
    let mut r = Registry::new(1000);
    let log: Vec<(&str, Command)> = commands()
        .into_iter()
        .filter(|(name, _)| V1_SNAPSHOT_LOG.contains(name))
        .collect();
    let names: Vec<&str> = log.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, V1_SNAPSHOT_LOG);
    for (name, cmd) in log {
        if let Err(e) = r.apply(&cmd) {
            panic!("{name}: {e}");
        }
    }
    r
}

const V1_SNAPSHOT: &str = "registry-snapshot-v1.hex";
const SNAPSHOT_HEADER: &str = "A registry snapshot of version 1 (master/src/registry.rs): the state
the entries of log-entries-v1.hex build. Written once by entry::tests;
never edit or rewrite.";
const V2_SNAPSHOT: &str = "registry-snapshot-v2.hex";
const SNAPSHOT_V2_HEADER: &str =
    "A registry snapshot of version 2 (master/src/registry.rs): the state
of registry-snapshot-v1.hex plus keys and a lease of the key-value store
(entry::tests::golden_registry_v2). Written once by entry::tests; never
edit or rewrite.";

/// Checks what [`golden_registry`]'s state holds, as read back.
fn assert_golden_state(back: &Registry) {
    let ci = back.framework(&fw(CI)).unwrap();
    assert_eq!(ci.disconnected_at_ms, Some(T0 + 30_000));
    assert!(ci.partition_aware);
    assert!(back.framework(&fw(JOBS)).is_none());
    let node1 = back.agent(&agent(NODE1)).unwrap();
    assert!(node1.draining);
    assert_eq!(node1.reserved[&role("ci")], res("cpus:2;mem:4096"));
    assert_eq!(
        back.agent(&agent(NODE2)).unwrap().unreachable_since_ms,
        Some(T0 + 20_000)
    );
    let active: Vec<_> = back.tasks().collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, tid("build-42-1"));
    assert_eq!(active[0].state(), pb::TaskState::TaskRunning);
    assert!(active[0].reported);
    let done = back.completed_task(&fw(CI), &tid("test-42-2")).unwrap();
    assert_eq!(done.ended_at_ms, Some(T0 + 9_000));
    assert_eq!(done.last_status().exit_code, Some(0));
    assert_eq!(back.weights()[&role("ci")], 2_500);
    assert_eq!(back.quotas().keys().collect::<Vec<_>>(), [&role("ci")]);
    assert_eq!(back.members()[&3], "[fd00::3]:5050");
    assert_eq!(
        back.agent_used(&agent(NODE1)),
        res("cpus:1.5;mem:1280;ports:[31000-31000]")
    );
}

#[test]
fn version_1_snapshots_of_the_golden_log_are_read() {
    let path = testdata(V1_SNAPSHOT);
    // Version 1 is no longer written: the file must exist.
    let golden = golden::load(&path, SNAPSHOT_HEADER, &[("registry", Vec::new())]);
    let mut back = Registry::from_snapshot(&golden["registry"]).unwrap();
    back.rebuild_indexes();
    assert_golden_state(&back);
    assert_eq!(back, golden_registry());
}

/// [`golden_registry`] with keys and a lease that changed hands.
fn golden_registry_v2() -> Registry {
    let mut r = golden_registry();
    let lease = |holder: &str, epoch| kv::Compare::LeaseHeld {
        name: "active".into(),
        holder: holder.into(),
        epoch,
    };
    let put = |key: &str, value: &[u8]| kv::Op::Put {
        key: key.into(),
        value: value.to_vec(),
    };
    let txn = |compares, ops| Command::KvTxn {
        txn: kv::Txn {
            namespace: "service".into(),
            compares,
            ops,
        },
    };
    let grant = |holder: &str, expect_epoch| Command::KvLeaseGrant {
        namespace: "service".into(),
        name: "active".into(),
        holder: holder.into(),
        ttl_ms: 15_000,
        expect_epoch,
    };
    for cmd in [
        grant("service-1", 0),
        txn(
            vec![lease("service-1", 1)],
            vec![
                put("apps/shop/web", b"{}"),
                put("versions/shop/web/1", b"{\"v\":1}"),
            ],
        ),
        Command::KvLeaseRevoke {
            namespace: "service".into(),
            name: "active".into(),
            epoch: 1,
        },
        grant("service-2", 1),
        txn(
            vec![kv::Compare::Version {
                key: "apps/shop/web".into(),
                version: 1,
            }],
            vec![put("apps/shop/web", b"{\"instances\":4}")],
        ),
    ] {
        if let Err(e) = r.apply(&cmd) {
            panic!("{cmd:?}: {e}");
        }
    }
    r
}

#[test]
fn version_2_snapshots_of_the_golden_state_keep_their_bytes() {
    let path = testdata(V2_SNAPSHOT);
    let r = golden_registry_v2();
    let written = r.to_snapshot().unwrap();
    let golden = golden::load(&path, SNAPSHOT_V2_HEADER, &[("registry", written.clone())]);
    let bytes = &golden["registry"];

    let mut back = Registry::from_snapshot(bytes).unwrap();
    back.rebuild_indexes();
    assert_golden_state(&back);
    let kv = back.kv();
    let web = kv.get("service", "apps/shop/web").unwrap();
    assert_eq!(web.value, b"{\"instances\":4}");
    assert_eq!(
        (web.version, web.create_revision, web.mod_revision),
        (2, 2, 5)
    );
    let lease = kv.lease("service", "active").unwrap();
    assert_eq!(
        (lease.holder.as_deref(), lease.epoch),
        (Some("service-2"), 2)
    );
    assert_eq!(kv.revision(), 5);
    // The same state as applying the commands gives, and the same bytes.
    assert_eq!(back, r);
    golden::assert_same(&path, "registry", &written, bytes);
}
