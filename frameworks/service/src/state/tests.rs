use serde_json::{Value, json};

use super::*;
use crate::deploy::State;

mod lifecycle;
mod store;

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn def(v: Value) -> AppDefinition {
    AppDefinition::from_value(&v).unwrap()
}

fn web(image: &str) -> Value {
    json!({"id": "/shop/web", "instances": 2,
           "container": {"type": "DOCKER", "docker": {"image": image, "network": "BRIDGE"},
                         "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10000}]}})
}

fn app_id(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

/// A state, a clock that moves one second per operation, and counted ids.
struct H {
    s: Services,
    n: u128,
    now: Timestamp,
}

impl H {
    fn new() -> H {
        H {
            s: Services::new(),
            n: 0,
            now: T0,
        }
    }

    fn req(&mut self, op: Op, force: bool) -> (Request, Timestamp, DeploymentId) {
        self.n += 1;
        self.now = self.now.plus(std::time::Duration::from_secs(1));
        (
            Request { op, force },
            self.now,
            DeploymentId::from_u128(self.n),
        )
    }

    fn try_op(&mut self, op: Op, force: bool) -> Result<OpOutcome, OpError> {
        let (r, now, id) = self.req(op, force);
        let before = self.s.clone();
        let res = self.s.apply_now(&r, now, id);
        if res.is_err() {
            assert_eq!(self.s, before, "a refused operation changed the state");
        }
        res
    }

    fn ok(&mut self, op: Op) -> OpOutcome {
        self.try_op(op, false).unwrap()
    }

    fn force(&mut self, op: Op) -> OpOutcome {
        self.try_op(op, true).unwrap()
    }

    fn err(&mut self, op: Op) -> OpError {
        self.try_op(op, false).unwrap_err()
    }

    fn add(&mut self, v: Value) -> OpOutcome {
        self.ok(Op::Add(def(v)))
    }

    /// Reports the app's running deployment as ended in `state`.
    fn end(&mut self, app: &str, state: State) -> OpOutcome {
        let run = self
            .s
            .get(&app_id(app))
            .unwrap()
            .deployment
            .clone()
            .unwrap();
        let mut plan = run.plan.clone();
        plan.state = state;
        self.ok(Op::Step { id: run.id, plan })
    }

    fn running(&self, app: &str) -> &RunningDeployment {
        self.s
            .get(&app_id(app))
            .unwrap()
            .deployment
            .as_ref()
            .unwrap()
    }

    fn put(&self, v: Value) -> Op {
        Op::Update {
            definition: def(v),
            create: false,
        }
    }
}

fn paths(e: &OpError) -> Vec<String> {
    match e {
        OpError::Invalid(i) => i.errors.iter().map(|e| e.path.clone()).collect(),
        other => panic!("not a 422: {other:?}"),
    }
}

#[test]
fn add_starts_a_deployment_from_nothing() {
    let mut h = H::new();
    let o = h.add(web("nginx:1"));
    assert_eq!(o.effect, Effect::Start);
    assert!(o.new_version);
    assert_eq!(o.deployment, Some(DeploymentId::from_u128(1)));
    let st = h.s.app(&app_id("/shop/web")).unwrap();
    assert_eq!(st.current.version, h.now);
    let run = h.running("/shop/web");
    assert_eq!(
        (run.from, run.to, run.cause),
        (None, Some(h.now), Cause::Add)
    );
    assert_eq!(run.plan.to.as_ref().unwrap().instances, 2);
    assert_eq!(h.s.deployments().count(), 1);
}

#[test]
fn add_of_an_existing_app_is_refused() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    let e = h.err(Op::Add(def(web("nginx:2"))));
    assert_eq!(e, OpError::Exists(app_id("/shop/web")));
    assert_eq!(e.status(), 409);
    assert_eq!(e.to_string(), "An app with id [/shop/web] already exists.");
}

#[test]
fn ids_that_clash_with_groups_are_refused_both_ways() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    let e = h.err(Op::Add(def(json!({"id": "/shop", "cmd": "x"}))));
    assert_eq!(paths(&e), vec!["/id"]);
    assert!(e.to_string().contains("/shop is a group"), "{e}");
    let e = h.err(Op::Add(def(json!({"id": "/shop/web/api", "cmd": "x"}))));
    assert_eq!(paths(&e), vec!["/id"]);
    assert_eq!(e.status(), 422);
    // A sibling is fine.
    h.add(json!({"id": "/shop/api", "cmd": "x"}));
}

#[test]
fn a_service_port_of_another_app_is_refused_with_its_path() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    let e = h.err(Op::Add(def(json!({"id": "/other", "cmd": "x",
        "portDefinitions": [{"port": 9000}, {"port": 10000}]}))));
    assert_eq!(paths(&e), vec!["/portDefinitions/1/port"]);
    assert!(e.to_string().contains("used by app /shop/web"), "{e}");
    let mut mine = web("nginx:1");
    mine["id"] = json!("/copy");
    let e = h.err(Op::Add(def(mine)));
    assert_eq!(paths(&e), vec!["/container/portMappings/0/servicePort"]);
    // The app itself keeps its port across an update.
    h.end("/shop/web", State::Succeeded);
    h.ok(h.put(web("nginx:2")));
}

#[test]
fn dependencies_must_exist_and_not_form_a_cycle() {
    let mut h = H::new();
    let e = h.err(Op::Add(def(
        json!({"id": "/shop/api", "cmd": "x", "dependencies": ["db"]}),
    )));
    assert_eq!(paths(&e), vec!["/dependencies/0"]);
    h.add(json!({"id": "/shop/db", "cmd": "x"}));
    h.add(json!({"id": "/shop/api", "cmd": "x", "dependencies": ["db"]}));
    // A group that holds an app satisfies a dependency.
    h.add(json!({"id": "/front", "cmd": "x", "dependencies": ["/shop"]}));
    h.end("/shop/db", State::Succeeded);
    let e = h.err(h.put(json!({"id": "/shop/db", "cmd": "x", "dependencies": ["/front"]})));
    assert_eq!(paths(&e), vec!["/dependencies"]);
    assert!(
        e.to_string().contains("/shop/db -> /front -> /shop/db"),
        "{e}"
    );
    let e = h.err(h.put(json!({"id": "/shop/db", "cmd": "x", "dependencies": ["/shop/db"]})));
    assert_eq!(paths(&e), vec!["/dependencies/0"]);
}

#[test]
fn a_running_deployment_locks_the_app_unless_forced() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    let first = h.running("/shop/web").id.clone();
    let e = h.err(h.put(web("nginx:2")));
    assert_eq!(
        e,
        OpError::Locked {
            app: app_id("/shop/web"),
            deployment: first.clone()
        }
    );
    assert_eq!(
        e.to_marathon_json()["deployments"],
        json!([{"id": first.as_str()}])
    );
    let v1 = h.s.app(&app_id("/shop/web")).unwrap().current.version;
    let o = h.force(h.put(web("nginx:2")));
    assert_eq!(o.ended, Some(first.clone()));
    let st = h.s.app(&app_id("/shop/web")).unwrap();
    let last = st.history.last().unwrap();
    assert_eq!(last.id, first);
    assert_eq!(
        last.result,
        Outcome::Superseded {
            by: o.deployment.clone().unwrap()
        }
    );
    // From what runs: the cancelled start's target, whose config differs.
    let run = h.running("/shop/web");
    assert_eq!(run.from, Some(v1));
    assert_eq!(run.plan.view(&[], h.now).strategy, "rolling");
}

