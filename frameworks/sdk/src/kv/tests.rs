//! The client against a scripted fake master ([`super::fake`]): which
//! failures are retried and which are not, what reaches the caller. The
//! real master is in `tests/tests/kv.rs`.

use std::collections::VecDeque;

use tonic::{Code, Status};

use super::call::{NOT_LEADER_PREFIX, error_of, not_taken};
use super::fake::{Fake, LOST_LEADERSHIP, Say, client_of, err, held, ok};
use super::*;
use berth_proto::key_value_client::KeyValueClient;

fn written(revision: u64) -> pb::KvTxnResponse {
    pb::KvTxnResponse {
        revision,
        written: vec![pb::KeyVersion {
            key: "k".into(),
            version: 1,
        }],
    }
}

#[tokio::test]
async fn a_write_whose_outcome_is_unknown_is_not_sent_again() {
    let fake = Fake::default();
    fake.script().txn = VecDeque::from([err(Code::Unavailable, LOST_LEADERSHIP), ok(written(9))]);
    let kv = client_of(&fake).await;
    let e = kv.put("k", "v").await.unwrap_err();
    assert!(e.outcome_unknown(), "{e:?}");
    assert!(e.to_string().contains("lost leadership"), "{e}");
    assert_eq!(fake.calls("txn"), 1);

    // Nor after a timeout.
    fake.script().txn = VecDeque::from([Say::Hang, ok(written(9))]);
    let e = kv.put("k", "v").await.unwrap_err();
    assert_eq!(e, SdkError::Timeout(Duration::from_millis(300)));
    assert!(e.outcome_unknown());
    assert_eq!(fake.calls("txn"), 2);
}

#[tokio::test]
async fn a_write_a_follower_refused_goes_to_the_leader() {
    let fake = Fake::default();
    fake.script().txn = VecDeque::from([
        err(
            Code::Unavailable,
            "this master is not the leader; the leader is at 127.0.0.1:1",
        ),
        ok(written(9)),
    ]);
    let kv = client_of(&fake).await;
    let r = kv.create("k", "v").await.unwrap();
    assert_eq!(r.revision, 9);
    assert_eq!(r.version_of("k"), Some(1));
    assert_eq!(r.version_of("other"), None);
    assert_eq!(fake.calls("txn"), 2);
}

