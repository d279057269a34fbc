use super::*;

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

fn txn(ns: &str, compares: Vec<Compare>, ops: Vec<Op>) -> Txn {
    Txn {
        namespace: ns.into(),
        compares,
        ops,
    }
}

fn version(key: &str, version: u64) -> Compare {
    Compare::Version {
        key: key.into(),
        version,
    }
}

#[test]
fn puts_count_versions_and_revisions() {
    let mut kv = KvStore::default();
    kv.apply_txn(&txn("svc", vec![], vec![put("apps/a", "1")]))
        .unwrap();
    kv.apply_txn(&txn("svc", vec![], vec![put("apps/b", "x")]))
        .unwrap();
    let changes = kv
        .apply_txn(&txn(
            "svc",
            vec![version("apps/a", 1)],
            vec![put("apps/a", "22")],
        ))
        .unwrap();
    let a = kv.get("svc", "apps/a").unwrap();
    assert_eq!(a.value, b"22");
    assert_eq!((a.version, a.create_revision, a.mod_revision), (2, 1, 3));
    assert_eq!(kv.revision(), 3);
    assert_eq!(
        changes,
        vec![KvChange::Put {
            namespace: "svc".into(),
            key: "apps/a".into(),
            entry: a.clone()
        }]
    );
    assert_eq!(kv.bytes(), ("apps/a".len() + 2 + "apps/b".len() + 1) as u64);
    kv.verify().unwrap();
}