#[test]
fn forcing_a_scale_during_a_rolling_update_replaces_both_old_versions() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let v1 = h.s.app(&app_id("/shop/web")).unwrap().current.version;
    h.ok(h.put(web("nginx:2")));
    let mut scaled = web("nginx:2");
    scaled["instances"] = json!(5);
    h.force(h.put(scaled));
    // v1's config differs from the target's: the new plan starts from v1,
    // a rolling one, so v1's instances do not stay behind.
    let run = h.running("/shop/web");
    assert_eq!(run.from, Some(v1));
    assert_eq!(run.plan.view(&[], h.now).strategy, "rolling");
    assert_eq!(run.plan.to.as_ref().unwrap().instances, 5);
}

#[test]
fn update_scales_or_restarts_and_a_same_definition_changes_nothing() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let v1 = h.s.app(&app_id("/shop/web")).unwrap().current.clone();
    let mut more = web("nginx:1");
    more["instances"] = json!(4);
    let o = h.ok(h.put(more));
    assert_eq!(o.effect, Effect::Scale);
    let cur = o.current.unwrap();
    assert_eq!(cur.config_version(), v1.config_version());
    assert_eq!(
        h.running("/shop/web").plan.view(&[], h.now).strategy,
        "scale"
    );
    h.end("/shop/web", State::Succeeded);
    let o = h.ok(h.put(web("nginx:2")));
    assert_eq!(o.effect, Effect::Restart);
    assert_eq!(o.current.unwrap().config_version(), h.now);
    h.end("/shop/web", State::Succeeded);
    let before = h.s.clone();
    let (r, now, id) = h.req(h.put(web("nginx:2")), false);
    let applied = h.s.apply(&r, now, id).unwrap();
    assert_eq!(applied.outcome.effect, Effect::None);
    assert_eq!(applied.outcome.deployment, None);
    assert!(applied.writes().is_empty());
    h.s.commit(applied).unwrap();
    assert_eq!(h.s, before);
    assert_eq!(h.s.app(&app_id("/shop/web")).unwrap().versions().len(), 3);
}

