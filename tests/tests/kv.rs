//! End-to-end tests of the frameworks' key-value store: real masters (one,
//! or a Raft group of three) over gRPC, through the SDK's client
//! (`berth_sdk::kv`). Covered: compare-and-set with racing writers, writes
//! fenced by a lease, a lease kept across a leader failover and then moved
//! to a standby, data read back from a new leader, a watch that keeps its
//! state exact across a leader stop, bad input refused with readable
//! messages, and a full restart of the group (keys from snapshots and the
//! log, the same on every master).
//!
//! The tests run one at a time (`SERIAL`): they bound how long a lease
//! takes to move and how long a watch takes to catch up, which a two-core
//! machine electing several groups at once would not honour.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use berth_proto as pb;
use berth_sdk::ErrorKind;
use berth_sdk::kv::{Acquired, Entry, KvClient, KvOptions, KvWatch, Lease, Txn, WatchEvent};
use berth_tests::{RaftCluster, RaftSettings, captured, init_logging_with_capture, stale};
use tokio::time::Instant;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a timing bound allows beyond the protocol's own: an election and
/// its commits, and timers that run late on a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(2);

const NS: &str = "kv-tests";

async fn client(cluster: &RaftCluster, namespace: &str) -> anyhow::Result<KvClient> {
    let options = KvOptions::default()
        .call_timeout(Duration::from_secs(3))
        .retry_for(Duration::from_secs(10))
        .watch_leader_check(Duration::from_millis(500));
    Ok(KvClient::connect(cluster.addresses(), namespace, options).await?)
}

/// Key → (value, version): what two views of the store must agree on.
type State = BTreeMap<String, (Vec<u8>, u64)>;

fn state_of(entries: &[Entry]) -> State {
    entries
        .iter()
        .map(|e| (e.key.clone(), (e.value.clone(), e.version)))
        .collect()
}

async fn next_event(watch: &mut KvWatch, within: Duration) -> anyhow::Result<WatchEvent> {
    Ok(tokio::time::timeout(within, watch.next())
        .await
        .context("no watch event in time")??)
}

// ---------------------------------------------------------------------------
// Compare-and-set, fencing
// ---------------------------------------------------------------------------

/// Two writers race to create the same keys (and then to update them from
/// the same version): exactly one wins each race, the loser gets a
/// Conflict that names the version, and the store holds the winner's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_one_wins_each_compare_and_set() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let cluster = RaftCluster::start(&[101, 102, 103], &[], RaftSettings::default()).await?;
    cluster.leader(Duration::from_secs(10)).await?;
    let one = client(&cluster, NS).await?;
    let two = client(&cluster, NS).await?;
    for round in 0..20 {
        let key = format!("race/{round:02}");
        let (a, b) = tokio::join!(
            one.create(key.clone(), "one"),
            two.create(key.clone(), "two")
        );
        let (winner, loser) = match (a, b) {
            (Ok(_), Err(e)) => ("one", e),
            (Err(e), Ok(_)) => ("two", e),
            (a, b) => bail!("round {round}: not exactly one winner: {a:?} / {b:?}"),
        };
        assert_eq!(loser.kind(), ErrorKind::Conflict, "{loser}");
        assert!(!loser.outcome_unknown());
        assert!(
            loser.to_string().contains("is at version 1, not 0"),
            "{loser}"
        );
        let stored = one.get(key.clone()).await?.context("the key exists")?;
        assert_eq!(stored.value, winner.as_bytes());
        assert_eq!(stored.version, 1);

        // Both update from version 1: one wins again.
        let (a, b) = tokio::join!(
            one.txn(
                Txn::new()
                    .if_version(key.clone(), 1)
                    .put(key.clone(), "one-2")
            ),
            two.txn(
                Txn::new()
                    .if_version(key.clone(), 1)
                    .put(key.clone(), "two-2")
            ),
        );
        ensure!(a.is_ok() != b.is_ok(), "round {round}: {a:?} / {b:?}");
        let won = if a.is_ok() { "one-2" } else { "two-2" };
        let lost = a.err().or(b.err()).context("one lost")?;
        assert_eq!(lost.kind(), ErrorKind::Conflict, "{lost}");
        let stored = two.get(key).await?.context("the key exists")?;
        assert_eq!(
            (stored.value.as_slice(), stored.version),
            (won.as_bytes(), 2)
        );
    }
    Ok(())
}

