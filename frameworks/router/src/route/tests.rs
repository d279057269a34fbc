use std::net::SocketAddr;

use super::*;
use crate::table::BackendKey;

fn backend(instance: &str, version: &str) -> Arc<BackendState> {
    let key = BackendKey {
        app: "/web".into(),
        instance: instance.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    Arc::new(BackendState::new(key, version.into(), Arc::default(), 4))
}

fn route(backends: Vec<Arc<BackendState>>) -> Arc<Route> {
    let mut versions: Vec<(String, u32, Vec<usize>)> = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        match versions.iter_mut().find(|v| v.0 == b.version) {
            Some(v) => v.2.push(i),
            None => versions.push((b.version.clone(), 1, vec![i])),
        }
    }
    Arc::new(Route::new(
        None,
        backends,
        Picker::new(versions, 0),
        Arc::default(),
    ))
}

fn ctx(slot: Arc<Slot>, max_retries: u32) -> ListenerCtx {
    ListenerCtx {
        slot,
        serve: Serve::Weighted,
        config: Arc::new(RouterConfig {
            max_retries,
            ..RouterConfig::default()
        }),
    }
}

#[test]
fn tries_are_bounded_and_never_repeat_a_backend() {
    let r = route(vec![
        backend("a", "v1"),
        backend("b", "v1"),
        backend("c", "v1"),
    ]);
    let slot = Arc::new(Slot::default());
    slot.set(Some(r.clone()));
    let ctx = ctx(slot, 1);
    let mut tries = Tries::new(r.clone(), &ctx);
    let (first, _g1) = tries.next_backend().unwrap();
    let (second, _g2) = tries.next_backend().unwrap();
    assert_ne!(first.key, second.key);
    assert!(
        tries.next_backend().is_none(),
        "max_retries 1 allows two tries"
    );
    assert_eq!(tries.count(), 2);
    assert_eq!(r.counters.retries.load(Ordering::Relaxed), 1);
}

#[test]
fn a_stale_route_with_no_backend_left_gives_way_to_the_current_one() {
    let old_backend = backend("old", "v1");
    let stale = route(vec![old_backend.clone()]);
    let current = route(vec![backend("new", "v2")]);
    let slot = Arc::new(Slot::default());
    slot.set(Some(current));
    old_backend.unroute();
    let ctx = ctx(slot, 0);
    let mut tries = Tries::new(stale, &ctx);
    let (chosen, _guard) = tries.next_backend().unwrap();
    assert_eq!(chosen.key.instance, "new");
    assert_eq!(old_backend.in_flight(), 0);
}

#[test]
fn a_preview_route_without_a_preview_version_has_no_backend() {
    let r = route(vec![backend("a", "v1")]);
    assert!(r.choose(Serve::Preview, None, &mut Vec::new()).is_none());
}