#[test]
fn update_of_an_unknown_app_is_404_unless_create() {
    let mut h = H::new();
    let e = h.err(h.put(web("nginx:1")));
    assert_eq!(e, OpError::UnknownApp(app_id("/shop/web")));
    assert_eq!(e.status(), 404);
    assert_eq!(e.to_string(), "App '/shop/web' does not exist");
    let o = h.ok(Op::Update {
        definition: def(web("nginx:1")),
        create: true,
    });
    assert_eq!(o.effect, Effect::Start);
}

#[test]
fn patch_replaces_top_level_fields_and_null_resets_them() {
    let mut h = H::new();
    let mut v = web("nginx:1");
    v["labels"] = json!({"team": "a"});
    v["env"] = json!({"A": "1"});
    h.add(v);
    h.end("/shop/web", State::Succeeded);
    let o = h.ok(Op::Patch {
        id: app_id("/shop/web"),
        patch: json!({"labels": {"team": "b"}, "env": null}),
        create: false,
    });
    let d = o.current.unwrap().definition;
    assert_eq!(d.labels.get("team").map(String::as_str), Some("b"));
    assert!(d.env.is_empty());
    assert_eq!(d.instances, 2);
    h.end("/shop/web", State::Succeeded);
    let bad = |patch: Value| Op::Patch {
        id: app_id("/shop/web"),
        patch,
        create: false,
    };
    assert_eq!(paths(&h.err(bad(json!({"id": "/other"})))), vec!["/id"]);
    assert_eq!(paths(&h.err(bad(json!([1])))), vec!["/"]);
    assert_eq!(paths(&h.err(bad(json!({"cpus": -1})))), vec!["/cpus"]);
    assert_eq!(
        h.err(Op::Patch {
            id: app_id("/nope"),
            patch: json!({}),
            create: false
        })
        .status(),
        404
    );
    // With create, an unknown app is added from the patch as a whole.
    let o = h.ok(Op::Patch {
        id: app_id("/new"),
        patch: json!({"cmd": "sleep 1"}),
        create: true,
    });
    assert_eq!(o.effect, Effect::Start);
}

