use super::*;
use crate::run::instances::Instances;

const T0: u64 = 1_700_000_000_000;

fn slot() -> Slot {
    Slot {
        app: "/shop/web".into(),
        version: Timestamp::from_millis(T0),
        attempt: 3,
        created_at: Timestamp::from_millis(T0 + 1),
        run: Some(Run {
            task_id: "shop_web.i7.3".into(),
            agent_id: "agent-1".into(),
            ports: vec![31000, 31001],
            state: None,
            healthy_since: None,
            unreachable_since: None,
            ready: false,
        }),
        failures: 2,
        not_before: Timestamp::from_millis(T0 + 5000),
        killing: Some(Killing::Draining(Timestamp::from_millis(T0 + 9000))),
    }
}

/// The bytes format 1 writes for [`slot`]: a change of them is a change
/// of the stored format, which needs a new format number.
const GOLDEN_1: &str = include_str!("golden-1.json");

#[test]
fn format_1_keeps_its_bytes_and_reads_back() {
    let bytes = encode(&slot());
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        GOLDEN_1.trim_end()
    );
    assert_eq!(decode("instances/i7", GOLDEN_1.as_bytes()).unwrap(), slot());
    let mut live = slot();
    live.killing = None;
    live.run = None;
    assert_eq!(decode("k", &encode(&live)).unwrap(), live);
}

#[test]
fn newer_formats_and_bad_bytes_are_refused() {
    let newer = GOLDEN_1.replace("\"format\":1", "\"format\":2");
    let err = decode("instances/i7", newer.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("format 2"), "{err}");
    assert!(decode("k", b"{").is_err());
    let unknown = GOLDEN_1.replace("\"attempt\"", "\"attempts\"");
    assert!(decode("k", unknown.as_bytes()).is_err());
    let odd = GOLDEN_1.replace("\"draining\"", "\"maybe\"");
    assert!(
        decode("k", odd.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("maybe")
    );
}

#[test]
fn changed_slots_are_listed_once_for_storing() {
    let mut inst = Instances::default();
    let t = Timestamp::from_millis(T0);
    inst.create("/web", t, &["a".into(), "b".into()], t);
    let dirty: Vec<String> = inst.take_dirty().into_iter().map(|(id, _)| id).collect();
    assert_eq!(dirty, ["a", "b"]);
    assert!(inst.take_dirty().is_empty());
    inst.kill("a", false, t);
    let dirty = inst.take_dirty();
    assert_eq!(dirty.len(), 1);
    assert!(dirty[0].1.is_none(), "a never ran: its record goes");
}
