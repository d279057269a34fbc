use std::net::{IpAddr, Ipv4Addr};

use super::*;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn backend(instance: &str, version: &str, port: u16) -> Backend {
    Backend {
        instance: instance.into(),
        version: version.into(),
        addr: SocketAddr::new(LOCAL, port),
    }
}

fn service(app: &str, port: u16) -> Service {
    Service {
        app: app.into(),
        port,
        bind: None,
        protocol: Protocol::Http,
        preview: None,
        backends: vec![backend("a", "v1", 9001), backend("b", "v2", 9002)],
        weights: BTreeMap::new(),
    }
}

fn table(services: Vec<Service>) -> RouteTable {
    RouteTable { services }
}

#[test]
fn a_good_table_passes() {
    let t = table(vec![
        service("/a", 8080),
        service("/b", 0),
        service("/c", 0),
    ]);
    assert_eq!(t.validate(LOCAL), Ok(()));
}

#[test]
fn bad_tables_are_refused() {
    let t = table(vec![service("/a", 8080), service("/a", 8081)]);
    assert_eq!(
        t.validate(LOCAL),
        Err(TableError::DuplicateApp("/a".into()))
    );
    let t = table(vec![service("", 1)]);
    assert_eq!(t.validate(LOCAL), Err(TableError::EmptyAppId));
    let t = table(vec![service("/a", 8080), service("/b", 8080)]);
    assert!(matches!(
        t.validate(LOCAL),
        Err(TableError::DuplicateAddress { .. })
    ));
    let mut s = service("/a", 8080);
    s.backends.push(backend("a", "v3", 9003));
    assert!(matches!(
        table(vec![s]).validate(LOCAL),
        Err(TableError::DuplicateInstance { .. })
    ));
    let mut s = service("/a", 8080);
    s.backends.push(backend("", "v3", 9003));
    assert!(matches!(
        table(vec![s]).validate(LOCAL),
        Err(TableError::EmptyBackendField(_))
    ));
    let mut s = service("/a", 8080);
    s.weights.insert("v1".into(), MAX_WEIGHT + 1);
    assert!(matches!(
        table(vec![s]).validate(LOCAL),
        Err(TableError::WeightTooLarge { .. })
    ));
    let mut s = service("/a", 8080);
    s.preview = Some(Preview {
        port: 8080,
        version: "v2".into(),
    });
    assert_eq!(
        table(vec![s]).validate(LOCAL),
        Err(TableError::PreviewOnServicePort("/a".into()))
    );
}

#[test]
fn a_long_app_id_is_capped_in_the_message() {
    let long = "x".repeat(500);
    let t = table(vec![service(&long, 1), service(&long, 2)]);
    let message = t.validate(LOCAL).unwrap_err().to_string();
    assert!(message.len() < 120, "{message}");
}

#[test]
fn effective_weights_follow_the_rules() {
    let mut s = service("/a", 0);
    let w = s.effective_weights();
    assert_eq!(w["v1"], 1);
    assert_eq!(w["v2"], 1);
    s.weights.insert("v1".into(), 95);
    s.weights.insert("v9".into(), 5);
    let w = s.effective_weights();
    assert_eq!(w["v1"], 95);
    assert_eq!(w["v2"], 0);
    assert!(!w.contains_key("v9"));
}

#[test]
fn diff_of_the_same_table_is_empty() {
    let t = table(vec![service("/a", 0)]);
    let d = diff(&t.listener_keys(LOCAL), &t.backend_keys(), &t, LOCAL);
    assert_eq!(d, TableDiff::default());
}

#[test]
fn diff_finds_listeners_and_backends_that_change() {
    let old = table(vec![service("/a", 8080), service("/b", 0)]);
    let mut a = service("/a", 8080);
    a.backends.remove(0);
    a.backends.push(backend("c", "v2", 9003));
    a.preview = Some(Preview {
        port: 0,
        version: "v2".into(),
    });
    let new = table(vec![a]);
    let d = diff(&old.listener_keys(LOCAL), &old.backend_keys(), &new, LOCAL);
    assert_eq!(d.close.len(), 1);
    assert_eq!(d.close[0].app, "/b");
    assert_eq!(d.open.len(), 1);
    assert_eq!(d.open[0].role, Role::Preview);
    let removed: Vec<_> = d
        .removed
        .iter()
        .map(|k| (k.app.as_str(), k.instance.as_str()))
        .collect();
    assert_eq!(removed, vec![("/a", "a"), ("/b", "a"), ("/b", "b")]);
    assert_eq!(d.added.len(), 1);
    assert_eq!(d.added[0].instance, "c");
}