#[test]
fn scale_sets_instances_and_checks_the_limit() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let o = h.ok(Op::Scale {
        id: app_id("/shop/web"),
        instances: 7,
    });
    assert_eq!(o.effect, Effect::Scale);
    assert_eq!(h.running("/shop/web").cause, Cause::Scale);
    h.end("/shop/web", State::Succeeded);
    let e = h.err(Op::Scale {
        id: app_id("/shop/web"),
        instances: 1_000_000,
    });
    assert_eq!(paths(&e), vec!["/instances"]);
    assert_eq!(
        h.err(Op::Scale {
            id: app_id("/x"),
            instances: 1
        })
        .status(),
        404
    );
}

#[test]
fn restart_makes_a_new_config_version_of_the_same_definition() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let before = h.s.app(&app_id("/shop/web")).unwrap().current.clone();
    let o = h.ok(Op::Restart {
        id: app_id("/shop/web"),
    });
    let cur = o.current.unwrap();
    assert_eq!(o.effect, Effect::Restart);
    assert_eq!(cur.definition, before.definition);
    assert_ne!(cur.config_version(), before.config_version());
    assert_eq!(
        h.running("/shop/web").plan.view(&[], h.now).strategy,
        "rolling"
    );
    assert_eq!(
        h.err(Op::Restart {
            id: app_id("/shop/web")
        })
        .status(),
        409
    );
}

#[test]
fn rollback_goes_to_a_kept_versions_definition_as_a_new_version() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let v1 = h.s.app(&app_id("/shop/web")).unwrap().current.clone();
    h.ok(h.put(web("nginx:2")));
    h.end("/shop/web", State::Succeeded);
    let o = h.ok(Op::Rollback {
        id: app_id("/shop/web"),
        version: v1.version,
    });
    let cur = o.current.unwrap();
    assert_eq!(cur.definition, v1.definition);
    assert!(cur.version > v1.version);
    assert_eq!(h.running("/shop/web").cause, Cause::Rollback);
    h.end("/shop/web", State::Succeeded);
    let e = h.err(Op::Rollback {
        id: app_id("/shop/web"),
        version: Timestamp(5),
    });
    assert_eq!(e.status(), 404);
    assert!(
        e.to_string()
            .contains("in version 1970-01-01T00:00:00.005Z"),
        "{e}"
    );
}

#[test]
fn versions_and_history_are_bounded_but_a_running_deployment_keeps_its_own() {
    let mut h = H::new();
    h.add(web("nginx:0"));
    h.end("/shop/web", State::Succeeded);
    let first = h.s.app(&app_id("/shop/web")).unwrap().current.version;
    h.ok(h.put(web("nginx:1")));
    for i in 2..40 {
        // Forced over the running update: it keeps starting from `first`.
        h.force(h.put(web(&format!("nginx:{i}"))));
    }
    let st = h.s.app(&app_id("/shop/web")).unwrap();
    assert_eq!(st.deployment.as_ref().unwrap().from, Some(first));
    assert!(st.version(first).is_some());
    assert_eq!(st.older.len(), MAX_OLD_VERSIONS + 1);
    assert_eq!(st.history.len(), MAX_HISTORY);
    h.end("/shop/web", State::Succeeded);
    h.ok(h.put(web("nginx:last")));
    let st = h.s.app(&app_id("/shop/web")).unwrap();
    assert_eq!(st.older.len(), MAX_OLD_VERSIONS);
    assert!(st.version(first).is_none());
}

#[test]
fn versions_are_unique_when_the_clock_stands_still() {
    let mut s = Services::new();
    let r = |op| Request { op, force: true };
    s.apply_now(&r(Op::Add(def(web("a")))), T0, DeploymentId::from_u128(1))
        .unwrap();
    let put = |img| Op::Update {
        definition: def(web(img)),
        create: false,
    };
    let o = s
        .apply_now(&r(put("b")), T0, DeploymentId::from_u128(2))
        .unwrap();
    assert_eq!(o.current.unwrap().version, Timestamp(T0.0 + 1));
    let st = s.app(&app_id("/shop/web")).unwrap();
    assert_eq!(st.versions().len(), 2);
}