#[tokio::test]
async fn refusals_keep_their_kind_and_message() {
    let fake = Fake::default();
    let conflict = "key \"k\" in namespace \"ns\" is at version 1, not 0";
    fake.script().txn = VecDeque::from([
        err(Code::FailedPrecondition, conflict),
        err(
            Code::InvalidArgument,
            "a transaction needs at least one operation",
        ),
    ]);
    let kv = client_of(&fake).await;
    let e = kv.create("k", "v").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(!e.outcome_unknown());
    assert!(e.to_string().contains(conflict), "{e}");
    let e = kv.txn(Txn::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(!e.outcome_unknown());
    assert_eq!(fake.calls("txn"), 2);
}

#[tokio::test]
async fn reads_are_retried_and_a_missing_key_is_none() {
    let fake = Fake::default();
    let entry = pb::KvEntry {
        key: "k".into(),
        value: b"v".to_vec(),
        version: 2,
        create_revision: 3,
        mod_revision: 4,
    };
    fake.script().get = VecDeque::from([
        err(Code::Unavailable, LOST_LEADERSHIP),
        Say::Hang,
        ok(entry),
        err(Code::NotFound, "no key \"x\" in namespace \"ns\""),
    ]);
    let kv = client_of(&fake).await;
    let e = kv.get("k").await.unwrap().unwrap();
    assert_eq!(
        (e.key.as_str(), e.value.as_slice(), e.version),
        ("k", &b"v"[..], 2)
    );
    assert_eq!((e.create_revision, e.mod_revision), (3, 4));
    assert_eq!(fake.calls("get"), 3);
    assert_eq!(kv.get("x").await.unwrap(), None);
}

#[tokio::test]
async fn a_repeated_release_that_finds_the_lease_free_succeeds() {
    let fake = Fake::default();
    let free = "lease \"a\" in namespace \"ns\" is not held by \"me\" at epoch 1: it is free";
    fake.script().release = VecDeque::from([
        err(Code::Unavailable, LOST_LEADERSHIP),
        err(Code::FailedPrecondition, free),
        err(Code::FailedPrecondition, free),
    ]);
    let kv = client_of(&fake).await;
    let lease = LeaseRef {
        name: "a".into(),
        holder: "me".into(),
        epoch: 1,
    };
    kv.release(&lease).await.unwrap();
    // Sent once, refused: the caller did not hold it.
    let e = kv.release(&lease).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(fake.calls("release"), 3);
}

#[tokio::test]
async fn requests_that_cannot_be_sent_are_refused_here() {
    let fake = Fake::default();
    let kv = client_of(&fake).await;
    let big = vec![0_u8; 3 * 1024 * 1024];
    let e = kv
        .txn(Txn::new().put("a", big.clone()).put("b", big))
        .await
        .unwrap_err();
    assert!(matches!(e, SdkError::InvalidRequest(_)), "{e:?}");
    assert!(e.to_string().contains("at most 4194304 bytes"), "{e}");
    assert_eq!(fake.calls("txn"), 0);
    let e = kv
        .acquire("a", "me", Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(Lease::new(&kv, "a", "me", Duration::from_millis(1500)).is_err());
    assert_eq!(fake.calls("acquire"), 0);
}

#[tokio::test]
async fn bad_addresses_and_no_master_are_told_apart() {
    let e = KvClient::connect(vec![], "ns", KvOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, SdkError::InvalidConfig(_)), "{e:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = KvOptions::default().retry_for(Duration::from_millis(300));
    let e = KvClient::connect(vec![format!("127.0.0.1:{port}")], "ns", options)
        .await
        .unwrap_err();
    assert!(matches!(e, SdkError::Transport(_)), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
}

#[tokio::test]
async fn a_refused_connection_is_a_call_not_taken() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel =
        berth_proto::leader::lazy_channel(&format!("127.0.0.1:{port}"), Duration::from_secs(1))
            .unwrap();
    let status = KeyValueClient::new(channel)
        .txn(pb::KvTxnRequest::default())
        .await
        .unwrap_err();
    assert!(not_taken(&status), "{status:?}");
    assert!(matches!(error_of(&status), SdkError::Transport(_)));
    assert!(!not_taken(&Status::unavailable(LOST_LEADERSHIP)));
    assert!(!not_taken(&Status::unavailable(
        "the command was not committed in time; it may still be committed"
    )));
    assert!(!not_taken(&Status::failed_precondition(NOT_LEADER_PREFIX)));
}

#[test]
fn a_txn_is_built_in_order() {
    let lease = LeaseRef {
        name: "active".into(),
        holder: "me".into(),
        epoch: 7,
    };
    let txn = Txn::new()
        .if_absent("a")
        .if_version("b", 3)
        .if_lease(&lease)
        .put("a", "1")
        .delete("b")
        .delete_prefix("c/");
    assert_eq!(txn.len(), (3, 3));
    assert!(!txn.is_empty() && Txn::new().is_empty());
    let r = txn.into_request("ns").unwrap();
    assert_eq!(r.namespace, "ns");
    use pb::kv_compare::Compare;
    use pb::kv_op::Op;
    let compares: Vec<_> = r.compares.into_iter().map(|c| c.compare.unwrap()).collect();
    assert_eq!(
        compares,
        [
            Compare::Version(pb::KeyVersion {
                key: "a".into(),
                version: 0
            }),
            Compare::Version(pb::KeyVersion {
                key: "b".into(),
                version: 3
            }),
            Compare::LeaseHeld(pb::LeaseRef {
                namespace: String::new(),
                name: "active".into(),
                holder: "me".into(),
                epoch: 7
            }),
        ]
    );
    let ops: Vec<_> = r.ops.into_iter().map(|o| o.op.unwrap()).collect();
    assert_eq!(
        ops,
        [
            Op::Put(pb::KvPut {
                key: "a".into(),
                value: b"1".to_vec()
            }),
            Op::Delete("b".into()),
            Op::DeletePrefix("c/".into()),
        ]
    );
}

#[test]
fn lease_states_name_their_holder() {
    let held = LeaseState::new("a", held(3));
    assert_eq!(
        held.lease_ref(),
        Some(LeaseRef {
            name: "a".into(),
            holder: "me".into(),
            epoch: 3
        })
    );
    assert_eq!(held.remaining, Duration::from_secs(1));
    let free = LeaseState::new(
        "a",
        pb::LeaseState {
            held: false,
            holder: String::new(),
            epoch: 3,
            remaining_ms: 0,
        },
    );
    assert_eq!(free.holder, None);
    assert_eq!(free.lease_ref(), None);
    assert_eq!(ttl_seconds(Duration::from_secs(10)).unwrap(), 10);
    assert!(ttl_seconds(Duration::from_secs(u64::from(u32::MAX) + 1)).is_err());
}

#[test]
fn the_masters_marker_says_not_taken_whatever_the_message() {
    let mut marked = Status::unavailable("a follower's words may change");
    marked
        .metadata_mut()
        .insert("berth-call", "not-taken".parse().unwrap());
    assert!(not_taken(&marked));
    assert!(!not_taken(&Status::unavailable(
        "this master lost leadership before the command was committed"
    )));
    assert!(not_taken(&Status::unavailable(format!(
        "{NOT_LEADER_PREFIX}; the leader is at 10.0.0.1:5050"
    ))));
}
