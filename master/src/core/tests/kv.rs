//! The key-value store's calls on a core without IO ([`Harness`]): what
//! is proposed, what is answered, what watchers are told, and the
//! leader's lease clocks, with the clock moved by hand.

use super::handlers::{Harness, take_actions};
use super::*;
use crate::registry::kv::{Compare, Op, Txn};

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

fn txn(compares: Vec<Compare>, ops: Vec<Op>) -> KvCall {
    KvCall::Txn(Txn {
        namespace: "svc".into(),
        compares,
        ops,
    })
}

fn absent(key: &str) -> Compare {
    Compare::Version {
        key: key.into(),
        version: 0,
    }
}

fn lease_ref(holder: &str, epoch: u64) -> pb::LeaseRef {
    pb::LeaseRef {
        namespace: "svc".into(),
        name: "active".into(),
        holder: holder.into(),
        epoch,
    }
}

fn acquire(holder: &str, ttl_ms: u64) -> KvCall {
    KvCall::Acquire {
        namespace: "svc".into(),
        name: "active".into(),
        holder: holder.into(),
        ttl_ms,
    }
}

impl Harness {
    /// Makes a key-value call as caller `to`, as the service does.
    fn kv(&mut self, call: KvCall, stale_ok: bool, to: u64) {
        self.core.handle(Input::Operator(
            OperatorCall::Kv(call),
            stale_ok,
            Caller::new(to),
        ));
    }

    /// Moves the core's clock on.
    fn later(&mut self, by: Duration) {
        self.core.clock.instant += by;
    }
}

/// The answers to key-value calls among `actions`, by caller.
fn answers(actions: Vec<Action>) -> Vec<(Caller<OperatorReply>, Result<KvReply, CallError>)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Reply(Reply::Operator { to, result }) => Some((
                to,
                result.map(|r| match r {
                    OperatorReply::Kv(r) => r,
                    other => panic!("not a key-value answer: {other:?}"),
                }),
            )),
            _ => None,
        })
        .collect()
}

fn only_answer(actions: Vec<Action>) -> Result<KvReply, CallError> {
    let mut got = answers(actions);
    match got.len() {
        1 => got.remove(0).1,
        n => panic!("expected one answer, got {n}: {got:?}"),
    }
}

fn lease_answer(actions: Vec<Action>) -> pb::LeaseState {
    match only_answer(actions) {
        Ok(KvReply::Lease(l)) => l,
        other => panic!("expected a lease state, got {other:?}"),
    }
}

#[test]
fn a_transaction_is_answered_once_applied_and_watchers_are_told() {
    let mut h = Harness::new();
    h.kv(
        txn(vec![absent("a")], vec![put("a", "1"), put("b", "2")]),
        false,
        1,
    );
    assert!(
        answers(take_actions(&mut h.core)).is_empty(),
        "answered before commit"
    );
    let commands = h.commit();
    assert!(
        matches!(commands.as_slice(), [Command::KvTxn { .. }]),
        "{commands:?}"
    );
    let actions = take_actions(&mut h.core);
    let changed = actions
        .iter()
        .find_map(|a| match a {
            Action::KvChanged(batch) => Some(batch.clone()),
            _ => None,
        })
        .expect("watchers told");
    assert!(matches!(&*changed, KvBatch::Changes(c) if c.len() == 2));
    match only_answer(actions) {
        Ok(KvReply::Txn(t)) => {
            assert_eq!(t.revision, 1);
            let written: Vec<(&str, u64)> = t
                .written
                .iter()
                .map(|w| (w.key.as_str(), w.version))
                .collect();
            assert_eq!(written, [("a", 1), ("b", 1)]);
        }
        other => panic!("{other:?}"),
    }
    h.assert_nothing_parked();
}

#[test]
fn a_failed_compare_proposes_nothing() {
    let mut h = Harness::new();
    h.kv(txn(vec![], vec![put("a", "1")]), false, 1);
    h.commit();
    take_actions(&mut h.core);
    h.kv(txn(vec![absent("a")], vec![put("a", "2")]), false, 2);
    let err = only_answer(take_actions(&mut h.core)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("at version 1, not 0"), "{err}");
    assert!(h.commit().is_empty(), "nothing proposed");
}

#[test]
fn of_two_racing_creates_the_second_is_refused_when_applied() {
    let mut h = Harness::new();
    // Both pass the check: neither is applied yet.
    h.kv(txn(vec![absent("k")], vec![put("k", "one")]), false, 1);
    h.kv(txn(vec![absent("k")], vec![put("k", "two")]), false, 2);
    assert_eq!(h.commit().len(), 2);
    let actions = take_actions(&mut h.core);
    let got = answers(actions);
    assert!(matches!(&got[0], (c, Ok(KvReply::Txn(_))) if *c == Caller::new(1)));
    assert!(
        matches!(&got[1], (c, Err(e)) if *c == Caller::new(2) && e.code() == tonic::Code::FailedPrecondition),
        "{got:?}"
    );
    assert_eq!(h.core.registry.kv().get("svc", "k").unwrap().value, b"one");
}

