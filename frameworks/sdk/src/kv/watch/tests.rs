//! How a watch starts over after a break, against the scripted fake
//! master.

use std::collections::VecDeque;
use std::time::Duration;

use tonic::Status;

use super::*;
use crate::kv::fake::{Fake, client_of};

fn page(keys: &[&str], revision: u64, last: bool) -> Result<pb::KvWatchEvent, Status> {
    Ok(pb::KvWatchEvent {
        event: Some(pb::kv_watch_event::Event::Page(pb::KvWatchPage {
            entries: keys
                .iter()
                .map(|k| pb::KvEntry {
                    key: (*k).into(),
                    value: k.as_bytes().to_vec(),
                    version: 1,
                    create_revision: 1,
                    mod_revision: 1,
                })
                .collect(),
            revision,
            last,
        })),
    })
}

fn changed(
    revision: u64,
    change: Option<pb::kv_watch_change::Change>,
) -> Result<pb::KvWatchEvent, Status> {
    Ok(pb::KvWatchEvent {
        event: Some(pb::kv_watch_event::Event::Change(pb::KvWatchChange {
            revision,
            change,
        })),
    })
}

async fn next(w: &mut KvWatch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(2), w.next())
        .await
        .unwrap()
        .unwrap()
}

fn keys(event: &WatchEvent) -> Vec<&str> {
    match event {
        WatchEvent::Reset { entries, .. } => entries.iter().map(|e| e.key.as_str()).collect(),
        other => panic!("not a reset: {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_starts_over_with_a_reset_after_it_breaks() {
    use pb::kv_watch_change::Change;
    let fake = Fake::default();
    fake.script().watch = VecDeque::from([
        vec![
            page(&["a"], 5, false),
            page(&["b"], 5, true),
            changed(
                6,
                Some(Change::Put(pb::KvEntry {
                    key: "c".into(),
                    mod_revision: 6,
                    version: 1,
                    ..Default::default()
                })),
            ),
            Err(Status::aborted(
                "the watch fell 3 changes behind; watch again",
            )),
        ],
        vec![
            page(&["a", "b", "c", "d"], 8, true),
            changed(9, Some(Change::Deleted("a".into()))),
            changed(
                10,
                Some(Change::Lease(pb::LeaseChange {
                    name: "active".into(),
                    holder: String::new(),
                    epoch: 2,
                })),
            ),
            // A change of a kind this SDK does not know.
            changed(11, None),
            // A page out of place.
            page(&["x"], 11, true),
        ],
        vec![page(&["b", "c", "d"], 12, true)],
    ]);
    let kv = client_of(&fake).await;
    let mut watch = kv.watch("");
    let first = next(&mut watch).await;
    assert_eq!(keys(&first), ["a", "b"]);
    assert_eq!(first.revision(), 5);
    let put = next(&mut watch).await;
    assert!(
        matches!(&put, WatchEvent::Put(e) if e.key == "c"),
        "{put:?}"
    );
    assert_eq!(put.revision(), 6);
    let reset = next(&mut watch).await;
    assert_eq!(keys(&reset), ["a", "b", "c", "d"]);
    assert_eq!(
        next(&mut watch).await,
        WatchEvent::Deleted {
            key: "a".into(),
            revision: 9
        }
    );
    assert_eq!(
        next(&mut watch).await,
        WatchEvent::Lease {
            name: "active".into(),
            holder: None,
            epoch: 2,
            revision: 10
        }
    );
    // The unknown change is skipped; the page out of place starts over.
    let reset = next(&mut watch).await;
    assert_eq!(keys(&reset), ["b", "c", "d"]);
    assert_eq!(reset.revision(), 12);
    assert_eq!(fake.calls("watch"), 3);

    // A watch the master refuses ends with its error.
    let mut refused = kv.watch("");
    let e = refused.next().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains("namespace"), "{e}");
    assert!(refused.next().await.is_err());
}
