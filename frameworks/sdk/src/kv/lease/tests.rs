//! How a lease guard renews and decides its lease is lost, and how a
//! campaign waits, against the scripted fake master.

use std::collections::VecDeque;
use std::time::Duration;

use berth_proto as pb;
use tokio::time::Instant;
use tonic::Code;

use super::*;
use crate::kv::fake::{Fake, LOST_LEADERSHIP, client_of, err, held, ok};

#[tokio::test]
async fn a_guard_renews_and_loses_its_lease_when_refused() {
    let fake = Fake::default();
    fake.script().acquire = VecDeque::from([ok(held(4))]);
    let kv = client_of(&fake).await;
    let lease = Lease::new(&kv, "a", "me", Duration::from_secs(1)).unwrap();
    let Acquired::Held(guard) = lease.try_hold().await.unwrap() else {
        panic!("not granted")
    };
    assert_eq!(guard.epoch(), 4);
    assert_eq!(guard.lease().holder, "me");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(guard.is_held());
    let renewals = fake.calls("keep_alive");
    assert!((3..=6).contains(&renewals), "{renewals} renewals in 1.5 s");

    let refusal = "lease \"a\" in namespace \"ns\" is not held by \"me\" at epoch 4: it is expired";
    fake.script().keep_alive = VecDeque::from([err(Code::FailedPrecondition, refusal)]);
    let why = tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .unwrap();
    assert!(
        matches!(&why, LostReason::Refused(m) if m.contains(refusal)),
        "{why:?}"
    );
    assert!(!guard.is_held());
}

#[tokio::test]
async fn a_guard_whose_renewals_go_unanswered_gives_up_within_its_ttl() {
    let fake = Fake::default();
    fake.script().acquire = VecDeque::from([ok(held(1))]);
    fake.script().keep_alive_hangs = true;
    let kv = client_of(&fake).await;
    let started = Instant::now();
    let guard = Lease::new(&kv, "a", "me", Duration::from_secs(1))
        .unwrap()
        .campaign()
        .await
        .unwrap();
    let mut status = guard.status();
    assert_eq!(*status.borrow_and_update(), LeaseStatus::Held);
    assert_eq!(guard.lost().await, LostReason::Expired);
    let after = started.elapsed();
    // Measured from before the acquire was sent: never later than a TTL
    // after the grant, which the leader received later still.
    // (Timers may fire late on a loaded machine: 300 ms of slack.)
    assert!(after <= Duration::from_millis(1300), "lost after {after:?}");
    assert!(after >= Duration::from_millis(950), "lost after {after:?}");
    assert!(status.has_changed().unwrap());
}

#[tokio::test]
async fn a_released_or_dropped_guard_says_so() {
    let fake = Fake::default();
    fake.script().acquire = VecDeque::from([ok(held(2)), ok(held(3))]);
    fake.script().release = VecDeque::from([ok(pb::Empty {})]);
    let kv = client_of(&fake).await;
    let lease = Lease::new(&kv, "a", "me", Duration::from_secs(1)).unwrap();
    let guard = lease.campaign().await.unwrap();
    let status = guard.status();
    guard.release().await.unwrap();
    assert_eq!(*status.borrow(), LeaseStatus::Lost(LostReason::Released));
    assert_eq!(fake.calls("release"), 1);

    let guard = lease.campaign().await.unwrap();
    assert_eq!(guard.epoch(), 3);
    let status = guard.status();
    drop(guard);
    assert_eq!(*status.borrow(), LeaseStatus::Lost(LostReason::Released));
    // No renewal after the drop.
    let renewals = fake.calls("keep_alive");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(fake.calls("keep_alive"), renewals);
}

#[tokio::test]
async fn a_campaign_asks_every_third_of_the_ttl_until_granted() {
    let fake = Fake::default();
    let other = pb::LeaseState {
        held: false,
        holder: "other".into(),
        epoch: 2,
        remaining_ms: 800,
    };
    fake.script().acquire = VecDeque::from([
        ok(other.clone()),
        err(Code::Unavailable, LOST_LEADERSHIP),
        ok(other),
        ok(held(3)),
    ]);
    let kv = client_of(&fake).await;
    let lease = Lease::new(&kv, "a", "me", Duration::from_secs(3)).unwrap();
    let started = Instant::now();
    let guard = lease.campaign().await.unwrap();
    assert_eq!(guard.epoch(), 3);
    assert_eq!(fake.calls("acquire"), 4);
    // Two waits of a third of the TTL (the unavailable answer is retried
    // at once).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    drop(guard);

    fake.script().acquire = VecDeque::from([err(Code::InvalidArgument, "lease holder \"\" …")]);
    let e = lease.campaign().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
}