#[test]
fn bad_input_is_refused_with_a_readable_error() {
    let mut h = Harness::new();
    h.kv(
        KvCall::Txn(Txn {
            namespace: "Not Valid".into(),
            compares: vec![],
            ops: vec![put("a", "1")],
        }),
        false,
        1,
    );
    let err = only_answer(take_actions(&mut h.core)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("namespace \"Not Valid\""), "{err}");
    h.kv(acquire("a", 10), false, 2);
    let err = only_answer(take_actions(&mut h.core)).unwrap_err();
    assert!(err.message().contains("time to live 10 ms"), "{err}");
    assert!(h.commit().is_empty());
}

#[test]
fn reads_get_and_list_in_pages() {
    let mut h = Harness::new();
    h.kv(
        txn(
            vec![],
            vec![
                put("apps/a", "1"),
                put("apps/b", "22"),
                put("apps/c", "3"),
                put("x", ""),
            ],
        ),
        false,
        1,
    );
    h.commit();
    take_actions(&mut h.core);
    let read = |h: &mut Harness, call| {
        let reply = h.core.read(OperatorCall::Kv(call));
        match reply {
            Ok(OperatorReply::Kv(r)) => Ok(r),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    match read(
        &mut h,
        KvCall::Get {
            namespace: "svc".into(),
            key: "apps/b".into(),
        },
    ) {
        Ok(KvReply::Entry(e)) => assert_eq!((e.value.as_slice(), e.version), (&b"22"[..], 1)),
        other => panic!("{other:?}"),
    }
    let err = read(
        &mut h,
        KvCall::Get {
            namespace: "svc".into(),
            key: "nope".into(),
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let page = |start_after: &str| pb::KvListRequest {
        namespace: "svc".into(),
        prefix: "apps/".into(),
        start_after: start_after.into(),
        limit: 2,
        keys_only: false,
    };
    match read(&mut h, KvCall::List(page(""))) {
        Ok(KvReply::List(l)) => {
            let keys: Vec<&str> = l.entries.iter().map(|e| e.key.as_str()).collect();
            assert_eq!(keys, ["apps/a", "apps/b"]);
            assert!(l.more);
            assert_eq!(l.revision, 1);
        }
        other => panic!("{other:?}"),
    }
    match read(&mut h, KvCall::List(page("apps/b"))) {
        Ok(KvReply::List(l)) => {
            let keys: Vec<&str> = l.entries.iter().map(|e| e.key.as_str()).collect();
            assert_eq!(keys, ["apps/c"]);
            assert!(!l.more);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_follower_answers_stale_reads_and_redirects_the_rest() {
    let mut h = Harness::new();
    h.kv(txn(vec![], vec![put("a", "1")]), false, 1);
    h.commit();
    take_actions(&mut h.core);
    h.master_2_leads();
    h.core.on_raft_status();
    take_actions(&mut h.core);
    let get = || KvCall::Get {
        namespace: "svc".into(),
        key: "a".into(),
    };
    h.kv(get(), true, 2);
    assert!(matches!(
        only_answer(take_actions(&mut h.core)),
        Ok(KvReply::Entry(_))
    ));
    for call in [get(), txn(vec![], vec![put("b", "2")]), acquire("x", 5_000)] {
        h.kv(call, false, 3);
        let err = only_answer(take_actions(&mut h.core)).unwrap_err();
        assert_eq!(
            err,
            CallError::NotLeader {
                leader: Some("10.0.0.2:5050".into())
            }
        );
    }
}

#[test]
fn a_lease_is_granted_kept_alive_and_taken_over_after_it_expires() {
    let mut h = Harness::new();
    h.kv(acquire("a", 10_000), false, 1);
    let commands = h.commit();
    assert!(
        matches!(commands.as_slice(), [Command::KvLeaseGrant { holder, expect_epoch: 0, .. }] if holder == "a"),
        "{commands:?}"
    );
    let a = lease_answer(take_actions(&mut h.core));
    assert!(a.held);
    assert_eq!(
        (a.holder.as_str(), a.epoch, a.remaining_ms),
        ("a", 1, 10_000)
    );

    // b is told who holds it, and nothing is proposed.
    h.later(Duration::from_secs(4));
    h.kv(acquire("b", 10_000), false, 2);
    let b = lease_answer(take_actions(&mut h.core));
    assert!(!b.held);
    assert_eq!(
        (b.holder.as_str(), b.epoch, b.remaining_ms),
        ("a", 1, 6_000)
    );
    assert!(h.commit().is_empty());

    // a keeps it alive: its clock starts again; nothing is written.
    h.kv(KvCall::KeepAlive(lease_ref("a", 1)), false, 3);
    assert!(lease_answer(take_actions(&mut h.core)).held);
    assert!(h.commit().is_empty());
    h.later(Duration::from_secs(8));
    h.core.on_tick(true);
    assert!(h.commit().is_empty(), "revoked although kept alive");

    // A keep-alive with a stale epoch is refused.
    h.kv(KvCall::KeepAlive(lease_ref("a", 7)), false, 4);
    let err = only_answer(take_actions(&mut h.core)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // a goes quiet: past its time the leader revokes the lease.
    h.later(Duration::from_secs(3));
    h.core.on_tick(true);
    let commands = h.commit();
    assert!(
        matches!(
            commands.as_slice(),
            [Command::KvLeaseRevoke { epoch: 1, .. }]
        ),
        "{commands:?}"
    );
    take_actions(&mut h.core);
    h.kv(KvCall::KeepAlive(lease_ref("a", 1)), false, 5);
    let err = only_answer(take_actions(&mut h.core)).unwrap_err();
    assert!(err.message().contains("it is free"), "{err}");

    // b takes it with the next epoch.
    h.kv(acquire("b", 10_000), false, 6);
    let commands = h.commit();
    assert!(
        matches!(commands.as_slice(), [Command::KvLeaseGrant { holder, expect_epoch: 1, .. }] if holder == "b"),
        "{commands:?}"
    );
    let b = lease_answer(take_actions(&mut h.core));
    assert!(b.held);
    assert_eq!(b.epoch, 2);
}

#[test]
fn an_expired_lease_is_granted_at_once_even_before_its_revocation() {
    let mut h = Harness::new();
    h.kv(acquire("a", 2_000), false, 1);
    h.commit();
    take_actions(&mut h.core);
    h.later(Duration::from_secs(3));
    // No tick yet: the clock says expired; b gets it.
    h.kv(acquire("b", 2_000), false, 2);
    let commands = h.commit();
    assert!(matches!(
        commands.as_slice(),
        [Command::KvLeaseGrant {
            expect_epoch: 1,
            ..
        }]
    ));
    let b = lease_answer(take_actions(&mut h.core));
    assert!(b.held && b.epoch == 2);
    // A write fenced with a's epoch now fails.
    h.kv(
        txn(
            vec![Compare::LeaseHeld {
                name: "active".into(),
                holder: "a".into(),
                epoch: 1,
            }],
            vec![put("k", "stale")],
        ),
        false,
        3,
    );
    let err = only_answer(take_actions(&mut h.core)).unwrap_err();
    assert!(err.message().contains("held by \"b\" at epoch 2"), "{err}");
}

#[test]
fn two_racing_acquires_get_one_holder() {
    let mut h = Harness::new();
    h.kv(acquire("a", 5_000), false, 1);
    h.kv(acquire("b", 5_000), false, 2);
    assert_eq!(h.commit().len(), 2);
    let actions = take_actions(&mut h.core);
    let got: Vec<pb::LeaseState> = answers(actions)
        .into_iter()
        .map(|(_, r)| match r {
            Ok(KvReply::Lease(l)) => l,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(got[0].held && got[0].holder == "a");
    assert!(
        !got[1].held && got[1].holder == "a" && got[1].epoch == 1,
        "{:?}",
        got[1]
    );
}

#[test]
fn release_frees_the_lease_and_only_its_holder_may() {
    let mut h = Harness::new();
    h.kv(acquire("a", 5_000), false, 1);
    h.commit();
    take_actions(&mut h.core);
    h.kv(KvCall::Release(lease_ref("b", 1)), false, 2);
    assert!(only_answer(take_actions(&mut h.core)).is_err());
    h.kv(KvCall::Release(lease_ref("a", 1)), false, 3);
    h.commit();
    assert_eq!(only_answer(take_actions(&mut h.core)), Ok(KvReply::Empty));
    assert_eq!(h.core.registry.kv().held_leases().count(), 0);
    assert!(h.core.lease_timers.is_empty());
}

#[test]
fn a_new_leader_gives_held_leases_their_full_time() {
    let mut h = Harness::new();
    h.kv(acquire("a", 10_000), false, 1);
    h.commit();
    take_actions(&mut h.core);
    // Nine seconds later this master takes over again (a new term): the
    // lease does not expire a second later, but ten seconds later.
    h.later(Duration::from_secs(9));
    h.core.rebuild_leader_state(3);
    h.later(Duration::from_secs(2));
    h.core.on_tick(true);
    assert!(h.commit().is_empty());
    h.later(Duration::from_secs(9));
    h.core.on_tick(true);
    assert!(matches!(
        h.commit().as_slice(),
        [Command::KvLeaseRevoke { .. }]
    ));
}
