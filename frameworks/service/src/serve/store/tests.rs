use super::*;

fn rec(key: &str) -> Write {
    (key.to_owned(), Some(b"{}".to_vec()))
}

fn slots(app: &str, n: usize) -> Vec<(String, Write)> {
    (0..n)
        .map(|i| (app.to_owned(), rec(&format!("instances/{app}-{i}"))))
        .collect()
}

fn keys(batch: &[Write]) -> Vec<&str> {
    batch.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn a_small_change_is_one_transaction_with_the_operation_last() {
    let out = batches(slots("/a", 3), vec![rec("apps/a"), rec("deployments/d")]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        keys(&out[0]),
        [
            "instances//a-0",
            "instances//a-1",
            "instances//a-2",
            "apps/a",
            "deployments/d"
        ]
    );
    assert!(batches(Vec::new(), Vec::new()).is_empty());
}

#[test]
fn apps_are_never_split_when_they_fit_and_transactions_stay_in_bounds() {
    // 13 apps of 10 slots: 130 records, more than one transaction holds.
    let mut all = Vec::new();
    for a in 0..13 {
        all.extend(slots(&format!("/app{a:02}"), 10));
    }
    let out = batches(all, vec![rec("apps/x")]);
    assert_eq!(out.len(), 2);
    let total: usize = out.iter().map(Vec::len).sum();
    assert_eq!(total, 131);
    for batch in &out {
        assert!(batch.len() <= OPS_PER_TXN);
        // Every app's records are in one transaction.
        for a in 0..13 {
            let prefix = format!("instances//app{a:02}-");
            let here = batch.iter().filter(|(k, _)| k.starts_with(&prefix)).count();
            assert!(here == 0 || here == 10, "app {a} split: {here} of 10 here");
        }
    }
    assert_eq!(out[1].last().map(|(k, _)| k.as_str()), Some("apps/x"));
}

#[test]
fn an_app_too_large_for_one_transaction_is_split_before_its_operation() {
    let out = batches(slots("/big", 300), vec![rec("deployments/d")]);
    assert_eq!(
        out.iter().map(Vec::len).collect::<Vec<_>>(),
        [OPS_PER_TXN, OPS_PER_TXN, 300 - 2 * OPS_PER_TXN + 1]
    );
    // The plan that counts the slots is written after all of them.
    assert_eq!(
        out.last().and_then(|b| b.last()).map(|(k, _)| k.as_str()),
        Some("deployments/d")
    );
}

#[test]
fn bytes_bound_a_transaction_too() {
    let big = |i: usize| {
        (
            format!("/app{i}"),
            (
                format!("instances/{i}"),
                Some(vec![b'x'; BYTES_PER_TXN / 2]),
            ),
        )
    };
    let out = batches(vec![big(1), big(2), big(3)], Vec::new());
    assert_eq!(out.len(), 3);
}
