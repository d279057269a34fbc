//! Tests of the raft log storage, and of the raft node over an in-process
//! channel transport with switchable partitions.

// rust-protobuf 2 messages are built field by field, as raft-rs does.
#![allow(clippy::field_reassign_with_default)]

mod storage {
    use protobuf::Message as _;
    use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
    use raft::{GetEntriesContext, Storage, StorageError};

    use crate::raft::storage::RaftStorage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = vec![index as u8; 8].into();
        e
    }

    fn snapshot(index: u64, term: u64, voters: Vec<u64>, data: &[u8]) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = voters;
        s.data = data.to_vec().into();
        s
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    fn open() -> (tempfile::TempDir, RaftStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = RaftStorage::open(&dir.path().join("raft.redb")).unwrap();
        (dir, s)
    }

    /// MemStorage's fixture: a snapshot at 3 (term 3), entries 4 and 5.
    fn fixture() -> (tempfile::TempDir, RaftStorage) {
        let (dir, s) = open();
        s.persist_ready(
            Some(&snapshot(3, 3, vec![1, 2, 3], b"")),
            &[entry(4, 4), entry(5, 5)],
            None,
        )
        .unwrap();
        (dir, s)
    }

    #[test]
    fn empty_storage_is_uninitialized_and_truncated_at_zero() {
        let (_d, s) = open();
        assert!(!s.is_initialized());
        assert_eq!(s.first_index().unwrap(), 1);
        assert_eq!(s.last_index().unwrap(), 0);
        assert_eq!(s.term(0).unwrap(), 0);
        assert_eq!(s.initial_state().unwrap().conf_state, ConfState::default());
        assert_eq!(
            s.snapshot(0, 2).unwrap_err(),
            raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
        );
    }

    #[test]
    fn initialize_stores_the_bootstrap_snapshot() {
        let (_d, s) = open();
        s.initialize(&[1, 2, 3]).unwrap();
        assert!(s.is_initialized());
        assert!(s.initialize(&[1]).is_err());
        assert_eq!(s.first_index().unwrap(), 2);
        assert_eq!(s.last_index().unwrap(), 1);
        assert_eq!(s.term(1).unwrap(), 1);
        let st = s.initial_state().unwrap();
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(st.hard_state.commit, 1);
        assert_eq!(st.hard_state.term, 1);
        assert_eq!(s.snapshot_data().unwrap(), (1, Vec::new()));
    }

    #[test]
    fn term_matches_mem_storage() {
        let (_d, s) = fixture();
        assert_eq!(s.term(2), Err(raft::Error::Store(StorageError::Compacted)));
        assert_eq!(s.term(3), Ok(3));
        assert_eq!(s.term(4), Ok(4));
        assert_eq!(s.term(5), Ok(5));
        assert_eq!(
            s.term(6),
            Err(raft::Error::Store(StorageError::Unavailable))
        );
    }

    #[test]
    fn entries_match_mem_storage_including_max_size() {
        let (_d, s) = fixture();
        s.persist_ready(None, &[entry(6, 6)], None).unwrap();
        let size = u64::from(entry(4, 4).compute_size());
        assert_eq!(
            s.entries(2, 6, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        assert_eq!(
            s.entries(3, 4, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        assert_eq!(s.entries(4, 5, None, ctx()).unwrap(), vec![entry(4, 4)]);
        assert_eq!(
            s.entries(4, 7, None, ctx()).unwrap(),
            vec![entry(4, 4), entry(5, 5), entry(6, 6)]
        );
        // At least one entry even if it exceeds max_size.
        assert_eq!(s.entries(4, 7, Some(0), ctx()).unwrap(), vec![entry(4, 4)]);
        assert_eq!(
            s.entries(4, 7, Some(size * 2), ctx()).unwrap(),
            vec![entry(4, 4), entry(5, 5)]
        );
        assert_eq!(
            s.entries(4, 7, Some(size * 3 - 1), ctx()).unwrap(),
            vec![entry(4, 4), entry(5, 5)]
        );
        assert_eq!(s.entries(4, 7, Some(size * 3), ctx()).unwrap().len(), 3);
        assert_eq!(
            s.entries(4, 8, None, ctx()),
            Err(raft::Error::Store(StorageError::Unavailable))
        );
    }

    #[test]
    fn append_overwrites_a_conflicting_suffix() {
        let (_d, s) = fixture();
        // Same entries: unchanged.
        s.persist_ready(None, &[entry(4, 4), entry(5, 5)], None)
            .unwrap();
        assert_eq!(s.last_index().unwrap(), 5);
        // Conflict at 5: truncate and replace.
        s.persist_ready(None, &[entry(5, 6), entry(6, 6)], None)
            .unwrap();
        assert_eq!(
            s.entries(4, 7, None, ctx()).unwrap(),
            vec![entry(4, 4), entry(5, 6), entry(6, 6)]
        );
        // A shorter overwrite drops the longer tail.
        s.persist_ready(None, &[entry(4, 7)], None).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(4).unwrap(), 7);
        // Direct append.
        s.persist_ready(None, &[entry(5, 7)], None).unwrap();
        assert_eq!(s.last_index().unwrap(), 5);
        // A hole, and an overwrite of compacted entries, are refused.
        assert!(s.persist_ready(None, &[entry(7, 7)], None).is_err());
        assert!(s.persist_ready(None, &[entry(3, 7)], None).is_err());
        assert_eq!(s.last_index().unwrap(), 5);
    }

    #[test]
    fn compact_drops_entries_and_keeps_the_term() {
        let (_d, s) = fixture();
        s.persist_ready(None, &[entry(6, 6), entry(7, 6)], None)
            .unwrap();
        // Not past the snapshot: ignored.
        assert!(!s.compact(3, b"x".to_vec()).unwrap());
        assert!(!s.compact(2, b"x".to_vec()).unwrap());
        assert!(s.compact(5, b"state@5".to_vec()).unwrap());
        assert_eq!(s.first_index().unwrap(), 6);
        assert_eq!(s.last_index().unwrap(), 7);
        assert_eq!(s.term(5).unwrap(), 5);
        assert_eq!(s.term(4), Err(raft::Error::Store(StorageError::Compacted)));
        assert_eq!(s.snapshot_data().unwrap(), (5, b"state@5".to_vec()));
        // Compacting everything.
        assert!(s.compact(7, b"state@7".to_vec()).unwrap());
        assert_eq!(s.first_index().unwrap(), 8);
        assert_eq!(s.last_index().unwrap(), 7);
        assert_eq!(s.term(7).unwrap(), 6);
        // Beyond the log: refused.
        assert!(s.compact(9, Vec::new()).is_err());
    }

    #[test]
    fn snapshot_is_returned_with_its_data_if_recent_enough() {
        let (_d, s) = fixture();
        s.persist_ready(None, &[entry(6, 6)], None).unwrap();
        s.compact(5, b"data".to_vec()).unwrap();
        let snap = s.snapshot(4, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 5);
        assert_eq!(snap.get_metadata().term, 5);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        assert_eq!(snap.data.to_vec(), b"data".to_vec());
        assert_eq!(s.snapshot(5, 2).unwrap().get_metadata().index, 5);
        assert_eq!(
            s.snapshot(6, 2).unwrap_err(),
            raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
        );
    }

    #[test]
    fn compaction_uses_the_membership_at_its_index() {
        let (_d, s) = fixture();
        s.persist_ready(None, &[entry(6, 6), entry(7, 6)], None)
            .unwrap();
        let mut cs = ConfState::default();
        cs.voters = vec![1, 2, 3, 4];
        s.set_conf_state(7, &cs).unwrap();
        s.compact(6, Vec::new()).unwrap();
        assert_eq!(
            s.snapshot(0, 2)
                .unwrap()
                .get_metadata()
                .get_conf_state()
                .voters,
            vec![1, 2, 3]
        );
        s.compact(7, Vec::new()).unwrap();
        assert_eq!(
            s.snapshot(0, 2)
                .unwrap()
                .get_metadata()
                .get_conf_state()
                .voters,
            vec![1, 2, 3, 4]
        );
        assert_eq!(s.conf_state().voters, vec![1, 2, 3, 4]);
    }

    #[test]
    fn installing_a_snapshot_replaces_the_log() {
        let (_d, s) = fixture();
        let mut hs = HardState::default();
        hs.term = 9;
        hs.commit = 10;
        s.persist_ready(
            Some(&snapshot(10, 8, vec![1, 2], b"leader")),
            &[entry(11, 9)],
            Some(&hs),
        )
        .unwrap();
        assert_eq!(s.first_index().unwrap(), 11);
        assert_eq!(s.last_index().unwrap(), 11);
        assert_eq!(s.term(10).unwrap(), 8);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2]);
        assert_eq!(s.snapshot_data().unwrap(), (10, b"leader".to_vec()));
        // An older snapshot is refused.
        assert!(
            s.persist_ready(Some(&snapshot(4, 4, vec![1], b"")), &[], None)
                .is_err()
        );
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let s = RaftStorage::open(&path).unwrap();
            s.initialize(&[1, 2, 3]).unwrap();
            let mut hs = HardState::default();
            hs.term = 2;
            hs.vote = 3;
            hs.commit = 3;
            s.persist_ready(None, &[entry(2, 2), entry(3, 2), entry(4, 2)], Some(&hs))
                .unwrap();
            s.persist_ready(None, &[entry(4, 3), entry(5, 3)], None)
                .unwrap();
            s.set_commit(4).unwrap();
            s.compact(3, b"state@3".to_vec()).unwrap();
        }
        let s = RaftStorage::open(&path).unwrap();
        assert!(s.is_initialized());
        assert_eq!(s.first_index().unwrap(), 4);
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(s.term(3).unwrap(), 2);
        assert_eq!(s.term(4).unwrap(), 3);
        assert_eq!(
            s.entries(4, 6, None, ctx()).unwrap(),
            vec![entry(4, 3), entry(5, 3)]
        );
        let st = s.initial_state().unwrap();
        assert_eq!((st.hard_state.term, st.hard_state.vote), (2, 3));
        assert_eq!(st.hard_state.commit, 4);
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(s.snapshot_data().unwrap(), (3, b"state@3".to_vec()));
        let snap = s.snapshot(3, 2).unwrap();
        assert_eq!(snap.data.to_vec(), b"state@3".to_vec());
    }

    #[test]
    fn corrupt_records_are_reported_not_unwrapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let def: redb::TableDefinition<'_, u64, &[u8]> =
                    redb::TableDefinition::new("entries");
                let mut t = txn.open_table(def).unwrap();
                t.insert(1, [0xff_u8, 0xff, 0xff].as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = RaftStorage::open(&path).unwrap_err();
        assert!(
            matches!(err, crate::error::MasterError::Corrupt(_)),
            "{err}"
        );
    }
}

