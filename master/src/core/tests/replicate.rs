//! Replication: what the core leaves to its shell.

use super::*;

#[tokio::test]
async fn snapshots_are_actions_for_the_shell_not_spawned_by_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(&dir, |c| c.snapshot_every = 2).await;
    // Whatever the takeover proposed is applied; count from here.
    core.settle().await;
    core.actions.clear();
    core.since_snapshot = 0;
    let _framework = subscribe(&mut core, "").await;
    let _agent = new_agent(&mut core, 1, "cpus:4;mem:1024").await;
    core.settle().await;
    // Subscribe and register are two entries: one snapshot is due, taken
    // at the index of the entry that made it due, of the registry as then.
    let snapshots: Vec<(u64, Registry)> = core
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Snapshot { index, data } => {
                Some((*index, Registry::from_snapshot(data).unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(snapshots.len(), 1, "{:?}", core.actions);
    let (index, registry) = &snapshots[0];
    assert_eq!(*index, core.applied_index);
    assert_eq!(registry.frameworks().count(), 1);
    assert_eq!(registry.agents().count(), 1);
    assert_eq!(core.since_snapshot, 0);
}

#[tokio::test]
async fn an_accept_in_flight_waits_as_an_inspectable_launch_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(&dir).await;
    let (agent, mut arx) = new_agent(&mut core, 1, "cpus:4;mem:1024").await;
    let (header, mut events) = subscribe(&mut core, "").await;
    core.settle().await;
    let offer = offers(&mut core, &mut events).remove(0);
    let (reply, rx) = oneshot::channel();
    let call = SchedulerCall::Accept(accept_request(&header, &offer.id, "t1", "cpus:1;mem:64"));
    core.request(Request::Call { call, reply });

    // Proposed, not applied: the launch waits as data, and no task was
    // sent to the agent yet.
    let parked: Vec<&Then> = core.pending.values().map(|p| &p.then).collect();
    match parked.as_slice() {
        [
            Then::Launched {
                framework,
                agent: on,
                records,
                used,
                ..
            },
        ] => {
            assert_eq!(framework.as_str(), header.framework_id);
            assert_eq!(on, &agent);
            assert_eq!(
                records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
                ["t1"]
            );
            assert_eq!(used.total(), "cpus:1;mem:64".parse().unwrap());
        }
        other => panic!("expected one parked launch, got {other:?}"),
    }
    assert!(
        !drain_agent(&mut arx)
            .iter()
            .any(|m| matches!(m, M::RunTask(_)))
    );

    // Applied: the continuation ran, answered and sent the task.
    let launched = match core.answered(rx).await.unwrap() {
        CallReply::Accept(r) => r.launched_task_ids,
        CallReply::Empty => panic!("accept answered without a response"),
    };
    assert_eq!(launched, ["t1"]);
    assert!(core.pending.is_empty());
    assert!(
        drain_agent(&mut arx).iter().any(
            |m| matches!(m, M::RunTask(t) if t.task.as_ref().is_some_and(|t| t.task_id == "t1"))
        )
    );
}

#[test]
fn membership_contexts_round_trip_and_read_the_unversioned_form() {
    use crate::core::membership::{decode_member, encode_member};
    let bytes = encode_member(7, "10.0.0.7:5050").unwrap();
    assert_eq!(
        decode_member(&bytes).unwrap(),
        Some((7, "10.0.0.7:5050".into()))
    );
    // What every master wrote before entries had a version still reads.
    let unversioned = postcard::to_stdvec(&(7_u64, "10.0.0.7:5050".to_string())).unwrap();
    assert_ne!(bytes, unversioned);
    assert_eq!(
        decode_member(&unversioned).unwrap(),
        Some((7, "10.0.0.7:5050".into()))
    );
    // Raft's own changes carry no context.
    assert_eq!(decode_member(&[]).unwrap(), None);
}