/// A holder that stopped renewing loses its lease to a standby (with a
/// greater epoch); from then on its fenced writes, renewals and release
/// are refused with a Conflict, and the standby's writes stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_lost_its_lease_cannot_write() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let cluster = RaftCluster::start(&[111, 112, 113], &[], RaftSettings::default()).await?;
    cluster.leader(Duration::from_secs(10)).await?;
    let a = client(&cluster, NS).await?;
    let b = client(&cluster, NS).await?;
    let ttl = Duration::from_secs(1);

    let granted = a.acquire("active", "a", ttl).await?;
    let a_lease = granted.lease_ref().context("a free lease is granted")?;
    assert_eq!(granted.holder.as_deref(), Some("a"));
    a.txn(Txn::new().if_lease(&a_lease).put("owner", "a"))
        .await?;
    // Asked again by another holder while held: who holds it, no error.
    let busy = b.acquire("active", "b", ttl).await?;
    assert!(!busy.held);
    assert_eq!(
        (busy.holder.as_deref(), busy.epoch),
        (Some("a"), a_lease.epoch)
    );

    // "a" renews no more; "b" campaigns and gets it after a's TTL.
    let started = Instant::now();
    let guard = tokio::time::timeout(
        ttl * 2 + SLACK,
        Lease::new(&b, "active", "b", ttl)?.campaign(),
    )
    .await
    .context("the standby did not get the lease")??;
    assert!(guard.epoch() > a_lease.epoch);
    assert!(
        started.elapsed() >= ttl / 2,
        "moved after {:?}",
        started.elapsed()
    );
    b.txn(Txn::new().if_lease(guard.lease()).put("owner", "b"))
        .await?;

    let e = a
        .txn(Txn::new().if_lease(&a_lease).put("owner", "a-again"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(!e.outcome_unknown());
    let text = e.to_string();
    assert!(
        text.contains("lease \"active\"") && text.contains("held by \"b\""),
        "{text}"
    );
    assert_eq!(
        a.get("owner").await?.context("written")?.value,
        b"b".to_vec()
    );
    let e = a.keep_alive(&a_lease).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = a.release(&a_lease).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(guard.is_held());
    guard.release().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------

/// A lease kept by a guard survives a leader stop: renewals reach the new
/// leader, the guard never says it was lost, and a standby does not get
/// the lease while it is kept. Data written before the stop is read back
/// from the new leader, and the holder's fenced writes go on there. Once
/// the holder stops renewing, the standby gets the lease with a greater
/// epoch, not before two thirds of the TTL (the last renewal's age at
/// most) and within TTL + a third (its polling) + slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lease_survives_a_failover_and_then_moves_to_the_standby() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let mut cluster = RaftCluster::start(&[121, 122, 123], &[], RaftSettings::default()).await?;
    let old = cluster.leader(Duration::from_secs(10)).await?;
    let a = client(&cluster, NS).await?;
    let b = client(&cluster, NS).await?;
    let ttl = Duration::from_secs(4);

    let Acquired::Held(guard) = Lease::new(&a, "active", "a", ttl)?.try_hold().await? else {
        bail!("a free lease was not granted");
    };
    let a_lease = guard.lease().clone();
    let mut status = guard.status();
    status.borrow_and_update();
    for i in 0..20 {
        a.txn(
            Txn::new()
                .if_lease(&a_lease)
                .put(format!("apps/{i:02}"), format!("v{i}")),
        )
        .await?;
    }
    a.delete("apps/07").await?;
    let (before, _) = a.list("apps/").await?;
    assert_eq!(before.len(), 19);
    let standby_lease = Lease::new(&b, "active", "b", ttl)?;
    let standby = tokio::spawn(async move { standby_lease.campaign().await });
    tokio::time::sleep(ttl / 2).await;

    cluster.stop(old).await?;
    let new = cluster.leader(Duration::from_secs(10)).await?;
    assert_ne!(new, old);
    // Two TTLs after the stop: still held, never lost, not moved.
    tokio::time::sleep(ttl * 2).await;
    assert!(guard.is_held());
    assert!(
        !status.has_changed()?,
        "the guard's status changed: {:?}",
        *status.borrow()
    );
    assert!(!standby.is_finished(), "the standby got a kept lease");
    let state = b.acquire("active", "b", ttl).await?;
    assert_eq!(
        (state.held, state.holder.as_deref(), state.epoch),
        (false, Some("a"), a_lease.epoch)
    );

    // The data, from the new leader, through a fresh client.
    let fresh = client(&cluster, NS).await?;
    let (after, _) = fresh.list("apps/").await?;
    assert_eq!(state_of(&after), state_of(&before));
    assert_eq!(fresh.get("apps/07").await?, None);
    a.txn(Txn::new().if_lease(&a_lease).put("apps/20", "v20"))
        .await?;

    // The holder stops renewing.
    let stopped = Instant::now();
    drop(guard);
    let moved = tokio::time::timeout(ttl + ttl / 3 + SLACK, standby)
        .await
        .context("the lease did not move to the standby in time")???;
    let took = stopped.elapsed();
    eprintln!("the lease moved {took:?} after the holder stopped renewing");
    assert!(moved.epoch() > a_lease.epoch);
    assert!(
        took >= ttl * 2 / 3 - Duration::from_millis(100),
        "moved after {took:?}"
    );
    let e = a
        .txn(Txn::new().if_lease(&a_lease).put("apps/21", "late"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    b.txn(Txn::new().if_lease(moved.lease()).put("apps/21", "b"))
        .await?;
    Ok(())
}

/// Folds a watch's events into the state they describe, checking that
/// changes come in revision order and that a reset is not older than what
/// was seen.
#[derive(Debug, Default)]
struct Follower {
    state: State,
    revision: u64,
    resets: usize,
}

impl Follower {
    fn apply(&mut self, event: WatchEvent) -> anyhow::Result<()> {
        let revision = event.revision();
        match event {
            WatchEvent::Reset { entries, revision } => {
                ensure!(
                    revision >= self.revision,
                    "a reset at {revision} after a change at {}",
                    self.revision
                );
                self.state = state_of(&entries);
                self.resets += 1;
            }
            WatchEvent::Put(e) => {
                ensure!(
                    revision > self.revision,
                    "put at {revision} after {}",
                    self.revision
                );
                self.state.insert(e.key, (e.value, e.version));
            }
            WatchEvent::Deleted { key, .. } => {
                ensure!(
                    revision > self.revision,
                    "delete at {revision} after {}",
                    self.revision
                );
                ensure!(
                    self.state.remove(&key).is_some(),
                    "{key} deleted but unknown"
                );
            }
            WatchEvent::Lease { .. } => {}
        }
        self.revision = revision;
        Ok(())
    }
}

/// A watch sees puts and deletes under its prefix, in the order and at the
/// revisions they were written, and nothing outside it. Then the leader is
/// stopped while a writer goes on writing: the watch resets on the new
/// leader and goes on, and the state it ends with equals the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_keeps_its_state_exact_across_a_leader_stop() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let mut cluster = RaftCluster::start(&[131, 132, 133], &[], RaftSettings::default()).await?;
    let old = cluster.leader(Duration::from_secs(10)).await?;
    let writer = client(&cluster, NS).await?;
    let watcher = client(&cluster, NS).await?;
    let mut watch = watcher.watch("w/");
    let mut follower = Follower::default();
    let first = next_event(&mut watch, Duration::from_secs(5)).await?;
    assert!(
        matches!(&first, WatchEvent::Reset { entries, .. } if entries.is_empty()),
        "{first:?}"
    );
    follower.apply(first)?;

    // In order, at the revisions written; nothing outside the prefix.
    let mut expected = Vec::new();
    for i in 0..10 {
        let key = format!("w/{i}");
        writer.put("elsewhere", format!("{i}")).await?;
        let r = writer.put(key.clone(), format!("{i}")).await?;
        expected.push((key, true, r.revision));
    }
    for key in ["w/3", "w/5"] {
        let r = writer.delete(key).await?;
        expected.push((key.to_string(), false, r.revision));
    }
    let r = writer.put("w/1", "again").await?;
    expected.push(("w/1".to_string(), true, r.revision));
    for (key, put, revision) in expected {
        let event = next_event(&mut watch, Duration::from_secs(5)).await?;
        let seen = match &event {
            WatchEvent::Put(e) => (e.key.clone(), true, e.mod_revision),
            WatchEvent::Deleted { key, revision } => (key.clone(), false, *revision),
            other => bail!("unexpected {other:?}"),
        };
        assert_eq!(seen, (key, put, revision));
        follower.apply(event)?;
    }
    assert_eq!(follower.state.get("w/1").map(|(_, v)| *v), Some(2));

    // A writer goes on while the leader stops.
    let w = writer.clone();
    let writing = tokio::spawn(async move {
        let mut unknown = 0;
        for i in 10..70 {
            let txn = if i % 3 == 0 {
                Txn::new().delete(format!("w/{}", i - 5))
            } else {
                Txn::new().put(format!("w/{i}"), format!("{i}"))
            };
            match w.txn(txn).await {
                Ok(_) => {}
                Err(e) if e.outcome_unknown() => unknown += 1,
                Err(e) => return Err(anyhow::Error::from(e)),
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        anyhow::Ok(unknown)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stopped = false;
    while !writing.is_finished() {
        ensure!(
            Instant::now() < deadline,
            "the writer did not finish in time"
        );
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(100), watch.next()).await {
            follower.apply(event?)?;
        }
        if !stopped && follower.revision >= r.revision + 10 {
            cluster.stop(old).await?;
            stopped = true;
        }
    }
    ensure!(stopped, "the leader was not stopped");
    let unknown = writing.await??;
    eprintln!("{unknown} writes of unknown outcome during the failover");

    let (entries, _) = writer.list("w/").await?;
    let store = state_of(&entries);
    let until = Instant::now() + Duration::from_secs(10);
    while follower.state != store {
        ensure!(
            Instant::now() < until,
            "the watch's state differs from the store's: {:?} vs {:?}",
            follower.state,
            store
        );
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
            follower.apply(event?)?;
        }
    }
    assert!(follower.resets >= 2, "no reset after the leader stopped");
    assert!(store.len() > 20, "{} keys", store.len());
    Ok(())
}

/// The leader the watch reads from is cut off from the other masters (its
/// gRPC port still answers): it steps down and hears of no more changes,
/// so its stream stays open and silent. The watch notices that another
/// master leads, watches there, and ends with the store's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_leaves_a_leader_that_was_cut_off() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let ids = [161, 162, 163];
    let cluster = RaftCluster::start(&ids, &[], RaftSettings::default()).await?;
    let old = cluster.leader(Duration::from_secs(10)).await?;
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != old).collect();
    let writer = client(&cluster, NS).await?;
    let watcher = client(&cluster, NS).await?;
    writer.put("p/a", "1").await?;
    let mut watch = watcher.watch("p/");
    let mut follower = Follower::default();
    follower.apply(next_event(&mut watch, Duration::from_secs(5)).await?)?;
    assert_eq!(follower.state.len(), 1);

    cluster.faults.isolate(old, &others);
    let new = cluster
        .leader_among(&others, Duration::from_secs(10))
        .await?;
    // The writer's first call may reach the old leader before it steps
    // down: outcome unknown, and these writes may be repeated.
    for txn in [Txn::new().put("p/b", "2"), Txn::new().delete("p/a")] {
        let mut attempts = 0;
        while let Err(e) = writer.txn(txn.clone()).await {
            attempts += 1;
            ensure!(e.outcome_unknown() && attempts < 5, "{e}");
        }
    }
    let (entries, _) = writer.list("p/").await?;
    let store = state_of(&entries);
    assert_eq!(store.keys().collect::<Vec<_>>(), ["p/b"]);
    let until = Instant::now() + Duration::from_secs(10);
    while follower.state != store {
        ensure!(
            Instant::now() < until,
            "the watch stayed on the cut-off master {old} (leader now {new}): {:?}",
            follower.state
        );
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
            follower.apply(event?)?;
        }
    }
    assert!(follower.resets >= 2);
    cluster.faults.heal();
    Ok(())
}

// ---------------------------------------------------------------------------
// Bad input, restart
// ---------------------------------------------------------------------------

/// Bad input is refused with INVALID_ARGUMENT ([`ErrorKind::Invalid`]) and
/// a message that says what is wrong, echoing at most a capped part of the
/// input, and changes nothing: the store's revision stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_readably_and_changes_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let cluster = RaftCluster::start(&[141, 142, 143], &[], RaftSettings::default()).await?;
    cluster.leader(Duration::from_secs(10)).await?;
    let good = client(&cluster, NS).await?;
    good.put("kept", "v").await?;
    let (before, revision) = good.list("").await?;

    let invalid = |what: &str, e: berth_sdk::SdkError, words: &[&str]| {
        assert_eq!(e.kind(), ErrorKind::Invalid, "{what}: {e}");
        assert!(!e.outcome_unknown(), "{what}: {e}");
        let text = e.to_string();
        for w in words {
            assert!(text.contains(w), "{what}: {text:?} does not say {w:?}");
        }
        assert!(text.len() < 400, "{what}: {} bytes: {text}", text.len());
    };
    let bad_ns = client(&cluster, "Not A Namespace!").await?;
    invalid(
        "bad namespace",
        bad_ns.put("k", "v").await.unwrap_err(),
        &["namespace \"Not A Namespace!\"", "lowercase"],
    );
    invalid(
        "bad namespace read",
        bad_ns.get("k").await.unwrap_err(),
        &["namespace"],
    );
    let long_ns = client(&cluster, &"n".repeat(10_000)).await?;
    invalid(
        "long namespace",
        long_ns.get("k").await.unwrap_err(),
        &["1 to 64 bytes"],
    );
    let mut watch = bad_ns.watch("");
    let refused = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .context("the watch did not end")?;
    invalid("bad namespace watch", refused.unwrap_err(), &["namespace"]);

    invalid(
        "2 MiB value",
        good.put("big", vec![7_u8; 2 * 1024 * 1024])
            .await
            .unwrap_err(),
        &["key \"big\"", "2097152 bytes", "at most 1048576"],
    );
    invalid(
        "empty transaction",
        good.txn(Txn::new().if_absent("x")).await.unwrap_err(),
        &["at least one operation"],
    );
    invalid(
        "control character",
        good.put("a\nb", "v").await.unwrap_err(),
        &["control character"],
    );
    invalid(
        "lease time to live",
        good.acquire("l", "me", Duration::ZERO).await.unwrap_err(),
        &["time to live"],
    );
    invalid(
        "empty holder",
        good.acquire("l", "", Duration::from_secs(5))
            .await
            .unwrap_err(),
        &["holder"],
    );
    // A bad op after good ones: none of them applies.
    invalid(
        "bad op last",
        good.txn(Txn::new().put("ok", "v").delete("kept").put("", "v"))
            .await
            .unwrap_err(),
        &["key must not be empty"],
    );

    let (after, revision_after) = good.list("").await?;
    assert_eq!(state_of(&after), state_of(&before));
    assert_eq!(revision_after, revision);
    Ok(())
}

