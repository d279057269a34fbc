//! Removal, promote, cancel and the runtime's step reports.

use super::*;

#[test]
fn remove_hides_the_app_and_drops_it_when_its_deployment_ends() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let o = h.ok(Op::Remove {
        id: app_id("/shop/web"),
    });
    assert_eq!((o.effect, o.current.is_none()), (Effect::Stop, true));
    assert!(h.s.app(&app_id("/shop/web")).is_none());
    assert!(h.s.get(&app_id("/shop/web")).unwrap().removing());
    assert_eq!(
        h.running("/shop/web").plan.view(&[], h.now).strategy,
        "stop"
    );
    // Gone for every operation but a forced add.
    assert_eq!(
        h.err(Op::Remove {
            id: app_id("/shop/web")
        })
        .status(),
        404
    );
    assert_eq!(h.err(Op::Add(def(web("nginx:2")))).status(), 409);
    // Its port is still held while it stops.
    let mut other = web("nginx:1");
    other["id"] = json!("/other");
    assert_eq!(h.err(Op::Add(def(other.clone()))).status(), 422);
    let o = h.end("/shop/web", State::Succeeded);
    assert_eq!(o.effect, Effect::Drop);
    assert!(h.s.get(&app_id("/shop/web")).is_none());
    h.add(other);
}

#[test]
fn adding_an_app_again_while_it_is_removed_needs_force() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    h.ok(Op::Remove {
        id: app_id("/shop/web"),
    });
    let o = h.force(Op::Add(def(web("nginx:2"))));
    assert_eq!(o.effect, Effect::Restart);
    assert!(h.s.app(&app_id("/shop/web")).is_some());
    assert_eq!(
        h.running("/shop/web").plan.view(&[], h.now).strategy,
        "rolling"
    );
}

#[test]
fn removing_an_app_others_depend_on_is_refused() {
    let mut h = H::new();
    h.add(json!({"id": "/db", "cmd": "x"}));
    h.add(json!({"id": "/api", "cmd": "x", "dependencies": ["/db"]}));
    h.end("/db", State::Succeeded);
    let e = h.err(Op::Remove { id: app_id("/db") });
    assert_eq!(
        e,
        OpError::DependedOn {
            app: app_id("/db"),
            by: app_id("/api")
        }
    );
    assert_eq!(e.status(), 409);
}

#[test]
fn promote_lets_a_paused_deployment_go_on() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    let e = h.err(Op::Promote {
        id: app_id("/shop/web"),
    });
    assert!(matches!(e, OpError::NotPaused { .. }), "{e:?}");
    h.end("/shop/web", State::Paused);
    let o = h.ok(Op::Promote {
        id: app_id("/shop/web"),
    });
    assert_eq!(o.effect, Effect::Promote);
    assert!(h.running("/shop/web").plan.promoted);
    h.end("/shop/web", State::Succeeded);
    let e = h.err(Op::Promote {
        id: app_id("/shop/web"),
    });
    assert!(e.to_string().contains("no deployment is running"), "{e}");
}

#[test]
fn cancel_goes_back_to_the_previous_version() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let v1 = h.s.app(&app_id("/shop/web")).unwrap().current.version;
    h.ok(h.put(web("nginx:2")));
    let v2 = h.s.app(&app_id("/shop/web")).unwrap().current.version;
    let dep = h.running("/shop/web").id.clone();
    let o = h.ok(Op::CancelDeployment { id: dep.clone() });
    assert_eq!(o.effect, Effect::Restart);
    assert_eq!(o.ended, Some(dep.clone()));
    let st = h.s.app(&app_id("/shop/web")).unwrap();
    assert_eq!(st.current.version, v1);
    let run = st.deployment.as_ref().unwrap();
    assert_eq!(
        (run.from, run.to, run.cause),
        (Some(v2), Some(v1), Cause::Revert)
    );
    assert_eq!(
        st.history.last().unwrap().result,
        Outcome::Cancelled {
            by: o.deployment.clone()
        }
    );
    let e = h.err(Op::CancelDeployment { id: dep });
    assert_eq!(e.status(), 404);
    assert!(e.to_string().starts_with("DeploymentPlan \""), "{e}");
}

#[test]
fn cancel_with_force_stops_the_plan_and_keeps_the_target() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    h.ok(h.put(web("nginx:2")));
    let v2 = h.s.app(&app_id("/shop/web")).unwrap().current.version;
    let dep = h.running("/shop/web").id.clone();
    let o = h.force(Op::CancelDeployment { id: dep });
    assert_eq!((o.effect, o.deployment), (Effect::Cancel, None));
    let st = h.s.app(&app_id("/shop/web")).unwrap();
    assert_eq!(st.current.version, v2);
    assert!(st.deployment.is_none());
    assert_eq!(
        st.history.last().unwrap().result,
        Outcome::Cancelled { by: None }
    );
}

#[test]
fn cancelling_an_add_removes_and_cancelling_a_removal_restores() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    let dep = h.running("/shop/web").id.clone();
    let o = h.ok(Op::CancelDeployment { id: dep });
    assert_eq!(o.effect, Effect::Stop);
    assert!(h.s.app(&app_id("/shop/web")).is_none());
    h.end("/shop/web", State::Succeeded);
    assert!(h.s.get(&app_id("/shop/web")).is_none());

    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    h.ok(Op::Remove {
        id: app_id("/shop/web"),
    });
    let dep = h.running("/shop/web").id.clone();
    let o = h.ok(Op::CancelDeployment { id: dep });
    assert_eq!(o.effect, Effect::Scale);
    assert!(h.s.app(&app_id("/shop/web")).is_some());
    assert_eq!(
        h.running("/shop/web").plan.view(&[], h.now).strategy,
        "scale"
    );
    // A forced cancel of a removal drops the app at once.
    h.end("/shop/web", State::Succeeded);
    h.ok(Op::Remove {
        id: app_id("/shop/web"),
    });
    let dep = h.running("/shop/web").id.clone();
    assert_eq!(
        h.force(Op::CancelDeployment { id: dep }).effect,
        Effect::Drop
    );
    assert!(h.s.get(&app_id("/shop/web")).is_none());
}

#[test]
fn a_deployment_that_rolled_back_makes_its_from_version_current() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let v1 = h.s.app(&app_id("/shop/web")).unwrap().current.version;
    h.ok(h.put(web("nginx:2")));
    let o = h.end("/shop/web", State::RolledBack("canary errors".into()));
    assert_eq!(o.effect, Effect::Finish);
    let st = h.s.app(&app_id("/shop/web")).unwrap();
    assert_eq!(st.current.version, v1);
    assert_eq!(st.versions().len(), 2);
    assert!(matches!(
        st.history.last().unwrap().result,
        Outcome::RolledBack { .. }
    ));
    // A failed one keeps its target as the intent.
    h.ok(h.put(web("nginx:3")));
    let v3 = h.s.app(&app_id("/shop/web")).unwrap().current.version;
    h.end("/shop/web", State::Failed("deadline".into()));
    assert_eq!(h.s.app(&app_id("/shop/web")).unwrap().current.version, v3);
}