#[test]
fn a_failed_compare_changes_nothing() {
    let mut kv = KvStore::default();
    kv.apply_txn(&txn("svc", vec![], vec![put("k", "1")]))
        .unwrap();
    let before = kv.clone();
    // Create-if-absent on a key that exists.
    let err = kv
        .apply_txn(&txn(
            "svc",
            vec![version("k", 0)],
            vec![put("k", "2"), put("other", "3")],
        ))
        .unwrap_err();
    assert!(matches!(err, ApplyError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("is at version 1, not 0"), "{err}");
    assert_eq!(kv, before);
    // A stale version.
    let err = kv
        .apply_txn(&txn("svc", vec![version("k", 7)], vec![put("k", "2")]))
        .unwrap_err();
    assert!(err.to_string().contains("not 7"), "{err}");
    assert_eq!(kv, before);
}

#[test]
fn deletes_and_prefix_deletes() {
    let mut kv = KvStore::default();
    kv.apply_txn(&txn(
        "svc",
        vec![],
        vec![
            put("apps/a", "1"),
            put("apps/b", "2"),
            put("appsx", "3"),
            put("z", "4"),
        ],
    ))
    .unwrap();
    let changes = kv
        .apply_txn(&txn(
            "svc",
            vec![],
            vec![Op::DeletePrefix {
                prefix: "apps/".into(),
            }],
        ))
        .unwrap();
    assert_eq!(changes.len(), 2);
    let keys: Vec<&String> = kv.range("svc", "").map(|(k, _)| k).collect();
    assert_eq!(keys, ["appsx", "z"]);
    kv.apply_txn(&txn("svc", vec![], vec![Op::Delete { key: "z".into() }]))
        .unwrap();
    // Deleting an absent key is no change, but still a revision.
    let changes = kv
        .apply_txn(&txn("svc", vec![], vec![Op::Delete { key: "z".into() }]))
        .unwrap();
    assert!(changes.is_empty());
    kv.apply_txn(&txn(
        "svc",
        vec![],
        vec![Op::Delete {
            key: "appsx".into(),
        }],
    ))
    .unwrap();
    assert!(kv.space("svc").is_none(), "an empty namespace is dropped");
    assert_eq!(kv.bytes(), 0);
    kv.verify().unwrap();
}

#[test]
fn a_key_recreated_after_deletion_starts_at_version_one() {
    let mut kv = KvStore::default();
    kv.apply_txn(&txn("a", vec![], vec![put("k", "1"), put("k", "2")]))
        .unwrap();
    assert_eq!(kv.get("a", "k").unwrap().version, 2);
    kv.apply_txn(&txn(
        "a",
        vec![],
        vec![Op::Delete { key: "k".into() }, put("k", "3")],
    ))
    .unwrap();
    let k = kv.get("a", "k").unwrap();
    assert_eq!((k.version, k.create_revision), (1, 2));
}

#[test]
fn prefix_delete_then_put_in_one_txn_counts_bytes() {
    let mut kv = KvStore::default();
    kv.apply_txn(&txn(
        "a",
        vec![],
        vec![put("p/1", "xxxx"), put("p/2", "yy")],
    ))
    .unwrap();
    kv.apply_txn(&txn(
        "a",
        vec![],
        vec![
            put("p/3", "z"),
            Op::DeletePrefix {
                prefix: "p/".into(),
            },
            put("p/1", "abc"),
        ],
    ))
    .unwrap();
    let keys: Vec<&String> = kv.range("a", "p/").map(|(k, _)| k).collect();
    assert_eq!(keys, ["p/1"]);
    assert_eq!(kv.bytes(), 6);
    kv.verify().unwrap();
}

#[test]
fn bad_names_and_sizes_are_refused_with_the_value_cut_short() {
    let kv = KvStore::default();
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    for (t, want) in [
        (
            txn("", vec![], vec![put("k", "v")]),
            "namespace \"\" must be 1 to",
        ),
        (txn("Svc", vec![], vec![put("k", "v")]), "must be lowercase"),
        (
            txn("-svc", vec![], vec![put("k", "v")]),
            "starting with a letter",
        ),
        (txn("svc", vec![], vec![]), "at least one operation"),
        (
            txn("svc", vec![], vec![put("", "v")]),
            "key must not be empty",
        ),
        (
            txn("svc", vec![], vec![put("a\nb", "v")]),
            "control character",
        ),
        (
            txn("svc", vec![], vec![put(&long, "v")]),
            "longer than 512 bytes",
        ),
        (
            txn(
                "svc",
                vec![],
                vec![put("k", &"v".repeat(MAX_VALUE_BYTES + 1))],
            ),
            "at most 1048576 are allowed",
        ),
        (
            txn(
                "svc",
                vec![],
                (0..=MAX_TXN_ITEMS)
                    .map(|i| put(&format!("k{i}"), ""))
                    .collect(),
            ),
            "at most 128 compares",
        ),
    ] {
        let err = kv.check_txn(&t).unwrap_err();
        assert!(matches!(err, ApplyError::Invalid(_)));
        let msg = err.to_string();
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
        assert!(msg.len() < 300, "an echo not cut short: {msg:?}");
    }
}

#[test]
fn a_namespace_cannot_grow_past_its_bound_but_may_shrink() {
    let mut kv = KvStore::default();
    let mb = "v".repeat(MAX_VALUE_BYTES);
    let per_txn = MAX_TXN_BYTES / (MAX_VALUE_BYTES + 16);
    let mut n = 0;
    let err = loop {
        let ops = (0..per_txn)
            .map(|i| put(&format!("k{n:04}-{i}"), &mb))
            .collect();
        match kv.apply_txn(&txn("big", vec![], ops)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 100, "never refused");
    };
    assert!(err.to_string().contains("would hold"), "{err}");
    assert!(kv.space("big").unwrap().bytes <= MAX_NAMESPACE_BYTES);
    // Overwriting a value with a smaller one, or deleting, still works.
    let first = kv.range("big", "").next().unwrap().0.clone();
    kv.apply_txn(&txn("big", vec![], vec![put(&first, "small")]))
        .unwrap();
    kv.verify().unwrap();
}

#[test]
fn leases_grant_fence_and_revoke() {
    let mut kv = KvStore::default();
    kv.grant("svc", "active", "a", 10_000, 0).unwrap();
    let l = kv.lease("svc", "active").unwrap();
    assert_eq!((l.holder.as_deref(), l.epoch), (Some("a"), 1));
    // A second grant with the old expected epoch loses: someone got it.
    let err = kv.grant("svc", "active", "b", 10_000, 0).unwrap_err();
    assert!(matches!(err, ApplyError::Conflict(_)));
    // Writes fenced by the lease.
    let fenced = |holder: &str, epoch| Compare::LeaseHeld {
        name: "active".into(),
        holder: holder.into(),
        epoch,
    };
    kv.apply_txn(&txn("svc", vec![fenced("a", 1)], vec![put("k", "1")]))
        .unwrap();
    // The leader saw the lease expire; b takes it over.
    kv.grant("svc", "active", "b", 10_000, 1).unwrap();
    let err = kv
        .apply_txn(&txn("svc", vec![fenced("a", 1)], vec![put("k", "stale")]))
        .unwrap_err();
    assert!(
        err.to_string().contains("held by \"b\" at epoch 2"),
        "{err}"
    );
    assert_eq!(kv.get("svc", "k").unwrap().value, b"1");
    // Revocation frees it and keeps the epoch, so the next grant is 3.
    assert!(kv.revoke("svc", "active", 1).is_err(), "a stale epoch");
    let changes = kv.revoke("svc", "active", 2).unwrap();
    assert!(matches!(&changes[0], KvChange::Lease { lease, .. } if lease.holder.is_none()));
    assert_eq!(kv.held_leases().count(), 0);
    let err = kv
        .apply_txn(&txn("svc", vec![fenced("b", 2)], vec![put("k", "x")]))
        .unwrap_err();
    assert!(err.to_string().contains("is free"), "{err}");
    kv.grant("svc", "active", "a", 10_000, 2).unwrap();
    assert_eq!(kv.lease("svc", "active").unwrap().epoch, 3);
}

#[test]
fn lease_arguments_are_checked() {
    let kv = KvStore::default();
    assert!(kv.check_grant("svc", "l", "", 10_000, 0).is_err());
    assert!(kv.check_grant("svc", "l", "a", 999, 0).is_err());
    assert!(kv.check_grant("svc", "l", "a", 300_001, 0).is_err());
    assert!(kv.check_grant("svc", "", "a", 10_000, 0).is_err());
    assert!(kv.check_grant("svc", "l", "a", 1_000, 0).is_ok());
}

#[test]
fn verify_finds_a_wrong_count() {
    let mut kv = KvStore::default();
    kv.apply_txn(&txn("a", vec![], vec![put("k", "v")]))
        .unwrap();
    kv.bytes += 1;
    assert!(kv.verify().is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Map;

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u8, Option<u64>),
        Delete(u8),
        Prefix(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..8, 0u8..40, proptest::option::of(0u64..4))
                .prop_map(|(k, n, c)| Step::Put(k, n, c)),
            (0u8..8).prop_map(Step::Delete),
            (0u8..3).prop_map(Step::Prefix),
        ]
    }

    proptest! {
        /// The store against a plain map: same contents after any
        /// sequence of (conditional) writes, refused ones change nothing,
        /// and the byte counts stay true.
        #[test]
        fn the_store_matches_a_map(steps in proptest::collection::vec(step(), 1..60)) {
            let mut kv = KvStore::default();
            let mut model: Map<String, (Vec<u8>, u64)> = Map::new();
            for s in steps {
                let key = |k: u8| format!("{}/{k}", k % 3);
                match s {
                    Step::Put(k, n, cond) => {
                        let key = key(k);
                        let value = vec![b'x'; n as usize];
                        let compares = cond.map(|v| version(&key, v)).into_iter().collect();
                        let t = Txn { namespace: "p".into(), compares, ops: vec![Op::Put { key: key.clone(), value: value.clone() }] };
                        let current = model.get(&key).map_or(0, |e| e.1);
                        let ok = cond.is_none_or(|v| v == current);
                        prop_assert_eq!(kv.apply_txn(&t).is_ok(), ok);
                        if ok {
                            model.insert(key, (value, current + 1));
                        }
                    }
                    Step::Delete(k) => {
                        let key = key(k);
                        kv.apply_txn(&txn("p", vec![], vec![Op::Delete { key: key.clone() }])).unwrap();
                        model.remove(&key);
                    }
                    Step::Prefix(p) => {
                        let prefix = format!("{p}/");
                        kv.apply_txn(&txn("p", vec![], vec![Op::DeletePrefix { prefix: prefix.clone() }])).unwrap();
                        model.retain(|k, _| !k.starts_with(&prefix));
                    }
                }
                kv.verify().map_err(TestCaseError::fail)?;
            }
            let got: Map<String, (Vec<u8>, u64)> = kv
                .range("p", "")
                .map(|(k, e)| (k.clone(), (e.value.clone(), e.version)))
                .collect();
            prop_assert_eq!(got, model);
        }
    }
}