#[test]
fn deployment_ids_are_uuid_shaped_and_not_reused() {
    let id = DeploymentId::from_u128(0);
    assert_eq!(id.as_str(), "00000000-0000-4000-8000-000000000000");
    assert_eq!(DeploymentId::parse(id.as_str()), Ok(id.clone()));
    let big = DeploymentId::from_u128(u128::MAX);
    assert_eq!(big.as_str(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    assert!(DeploymentId::parse("nope").is_err());
    assert!(DeploymentId::parse("FFFFFFFF-ffff-4fff-bfff-ffffffffffff").is_err());
    let mut s = Services::new();
    let r = Request {
        op: Op::Add(def(web("a"))),
        force: false,
    };
    s.apply_now(&r, T0, id.clone()).unwrap();
    let mut other = web("a");
    other["id"] = json!("/x");
    other["container"]["portMappings"][0]["servicePort"] = json!(0);
    let r = Request {
        op: Op::Add(def(other)),
        force: false,
    };
    assert_eq!(
        s.apply(&r, T0, id.clone()).unwrap_err(),
        OpError::DuplicateDeploymentId(id)
    );
}

#[test]
fn commit_refuses_an_applied_computed_against_another_state() {
    let mut s = Services::new();
    let add = |img: &str, id: &str| Request {
        op: Op::Add(def(json!({"id": id, "cmd": img}))),
        force: false,
    };
    let a = s
        .apply(&add("a", "/a"), T0, DeploymentId::from_u128(1))
        .unwrap();
    let b = s
        .apply(&add("b", "/b"), T0, DeploymentId::from_u128(2))
        .unwrap();
    s.commit(a).unwrap();
    assert_eq!(s.commit(b).unwrap_err(), Stale);
    assert_eq!(s.apps().count(), 1);
}

#[test]
fn plan_tells_what_would_happen_and_changes_nothing() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let mut canary = web("nginx:2");
    canary["deployment"] = json!({"strategy": "canary",
        "canary": {"steps": [{"weight": 10}, {"pause": null}, {"weight": 100}]}});
    let before = h.s.clone();
    let r = Request {
        op: h.put(canary),
        force: false,
    };
    let p = h.s.plan(&r, h.now, DeploymentId::from_u128(99)).unwrap();
    assert_eq!(h.s, before);
    assert_eq!(p.effect, Effect::Restart);
    assert_eq!(p.strategy, Some("canary"));
    assert_eq!(
        p.steps,
        vec!["weight 10", "pause until promoted", "weight 100"]
    );
    assert_eq!(p.changed_fields, vec!["container", "deployment"]);
    assert_eq!((p.instances_started, p.instances_stopped), (2, 2));
    assert!(p.new_version.is_some());
    let r = Request {
        op: Op::Scale {
            id: app_id("/shop/web"),
            instances: 5,
        },
        force: false,
    };
    let p = h.s.plan(&r, h.now, DeploymentId::from_u128(99)).unwrap();
    assert_eq!((p.effect, p.strategy), (Effect::Scale, Some("scale")));
    assert_eq!((p.instances_started, p.instances_stopped), (3, 0));
    assert_eq!(p.changed_fields, vec!["instances"]);
    // Refusals are the operation's.
    let r = Request {
        op: Op::Restart { id: app_id("/no") },
        force: false,
    };
    assert_eq!(
        h.s.plan(&r, h.now, DeploymentId::from_u128(99))
            .unwrap_err(),
        OpError::UnknownApp(app_id("/no"))
    );
}

#[test]
fn by_config_version_finds_the_definition_instances_run() {
    let mut h = H::new();
    h.add(web("nginx:1"));
    h.end("/shop/web", State::Succeeded);
    let v1 = h.s.app(&app_id("/shop/web")).unwrap().current.clone();
    h.ok(Op::Scale {
        id: app_id("/shop/web"),
        instances: 3,
    });
    let st = h.s.app(&app_id("/shop/web")).unwrap();
    let found = st.by_config_version(v1.config_version()).unwrap();
    assert_eq!(found.definition.instances, 3);
    assert!(st.by_config_version(Timestamp(1)).is_none());
}