/// Reads a master's own copy of the namespace (`berth-read: stale`).
async fn stale_state(cluster: &RaftCluster, id: u64) -> anyhow::Result<State> {
    let channel = berth_proto::leader::lazy_channel(&cluster.addr(id), Duration::from_secs(1))?;
    let mut kv = pb::key_value_client::KeyValueClient::new(channel);
    let page = kv
        .list(stale(pb::KvListRequest {
            namespace: NS.into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    ensure!(!page.more, "more than one page");
    Ok(page
        .entries
        .into_iter()
        .map(|e| (e.key, (e.value, e.version)))
        .collect())
}

/// All three masters are stopped and started again after writes that made
/// every master take snapshots (`snapshot_every` 10) and compact its log.
/// Afterwards the keys, their values and versions are what they were,
/// through the client and in every master's own copy (a stale read on
/// each), and the lease still names its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_keeps_the_keys() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging_with_capture();
    let ids = [151, 152, 153];
    let settings = RaftSettings {
        snapshot_every: 10,
        ..RaftSettings::default()
    };
    let mut cluster = RaftCluster::start(&ids, &[], settings).await?;
    cluster.leader(Duration::from_secs(10)).await?;
    let kv = client(&cluster, NS).await?;
    let held = kv.acquire("active", "a", Duration::from_secs(60)).await?;
    assert!(held.held);
    for round in 0..3 {
        for i in 0..15 {
            kv.put(format!("k/{i:02}"), format!("{round}-{i}")).await?;
        }
    }
    kv.txn(
        Txn::new()
            .delete("k/03")
            .delete_prefix("k/1")
            .put("z", "last"),
    )
    .await?;
    let (entries, _) = kv.list("").await?;
    let before = state_of(&entries);
    assert_eq!(before.len(), 15 - 1 - 5 + 1);
    assert_eq!(before["k/02"], (b"2-2".to_vec(), 3));
    let until = Instant::now() + Duration::from_secs(10);
    for id in ids {
        while stale_state(&cluster, id).await? != before {
            ensure!(Instant::now() < until, "master {id} did not catch up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let compacted = captured(|e| {
            e.message == "raft log compacted" && e.fields.get("id") == Some(&id.to_string())
        });
        assert!(!compacted.is_empty(), "master {id} took no snapshot");
    }

    for id in ids {
        cluster.stop(id).await?;
    }
    for id in ids {
        cluster.start_master(id).await?;
    }
    cluster.leader(Duration::from_secs(15)).await?;
    let kv = client(&cluster, NS).await?;
    let (entries, _) = kv.list("").await?;
    assert_eq!(state_of(&entries), before);
    let other = kv.acquire("active", "b", Duration::from_secs(5)).await?;
    assert_eq!(
        (other.held, other.holder.as_deref(), other.epoch),
        (false, Some("a"), held.epoch)
    );
    let until = Instant::now() + Duration::from_secs(10);
    for id in ids {
        loop {
            match stale_state(&cluster, id).await {
                Ok(s) if s == before => break,
                other => ensure!(
                    Instant::now() < until,
                    "master {id} after the restart: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
