use std::time::Duration;

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::app::AppDefinition;

mod errors;

/// An app definition as Marathon users write them.
const MARATHON_APP: &str = r#"{
  "id": "/shop/web",
  "instances": 3,
  "cpus": 0.25,
  "mem": 128,
  "disk": 0,
  "container": {
    "type": "DOCKER",
    "docker": { "image": "registry.example.com/shop/web:1.4.2", "network": "BRIDGE", "forcePullImage": false },
    "portMappings": [
      { "containerPort": 8080, "hostPort": 0, "servicePort": 10080, "protocol": "tcp", "name": "http" }
    ]
  },
  "env": { "SHOP_ENV": "production" },
  "labels": { "HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "shop.example.com" },
  "healthChecks": [
    { "protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 30,
      "intervalSeconds": 10, "timeoutSeconds": 5, "maxConsecutiveFailures": 3 }
  ],
  "constraints": [["hostname", "UNIQUE"]],
  "upgradeStrategy": { "minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2 },
  "backoffSeconds": 1,
  "backoffFactor": 1.15,
  "maxLaunchDelaySeconds": 3600
}"#;

struct Api {
    mem: Arc<InMemory>,
    router: Router,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Api {
    fn new() -> Api {
        let mem = Arc::new(InMemory::new(Timestamp::from_secs(1_700_000_000)));
        let router = router(mem.clone());
        Api { mem, router }
    }

    async fn send(&self, method: &str, uri: &str, ct: Option<&str>, body: Body) -> Answer {
        let mut req = HttpRequest::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).to_string()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> Answer {
        let b = body.map_or(Body::empty(), |s| Body::from(s.to_string()));
        let ct = body.map(|_| "application/json");
        self.send(method, uri, ct, b).await
    }

    /// Advances the clock until no deployment runs (at most 20 times).
    async fn settle(&self) {
        for _ in 0..20 {
            if self.call("GET", "/v2/deployments", None).await.body == json!([]) {
                return;
            }
            self.mem.advance(Duration::from_secs(5));
        }
        panic!("deployments did not finish");
    }
}

fn with(base: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(base).unwrap();
    f(&mut v);
    v.to_string()
}

#[tokio::test]
async fn a_marathon_app_goes_through_create_update_rollback_and_delete() {
    let api = Api::new();
    let a = api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.headers["location"], "/v2/apps/shop/web");
    let dep = a.body["deployments"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(a.headers["marathon-deployment-id"], dep.as_str());
    assert_eq!(a.body["tasksStaged"], 0);
    let v1 = a.body["version"].as_str().unwrap().to_string();

    let d = api.call("GET", "/v2/deployments", None).await;
    assert_eq!(d.body[0]["id"], dep.as_str());
    assert_eq!(d.body[0]["affectedApps"], json!(["/shop/web"]));
    assert_eq!(d.body[0]["currentActions"][0]["action"], "StartApplication");
    let t = api.call("GET", "/v2/apps/shop/web/tasks", None).await;
    assert_eq!(t.body["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(t.body["tasks"][0]["state"], "TASK_STAGING");
    api.settle().await;

    // GET renders a definition that parses back to the same one.
    let g = api.call("GET", "/v2/apps/shop/web", None).await;
    assert_eq!(g.status, StatusCode::OK);
    let app = &g.body["app"];
    assert_eq!(
        AppDefinition::from_value(app).unwrap(),
        AppDefinition::from_json(MARATHON_APP).unwrap()
    );
    assert_eq!(
        (app["tasksRunning"].clone(), app["tasksHealthy"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(app["deployments"], json!([]));
    assert_eq!(app["container"]["portMappings"][0]["servicePort"], 10080);
    let t = api.call("GET", "/v2/tasks", None).await;
    let task = &t.body["tasks"][0];
    assert_eq!(
        (task["state"].clone(), task["appId"].clone()),
        (json!("TASK_RUNNING"), json!("/shop/web"))
    );
    assert_eq!(task["healthCheckResults"][0]["alive"], true);
    assert_eq!(task["servicePorts"], json!([10080]));
    assert_eq!(task["version"], v1.as_str());

    // A new image: a new version and a rolling deployment.
    let v2_body = with(MARATHON_APP, |v| {
        v["container"]["docker"]["image"] = json!("registry.example.com/shop/web:1.5.0")
    });
    let p = api.call("PUT", "/v2/apps/shop/web", Some(&v2_body)).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let dep2 = p.body["deploymentId"].as_str().unwrap().to_string();
    let v2 = p.body["version"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    let d = api.call("GET", "/v2/deployments", None).await;
    assert_eq!(
        d.body[0]["currentActions"][0]["action"],
        "RestartApplication"
    );
    assert_eq!(d.body[0]["berth"]["strategy"], "rolling");

    // Locked while it runs; force takes over.
    let third = with(MARATHON_APP, |v| {
        v["container"]["docker"]["image"] = json!("x:3")
    });
    let c = api.call("PUT", "/v2/apps/shop/web", Some(&third)).await;
    assert_eq!(c.status, StatusCode::CONFLICT);
    assert_eq!(c.body["deployments"], json!([{"id": dep2}]));
    assert!(
        c.body["message"]
            .as_str()
            .unwrap()
            .starts_with("App is locked by one or more deployments.")
    );
    let f = api
        .call("PUT", "/v2/apps/shop/web?force=true", Some(&third))
        .await;
    assert_eq!(f.status, StatusCode::OK, "{}", f.body);
    api.settle().await;
    let versions = api.call("GET", "/v2/apps/shop/web/versions", None).await;
    let list = versions.body["versions"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2], v1.as_str(), "newest first");

    // Rollback by version.
    let r = api
        .call(
            "PUT",
            "/v2/apps/shop/web",
            Some(&json!({"version": v1}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    api.settle().await;
    let g = api.call("GET", "/v2/apps/shop/web", None).await;
    assert_eq!(
        g.body["app"]["container"]["docker"]["image"],
        "registry.example.com/shop/web:1.4.2"
    );
    let old = api
        .call("GET", &format!("/v2/apps/shop/web/versions/{v2}"), None)
        .await;
    assert_eq!(
        old.body["container"]["docker"]["image"],
        "registry.example.com/shop/web:1.5.0"
    );
    assert_eq!(old.body["version"], v2.as_str());
    let tasks = api.call("GET", "/v2/apps/shop/web/tasks", None).await;
    assert_eq!(tasks.body["tasks"].as_array().unwrap().len(), 3);

    // Delete: a deployment to zero, then the app is gone.
    let del = api.call("DELETE", "/v2/apps/shop/web", None).await;
    assert_eq!(del.status, StatusCode::OK, "{}", del.body);
    assert!(del.body["deploymentId"].is_string());
    let g = api.call("GET", "/v2/apps/shop/web", None).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    assert_eq!(g.body, json!({"message": "App '/shop/web' does not exist"}));
    api.settle().await;
    assert_eq!(
        api.call("GET", "/v2/tasks", None).await.body,
        json!({"tasks": []})
    );
    assert_eq!(
        api.call("GET", "/v2/apps", None).await.body,
        json!({"apps": []})
    );
    assert!(api.mem.services().all().next().is_none());
}

#[tokio::test]
async fn put_of_an_unknown_app_creates_it_and_partial_puts_scale() {
    let api = Api::new();
    let body = json!({"cmd": "sleep 1000", "instances": 1}).to_string();
    let c = api.call("PUT", "/v2/apps/jobs/sleeper", Some(&body)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    assert_eq!(c.headers["location"], "/v2/apps/jobs/sleeper");
    api.settle().await;
    // Marathon's default partialUpdate=true: only `instances` changes.
    let s = api
        .call("PUT", "/v2/apps/jobs/sleeper", Some(r#"{"instances": 4}"#))
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    let d = api.call("GET", "/v2/deployments", None).await;
    assert_eq!(d.body[0]["currentActions"][0]["action"], "ScaleApplication");
    api.settle().await;
    let g = api.call("GET", "/v2/apps/jobs/sleeper", None).await;
    assert_eq!(
        (
            g.body["app"]["instances"].clone(),
            g.body["app"]["cmd"].clone()
        ),
        (json!(4), json!("sleep 1000"))
    );
    assert_eq!(g.body["app"]["tasksRunning"], 4);
    // PATCH likewise; partialUpdate=false replaces the whole definition.
    let p = api
        .call(
            "PATCH",
            "/v2/apps/jobs/sleeper",
            Some(r#"{"instances": 2}"#),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    api.settle().await;
    let whole = api
        .call(
            "PUT",
            "/v2/apps/jobs/sleeper?partialUpdate=false",
            Some(r#"{"cmd": "sleep 5"}"#),
        )
        .await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.body);
    api.settle().await;
    let g = api.call("GET", "/v2/apps/jobs/sleeper", None).await;
    assert_eq!(
        g.body["app"]["instances"], 1,
        "replaced: the default instance count"
    );
    // An unchanged definition makes no deployment.
    let same = api
        .call(
            "PUT",
            "/v2/apps/jobs/sleeper?partialUpdate=false",
            Some(r#"{"cmd": "sleep 5"}"#),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body["deploymentId"], Value::Null);
}

#[tokio::test]
async fn restart_replaces_every_task() {
    let api = Api::new();
    api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    api.settle().await;
    let before = api.call("GET", "/v2/apps/shop/web/tasks", None).await.body;
    let r = api.call("POST", "/v2/apps/shop/web/restart", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["deploymentId"].is_string());
    assert_eq!(
        api.call("POST", "/v2/apps/shop/web/restart", None)
            .await
            .status,
        StatusCode::CONFLICT
    );
    api.settle().await;
    let after = api.call("GET", "/v2/apps/shop/web/tasks", None).await.body;
    let ids = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&after).len(), 3);
    assert!(ids(&after).iter().all(|i| !ids(&before).contains(i)));
    assert_ne!(before["tasks"][0]["version"], after["tasks"][0]["version"]);
}

#[tokio::test]
async fn cancelling_a_deployment_reverts_or_with_force_just_stops() {
    let api = Api::new();
    api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    api.settle().await;
    let v2 = with(MARATHON_APP, |v| {
        v["container"]["docker"]["image"] = json!("x:2")
    });
    let p = api.call("PUT", "/v2/apps/shop/web", Some(&v2)).await;
    let dep = p.body["deploymentId"].as_str().unwrap().to_string();
    let c = api
        .call("DELETE", &format!("/v2/deployments/{dep}"), None)
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    let revert = c.body["deploymentId"].as_str().unwrap().to_string();
    assert_ne!(revert, dep);
    api.settle().await;
    let g = api.call("GET", "/v2/apps/shop/web", None).await;
    assert_eq!(
        g.body["app"]["container"]["docker"]["image"],
        "registry.example.com/shop/web:1.4.2"
    );

    let p = api.call("PUT", "/v2/apps/shop/web", Some(&v2)).await;
    let dep = p.body["deploymentId"].as_str().unwrap().to_string();
    let c = api
        .call("DELETE", &format!("/v2/deployments/{dep}?force=true"), None)
        .await;
    assert_eq!((c.status, c.body), (StatusCode::ACCEPTED, Value::Null));
    assert_eq!(
        api.call("GET", "/v2/deployments", None).await.body,
        json!([])
    );
    let g = api.call("GET", "/v2/apps/shop/web", None).await;
    assert_eq!(g.body["app"]["container"]["docker"]["image"], "x:2");
}

#[tokio::test]
async fn promote_is_refused_without_a_paused_deployment() {
    let api = Api::new();
    api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    let p = api.call("POST", "/v2/apps/shop/web/promote", None).await;
    assert_eq!(p.status, StatusCode::CONFLICT);
    assert!(
        p.body["message"]
            .as_str()
            .unwrap()
            .contains("nothing to promote"),
        "{}",
        p.body
    );
}

#[tokio::test]
async fn plan_shows_a_change_without_making_it() {
    let api = Api::new();
    api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    api.settle().await;
    let v2 = with(MARATHON_APP, |v| {
        v["container"]["docker"]["image"] = json!("x:2")
    });
    let p = api.call("POST", "/v2/plan", Some(&v2)).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["effect"], "restart");
    assert_eq!(p.body["strategy"], "rolling");
    assert_eq!(p.body["changedFields"], json!(["container"]));
    assert_eq!(
        (
            p.body["instancesStarted"].clone(),
            p.body["instancesStopped"].clone()
        ),
        (json!(3), json!(3))
    );
    assert_eq!(
        api.call("GET", "/v2/deployments", None).await.body,
        json!([])
    );
    let g = api.call("GET", "/v2/apps/shop/web/versions", None).await;
    assert_eq!(g.body["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn ping_info_yaml_and_task_filters() {
    let api = Api::new();
    let p = api.call("GET", "/ping", None).await;
    assert_eq!((p.status, p.body), (StatusCode::OK, json!("pong")));
    let i = api.call("GET", "/v2/info", None).await;
    assert_eq!(
        (i.body["name"].clone(), i.body["elected"].clone()),
        (json!("berth-service"), json!(true))
    );
    let yaml = "id: /tools/cron\ncmd: sleep 100\ninstances: 2\n";
    let c = api
        .send(
            "POST",
            "/v2/apps",
            Some("application/yaml"),
            Body::from(yaml),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    api.call("POST", "/v2/apps", Some(r#"{"id": "/other", "cmd": "x"}"#))
        .await;
    let staging = api.call("GET", "/v2/tasks?status=staging", None).await;
    assert_eq!(staging.body["tasks"].as_array().unwrap().len(), 3);
    let running = api.call("GET", "/v2/tasks?status=running", None).await;
    assert_eq!(running.body["tasks"], json!([]));
    let list = api.call("GET", "/v2/apps?id=tools", None).await;
    assert_eq!(list.body["apps"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["apps"][0]["id"], "/tools/cron");
    let list = api.call("GET", "/v2/apps?cmd=SLEEP", None).await;
    assert_eq!(list.body["apps"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn one_deployment_is_shown_running_then_with_its_result() {
    let api = Api::new();
    let a = api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    let dep = a.body["deployments"][0]["id"].as_str().unwrap().to_string();
    let d = api
        .call("GET", &format!("/v2/deployments/{dep}"), None)
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.body["berth"]["result"], "running");
    assert_eq!(d.body["affectedApps"], json!(["/shop/web"]));
    api.settle().await;
    let d = api
        .call("GET", &format!("/v2/deployments/{dep}"), None)
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(
        d.body["berth"]["result"]["state"], "succeeded",
        "{}",
        d.body
    );
    assert!(d.body["berth"]["finishedAt"].is_string());
    let unknown = api
        .call(
            "GET",
            "/v2/deployments/00000000-0000-4000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = api.call("GET", "/v2/deployments/nope", None).await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn embed_adds_tasks_and_refuses_what_it_cannot_embed() {
    let api = Api::new();
    let a = api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let plain = api.call("GET", "/v2/apps", None).await;
    assert!(
        plain.body["apps"][0].get("tasks").is_none(),
        "{}",
        plain.body
    );
    let l = api
        .call("GET", "/v2/apps?embed=apps.counts&embed=apps.tasks", None)
        .await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.body);
    assert_eq!(l.body["apps"][0]["tasks"].as_array().map(Vec::len), Some(3));
    assert_eq!(l.body["apps"][0]["tasks"][0]["appId"], "/shop/web");
    let one = api
        .call("GET", "/v2/apps/shop/web?embed=app.tasks", None)
        .await;
    assert_eq!(one.body["app"]["tasks"].as_array().map(Vec::len), Some(3));
    for bad in [
        "/v2/apps?embed=apps.readiness",
        "/v2/apps?embed=app.tasks",
        "/v2/apps/shop/web?embed=apps.tasks",
    ] {
        let r = api.call("GET", bad, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("embed"),
            "{}",
            r.body
        );
    }
}

#[test]
fn last_task_failure_is_embedded_as_marathon_renders_it() {
    let pairs = |v: &[&str]| -> Vec<(String, String)> {
        v.iter()
            .map(|v| ("embed".to_owned(), (*v).to_owned()))
            .collect()
    };
    let e = embeds(&pairs(&["apps.lastTaskFailure"]), "apps", Embed::default());
    assert_eq!(
        e.ok(),
        Some(Embed {
            tasks: false,
            last_task_failure: true
        })
    );
    assert!(embeds(&pairs(&["app.lastTaskFailure"]), "apps", Embed::default()).is_err());
    let app = AppId::parse("/shop/web").unwrap();
    let f = LastFailure {
        task: crate::run::instances::TaskFailure {
            task_id: "shop_web.i1.2".into(),
            agent_id: "a1".into(),
            state: berth_proto::TaskState::TaskFailed,
            message: "exited with status 1".into(),
            version: Timestamp::from_millis(1_700_000_000_000),
            at: Timestamp::from_millis(1_700_000_001_000),
        },
        host: "node-1".into(),
    };
    assert_eq!(
        render::last_failure(&app, &f),
        json!({
            "appId": "/shop/web",
            "host": "node-1",
            "message": "exited with status 1",
            "state": "TASK_FAILED",
            "taskId": "shop_web.i1.2",
            "timestamp": "2023-11-14T22:13:21.000Z",
            "version": "2023-11-14T22:13:20.000Z",
        })
    );
}