mod node {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use raft::StateRole;
    use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Message};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use crate::raft::Transport;
    use crate::raft::node::{self, Applied, NodeConfig, ProposeError, RaftHandle, Status};
    use crate::raft::storage::RaftStorage;

    /// Routes messages to other nodes' handles; drops those between
    /// blocked pairs.
    #[derive(Default)]
    struct Net {
        nodes: Mutex<HashMap<u64, RaftHandle>>,
        blocked: Mutex<HashSet<(u64, u64)>>,
    }

    impl Net {
        fn isolate(&self, id: u64, ids: &[u64]) {
            let mut b = self.blocked.lock().unwrap();
            for &o in ids {
                if o != id {
                    b.insert((id, o));
                    b.insert((o, id));
                }
            }
        }
        fn heal(&self) {
            self.blocked.lock().unwrap().clear();
        }
    }

    struct ChanTransport(Arc<Net>);

    impl Transport for ChanTransport {
        fn send(&self, messages: Vec<Message>) {
            let blocked = self.0.blocked.lock().unwrap().clone();
            let nodes = self.0.nodes.lock().unwrap().clone();
            for m in messages {
                if blocked.contains(&(m.from, m.to)) {
                    continue;
                }
                if let Some(h) = nodes.get(&m.to) {
                    let _ = h.try_step(m);
                }
            }
        }
        fn set_peer(&self, _id: u64, _address: Option<String>) {}
    }

    struct Running {
        handle: RaftHandle,
        log: Arc<Mutex<Vec<Applied>>>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
        collector: JoinHandle<()>,
    }

    struct Cluster {
        dir: tempfile::TempDir,
        net: Arc<Net>,
        nodes: HashMap<u64, Running>,
    }

    fn config(id: u64) -> NodeConfig {
        NodeConfig {
            tick: Duration::from_millis(10),
            ..NodeConfig::new(id)
        }
    }

    impl Cluster {
        async fn new(ids: &[u64]) -> Cluster {
            let mut c = Cluster {
                dir: tempfile::tempdir().unwrap(),
                net: Arc::default(),
                nodes: HashMap::new(),
            };
            for &id in ids {
                c.storage(id).initialize(ids).unwrap();
                c.start(id);
            }
            c
        }

        fn storage(&self, id: u64) -> RaftStorage {
            RaftStorage::open(&self.dir.path().join(format!("raft-{id}.redb"))).unwrap()
        }

        /// Starts node `id` on its redb file (initialized or not).
        fn start(&mut self, id: u64) {
            let (stop, stopped) = oneshot::channel::<()>();
            let (handle, mut rx, task) = node::start(
                config(id),
                self.storage(id),
                Arc::new(ChanTransport(self.net.clone())),
                async move {
                    let _ = stopped.await;
                },
            )
            .unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            let l = log.clone();
            let h = handle.clone();
            let collector = tokio::spawn(async move {
                while let Some(a) = rx.recv().await {
                    // Play the state machine: hand over a snapshot when asked.
                    if let Applied::SnapshotWanted { index } = a {
                        let h = h.clone();
                        tokio::spawn(async move {
                            let _ = h
                                .compact(index, format!("state@{index}").into_bytes())
                                .await;
                        });
                    }
                    l.lock().unwrap().push(a);
                }
            });
            self.net.nodes.lock().unwrap().insert(id, handle.clone());
            self.nodes.insert(
                id,
                Running {
                    handle,
                    log,
                    stop,
                    task,
                    collector,
                },
            );
        }

        async fn stop(&mut self, id: u64) {
            self.net.nodes.lock().unwrap().remove(&id);
            let r = self.nodes.remove(&id).unwrap();
            let _ = r.stop.send(());
            r.task.await.unwrap();
            r.collector.await.unwrap();
        }

        fn h(&self, id: u64) -> &RaftHandle {
            &self.nodes[&id].handle
        }

        fn status(&self, id: u64) -> Status {
            self.h(id).status().borrow().clone()
        }

        fn log(&self, id: u64) -> Vec<Applied> {
            self.nodes[&id].log.lock().unwrap().clone()
        }

        fn datas(&self, id: u64) -> Vec<Vec<u8>> {
            entry_datas(&self.log(id))
        }

        /// Waits for exactly one leader among `ids` that all of `ids`
        /// agree on.
        async fn leader(&self, ids: &[u64]) -> u64 {
            let mut found = 0;
            wait_until(Duration::from_secs(10), || {
                let st: Vec<Status> = ids.iter().map(|&i| self.status(i)).collect();
                let leaders: Vec<u64> = st
                    .iter()
                    .filter(|s| s.role == StateRole::Leader)
                    .map(|s| s.id)
                    .collect();
                if leaders.len() == 1 && st.iter().all(|s| s.leader_id == leaders[0]) {
                    found = leaders[0];
                    true
                } else {
                    false
                }
            })
            .await;
            found
        }
    }

    fn entry_datas(log: &[Applied]) -> Vec<Vec<u8>> {
        log.iter()
            .filter_map(|a| match a {
                Applied::Entry { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn cmd(i: usize) -> Vec<u8> {
        format!("cmd-{i}").into_bytes()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_node_elects_itself_and_applies_in_order() {
        let c = Cluster::new(&[1]).await;
        c.h(1).campaign().await.unwrap();
        assert_eq!(c.leader(&[1]).await, 1);
        for i in 0..20 {
            c.h(1).propose(cmd(i)).await.unwrap();
        }
        wait_until(Duration::from_secs(5), || c.datas(1).len() == 20).await;
        assert_eq!(c.datas(1), (0..20).map(cmd).collect::<Vec<_>>());
        // Indexes strictly increase.
        let idx: Vec<u64> = c
            .log(1)
            .iter()
            .filter_map(|a| match a {
                Applied::Entry { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]));
        let st = c.status(1);
        assert_eq!(st.voters, vec![1]);
        assert!(st.applied >= st.commit.min(*idx.last().unwrap()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_proposals_share_readies() {
        let c = Cluster::new(&[1]).await;
        c.h(1).campaign().await.unwrap();
        c.leader(&[1]).await;
        let before = c.status(1).readies;
        let n = 500;
        let h = c.h(1).clone();
        let results = futures::future::join_all((0..n).map(|i| {
            let h = h.clone();
            async move { h.propose(cmd(i)).await }
        }))
        .await;
        assert!(results.iter().all(Result::is_ok));
        wait_until(Duration::from_secs(10), || c.datas(1).len() == n).await;
        let readies = c.status(1).readies - before;
        assert!(
            readies < (n as u64) / 4,
            "{n} proposals took {readies} readies"
        );
        // Concurrent proposals have no order among themselves; each is
        // applied exactly once.
        let mut got = c.datas(1);
        got.sort();
        let mut want: Vec<Vec<u8>> = (0..n).map(cmd).collect();
        want.sort();
        assert!(got == want, "applied proposals differ from proposed ones");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn three_nodes_replicate_in_identical_order() {
        let c = Cluster::new(&[1, 2, 3]).await;
        let leader = c.leader(&[1, 2, 3]).await;
        for i in 0..50 {
            c.h(leader).propose(cmd(i)).await.unwrap();
        }
        wait_until(Duration::from_secs(10), || {
            [1, 2, 3].iter().all(|&i| c.datas(i).len() == 50)
        })
        .await;
        let expected: Vec<Vec<u8>> = (0..50).map(cmd).collect();
        for id in [1, 2, 3] {
            assert_eq!(c.datas(id), expected, "node {id}");
        }
        let entries = |id| -> Vec<Applied> {
            c.log(id)
                .into_iter()
                .filter(|a| matches!(a, Applied::Entry { .. }))
                .collect()
        };
        assert_eq!(entries(1), entries(2));
        assert_eq!(entries(2), entries(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_follower_refuses_with_the_leaders_id() {
        let c = Cluster::new(&[1, 2, 3]).await;
        let leader = c.leader(&[1, 2, 3]).await;
        let follower = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
        assert_eq!(
            c.h(follower).propose(cmd(0)).await,
            Err(ProposeError::NotLeader { leader_id: leader })
        );
        assert_eq!(
            c.h(follower).read_index(b"r".to_vec()).await,
            Err(ProposeError::NotLeader { leader_id: leader })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_isolated_leader_steps_down_and_its_proposals_are_lost() {
        let mut c = Cluster::new(&[1, 2, 3]).await;
        let old = c.leader(&[1, 2, 3]).await;
        c.h(old).propose(cmd(0)).await.unwrap();
        wait_until(Duration::from_secs(5), || {
            [1, 2, 3].iter().all(|&i| c.datas(i).len() == 1)
        })
        .await;

        c.net.isolate(old, &[1, 2, 3]);
        // Still leader for a moment: this is accepted but can never commit.
        let lost = b"lost".to_vec();
        let _ = c.h(old).propose(lost.clone()).await;
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != old).collect();
        let started = tokio::time::Instant::now();
        let new = c.leader(&others).await;
        assert_ne!(new, old);
        // Election timeout is 100–200 ms here; allow a few.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        wait_until(Duration::from_secs(3), || {
            c.status(old).role != StateRole::Leader
        })
        .await;
        assert!(matches!(
            c.h(old).propose(b"refused".to_vec()).await,
            Err(ProposeError::NotLeader { .. })
        ));

        c.h(new).propose(cmd(1)).await.unwrap();
        c.net.heal();
        wait_until(Duration::from_secs(10), || {
            [1, 2, 3].iter().all(|&i| c.datas(i).len() == 2)
        })
        .await;
        c.h(c.leader(&[1, 2, 3]).await)
            .propose(cmd(2))
            .await
            .unwrap();
        wait_until(Duration::from_secs(10), || {
            [1, 2, 3].iter().all(|&i| c.datas(i).len() == 3)
        })
        .await;
        for id in [1, 2, 3] {
            assert_eq!(c.datas(id), vec![cmd(0), cmd(1), cmd(2)], "node {id}");
        }
        c.stop(old).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_restarted_node_redelivers_after_its_snapshot_and_catches_up() {
        let mut c = Cluster::new(&[1, 2, 3]).await;
        let leader = c.leader(&[1, 2, 3]).await;
        let follower = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
        for i in 0..10 {
            c.h(leader).propose(cmd(i)).await.unwrap();
        }
        wait_until(Duration::from_secs(5), || c.datas(follower).len() == 10).await;
        // The follower snapshots its state machine at the 5th entry.
        let at = c
            .log(follower)
            .iter()
            .filter_map(|a| match a {
                Applied::Entry { index, .. } => Some(*index),
                _ => None,
            })
            .nth(4)
            .unwrap();
        c.h(follower).compact(at, b"five".to_vec()).await.unwrap();
        c.stop(follower).await;

        for i in 10..15 {
            c.h(leader).propose(cmd(i)).await.unwrap();
        }
        let storage = c.storage(follower);
        assert_eq!(storage.snapshot_data().unwrap(), (at, b"five".to_vec()));
        drop(storage);
        c.start(follower);
        wait_until(Duration::from_secs(10), || c.datas(follower).len() == 10).await;
        assert_eq!(c.datas(follower), (5..15).map(cmd).collect::<Vec<_>>());
        // Nothing at or before the snapshot is re-delivered.
        assert!(c.log(follower).iter().all(|a| match a {
            Applied::Entry { index, .. } => *index > at,
            _ => true,
        }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_lagging_follower_catches_up_by_snapshot() {
        let c = Cluster::new(&[1, 2, 3]).await;
        let leader = c.leader(&[1, 2, 3]).await;
        let lagging = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
        c.h(leader).propose(cmd(0)).await.unwrap();
        wait_until(Duration::from_secs(5), || c.datas(lagging).len() == 1).await;

        c.net.isolate(lagging, &[1, 2, 3]);
        for i in 1..30 {
            c.h(leader).propose(cmd(i)).await.unwrap();
        }
        wait_until(Duration::from_secs(5), || c.datas(leader).len() == 30).await;
        let applied = c.status(leader).applied;
        c.h(leader)
            .compact(applied, b"leader-state".to_vec())
            .await
            .unwrap();
        c.h(leader).propose(cmd(30)).await.unwrap();

        c.net.heal();
        wait_until(Duration::from_secs(10), || c.datas(lagging).len() == 2).await;
        let log = c.log(lagging);
        let snap_pos = log
            .iter()
            .position(|a| {
                *a == Applied::Snapshot {
                    index: applied,
                    data: b"leader-state".to_vec(),
                }
            })
            .expect("the lagging follower received the leader's snapshot");
        assert_eq!(entry_datas(&log[snap_pos..]), vec![cmd(30)]);
        assert_eq!(entry_datas(&log[..snap_pos]), vec![cmd(0)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn members_are_added_and_removed_while_committing() {
        let mut c = Cluster::new(&[1, 2, 3]).await;
        let leader = c.leader(&[1, 2, 3]).await;
        c.h(leader).propose(cmd(0)).await.unwrap();

        // Node 4 starts empty and waits to be added.
        assert!(!c.storage(4).is_initialized());
        c.start(4);
        let mut add = ConfChangeV2::default();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(ConfChangeType::AddNode);
        single.node_id = 4;
        add.set_changes(vec![single].into());
        c.h(leader)
            .propose_conf_change(add, b"addr-4".to_vec())
            .await
            .unwrap();
        wait_until(Duration::from_secs(10), || {
            [1, 2, 3, 4]
                .iter()
                .all(|&i| c.status(i).voters == vec![1, 2, 3, 4])
        })
        .await;
        // The leader asked its state machine for a snapshot that includes
        // node 4, and node 4 started from it; the others saw the change
        // with its context.
        assert!(
            c.log(leader)
                .iter()
                .any(|a| matches!(a, Applied::SnapshotWanted { .. }))
        );
        let Some(Applied::Snapshot { index, data }) = c.log(4).first().cloned() else {
            panic!("node 4 did not start from a snapshot: {:?}", c.log(4));
        };
        assert_eq!(data, format!("state@{index}").into_bytes());
        assert!(c.log(leader).iter().any(|a| matches!(a,
            Applied::ConfChanged { voters, context, .. }
                if *voters == vec![1, 2, 3, 4] && context == b"addr-4")));

        c.h(leader).propose(cmd(1)).await.unwrap();
        wait_until(Duration::from_secs(10), || c.datas(4) == vec![cmd(1)]).await;

        // Remove a follower other than 4.
        let gone = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
        let mut remove = ConfChangeV2::default();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(ConfChangeType::RemoveNode);
        single.node_id = gone;
        remove.set_changes(vec![single].into());
        c.h(leader)
            .propose_conf_change(remove, Vec::new())
            .await
            .unwrap();
        let rest: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != gone).collect();
        wait_until(Duration::from_secs(10), || {
            rest.iter()
                .all(|&i| !c.status(i).voters.contains(&gone) && c.status(i).voters.len() == 3)
        })
        .await;
        c.stop(gone).await;
        for i in 2..12 {
            c.h(leader).propose(cmd(i)).await.unwrap();
        }
        // Node 4 started from a snapshot taken after cmd(0).
        let want = |i: u64| -> Vec<Vec<u8>> { (if i == 4 { 1 } else { 0 }..12).map(cmd).collect() };
        wait_until(Duration::from_secs(10), || {
            rest.iter().all(|&i| c.datas(i) == want(i))
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn read_index_answers_on_the_leader() {
        let c = Cluster::new(&[1, 2, 3]).await;
        let leader = c.leader(&[1, 2, 3]).await;
        c.h(leader).propose(cmd(0)).await.unwrap();
        wait_until(Duration::from_secs(5), || c.datas(leader).len() == 1).await;
        c.h(leader).read_index(b"read-1".to_vec()).await.unwrap();
        wait_until(Duration::from_secs(5), || {
            c.log(leader)
                .iter()
                .any(|a| matches!(a, Applied::ReadReady { ctx, .. } if ctx == b"read-1"))
        })
        .await;
        let log = c.log(leader);
        let pos = log
            .iter()
            .position(|a| matches!(a, Applied::ReadReady { .. }))
            .unwrap();
        let Applied::ReadReady { index, .. } = &log[pos] else {
            unreachable!()
        };
        // Everything up to the read's index was delivered before it.
        assert!(log[..pos].iter().any(|a| matches!(a,
            Applied::Entry { index: i, .. } if i <= index)));
        assert!(log[..pos].iter().all(|a| match a {
            Applied::Entry { index: i, .. } => i <= index,
            _ => true,
        }));
    }
}
