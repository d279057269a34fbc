use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::error::LoadError;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/state/golden/format-1.kv");

/// A fixed state touching every record field: a finished app with history
/// and older versions, a canary update running, an app being removed.
fn fixed() -> Services {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let mut canary = web("nginx:2");
    canary["labels"] = json!({"team": "shop"});
    canary["healthChecks"] = json!([{"protocol": "HTTP", "path": "/health", "portIndex": 0}]);
    canary["deployment"] = json!({"strategy": "canary",
        "canary": {"steps": [{"weight": 10}, {"pause": null}, {"weight": 100}]}});
    h.ok(h.put(canary));
    h.add(json!({"id": "/db", "cmd": "postgres", "instances": 1, "mem": 512}));
    h.end("/db", State::Failed("deadline".into()));
    h.add(json!({"id": "/old", "cmd": "sleep 100"}));
    h.end("/old", State::Succeeded);
    h.ok(Op::Remove { id: app_id("/old") });
    h.s
}

type Entries = Vec<(String, Vec<u8>)>;

fn render(entries: &BTreeMap<String, Vec<u8>>) -> String {
    let mut out = String::new();
    for (k, v) in entries {
        out.push_str(k);
        out.push('\t');
        out.push_str(std::str::from_utf8(v).unwrap());
        out.push('\n');
    }
    out
}

fn parse(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.as_bytes().to_vec())
        })
        .collect()
}

#[test]
fn golden_bytes_of_format_1() {
    let text = render(&fixed().entries());
    if std::env::var_os("BERTH_BLESS").is_some() {
        std::fs::write(GOLDEN, &text).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    assert_eq!(
        text, golden,
        "the stored format changed: bump FORMAT, keep reading format 1, and add a new golden file"
    );
}

#[test]
fn golden_file_loads_into_the_fixed_state() {
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    let loaded = Services::load(parse(&golden)).unwrap();
    assert_eq!(loaded, fixed());
    let keys: Vec<String> = loaded.entries().into_keys().collect();
    assert!(keys.contains(&"apps/shop/web".to_string()), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("versions/shop/web/2023-11-14T22:13:"))
    );
    assert!(keys.iter().any(|k| k.starts_with("deployments/")));
}

#[test]
fn load_fails_closed() {
    let good = parse(&render(&fixed().entries()));
    let with = |f: &dyn Fn(&mut Entries)| {
        let mut e = good.clone();
        f(&mut e);
        Services::load(e).unwrap_err()
    };
    let e = with(&|e| e.push(("lease".into(), b"{}".to_vec())));
    assert!(matches!(e, LoadError::UnknownKey(_)), "{e}");
    let e = with(&|e| {
        let (_, v) = e.iter_mut().find(|(k, _)| k.starts_with("apps/")).unwrap();
        *v = String::from_utf8(v.clone())
            .unwrap()
            .replace("\"format\":1", "\"format\":2")
            .into_bytes();
    });
    assert!(
        matches!(e, LoadError::UnsupportedFormat { format: 2, .. }),
        "{e}"
    );
    let e = with(&|e| e[0].1 = b"{\"format\":1,\"nope\":true}".to_vec());
    assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");
    let e = with(&|e| e[0].1 = b"not json".to_vec());
    assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");
    let e = with(&|e| e.retain(|(k, _)| !k.starts_with("apps/db")));
    assert!(matches!(e, LoadError::Inconsistent(_)), "{e}");
    let e = with(&|e| e.retain(|(k, _)| !k.starts_with("versions/db/")));
    assert!(matches!(e, LoadError::Inconsistent(_)), "{e}");
    let e = with(&|e| e.retain(|(k, _)| !k.starts_with("deployments/")));
    assert!(matches!(e, LoadError::Inconsistent(_)), "{e}");
    let e = with(&|e| {
        let i = e.iter().position(|(k, _)| k == "apps/db").unwrap();
        e[i].0 = "apps/dd".into();
    });
    assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");
    // A definition that no longer validates.
    let e = with(&|e| {
        let (_, v) = e
            .iter_mut()
            .find(|(k, _)| k.starts_with("versions/db/"))
            .unwrap();
        *v = String::from_utf8(v.clone())
            .unwrap()
            .replace("\"mem\":512", "\"mem\":-1")
            .into_bytes();
    });
    assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");
}

#[test]
fn writes_of_an_operation_are_only_what_changed() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    let dep = h.running("/shop/web").id.clone();
    let run = h.running("/shop/web").clone();
    let mut plan = run.plan.clone();
    plan.state = State::Succeeded;
    let (r, now, id) = h.req(
        Op::Step {
            id: dep.clone(),
            plan,
        },
        false,
    );
    let applied = h.s.apply(&r, now, id).unwrap();
    let keys: Vec<(String, bool)> = applied
        .writes()
        .into_iter()
        .map(|(k, v)| (k, v.is_some()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("apps/shop/web".to_string(), true),
            (format!("deployments/{dep}"), false),
        ]
    );
    h.s.commit(applied).unwrap();
    let (r, now, id) = h.req(
        Op::Remove {
            id: app_id("/shop/web"),
        },
        false,
    );
    let applied = h.s.apply(&r, now, id.clone()).unwrap();
    let keys: Vec<String> = applied.writes().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec!["apps/shop/web".to_string(), format!("deployments/{id}")]
    );
}

/// One random operation over a few apps.
#[derive(Clone, Debug)]
enum Gen {
    Add(usize, u8, u32),
    Put(usize, u8, u32),
    Patch(usize, u32),
    Restart(usize),
    Rollback(usize, usize),
    Remove(usize),
    Promote(usize),
    Cancel(usize),
    End(usize, u8),
}

const IDS: [&str; 3] = ["/a", "/g/b", "/g/c"];

fn gen_op() -> impl Strategy<Value = (Gen, bool)> {
    let app = 0..IDS.len();
    (
        prop_oneof![
            (app.clone(), 0..3u8, 0..4u32).prop_map(|(a, i, n)| Gen::Add(a, i, n)),
            (app.clone(), 0..3u8, 0..4u32).prop_map(|(a, i, n)| Gen::Put(a, i, n)),
            (app.clone(), 0..4u32).prop_map(|(a, n)| Gen::Patch(a, n)),
            app.clone().prop_map(Gen::Restart),
            (app.clone(), 0..4usize).prop_map(|(a, v)| Gen::Rollback(a, v)),
            app.clone().prop_map(Gen::Remove),
            app.clone().prop_map(Gen::Promote),
            app.clone().prop_map(Gen::Cancel),
            (app, 0..4u8).prop_map(|(a, s)| Gen::End(a, s)),
        ],
        any::<bool>(),
    )
}

fn definition(app: usize, image: u8, n: u32) -> AppDefinition {
    let mut v = json!({"id": IDS[app], "instances": n,
        "container": {"type": "DOCKER", "docker": {"image": format!("img:{image}")}}});
    if image == 2 {
        v["deployment"] = json!({"strategy": "canary", "canary": {"steps": [{"weight": 50}, {"pause": null}, {"weight": 100}]}});
    }
    if app == 2 {
        v["dependencies"] = json!(["/a"]);
    }
    def(v)
}

fn to_op(s: &Services, g: &Gen) -> Option<Op> {
    let id = |a: usize| app_id(IDS[a]);
    let running = |a: usize| s.get(&id(a)).and_then(|st| st.deployment.clone());
    Some(match g {
        Gen::Add(a, i, n) => Op::Add(definition(*a, *i, *n)),
        Gen::Put(a, i, n) => Op::Update {
            definition: definition(*a, *i, *n),
            create: *i == 0,
        },
        Gen::Patch(a, n) => Op::Patch {
            id: id(*a),
            patch: json!({"instances": n, "labels": {"n": n.to_string()}}),
            create: false,
        },
        Gen::Restart(a) => Op::Restart { id: id(*a) },
        Gen::Rollback(a, v) => {
            let st = s.get(&id(*a))?;
            let versions = st.versions();
            Op::Rollback {
                id: id(*a),
                version: versions.get(*v % versions.len())?.version,
            }
        }
        Gen::Remove(a) => Op::Remove { id: id(*a) },
        Gen::Promote(a) => Op::Promote { id: id(*a) },
        Gen::Cancel(a) => Op::CancelDeployment {
            id: running(*a)?.id,
        },
        Gen::End(a, k) => {
            let run = running(*a)?;
            let mut plan = run.plan.clone();
            plan.state = match k {
                0 => State::Succeeded,
                1 => State::Failed("f".into()),
                2 => State::RolledBack("r".into()),
                _ => State::Paused,
            };
            Op::Step { id: run.id, plan }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the operations, the stored keys after their writes load
    /// into the state held in memory.
    #[test]
    fn loading_the_writes_of_any_operations_gives_the_state(ops in proptest::collection::vec(gen_op(), 1..40)) {
        let mut s = Services::new();
        let mut kv: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut now = T0;
        for (n, (g, force)) in ops.iter().enumerate() {
            now = now.plus(std::time::Duration::from_millis(500));
            let Some(op) = to_op(&s, g) else { continue };
            let req = Request { op, force: *force };
            let Ok(applied) = s.apply(&req, now, DeploymentId::from_u128(n as u128)) else { continue };
            for (k, v) in applied.writes() {
                match v {
                    Some(v) => { kv.insert(k, v); }
                    None => { prop_assert!(kv.remove(&k).is_some(), "deleted {} which was not stored", k); }
                }
            }
            s.commit(applied).unwrap();
            prop_assert_eq!(&kv, &s.entries());
            let loaded = Services::load(kv.clone()).unwrap();
            prop_assert_eq!(&loaded, &s);
        }
    }
}
