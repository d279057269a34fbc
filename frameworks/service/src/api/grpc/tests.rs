//! The gRPC API through a real tonic client over loopback, against the
//! in-memory backend, on the same port as the HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::service::v1 as pb;
use pb::service_client::ServiceClient;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::transport::Channel;

use crate::api::{InMemory, ServiceBackend};
use crate::time::Timestamp;

const APP: &str = r#"{"id": "/shop/web", "cmd": "sleep 1000", "instances": 2,
  "cpus": 0.1, "mem": 32, "portDefinitions": [{"port": 10080, "name": "http"}]}"#;

struct Server {
    mem: Arc<InMemory>,
    addr: SocketAddr,
    client: ServiceClient<Channel>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `backend`'s HTTP and gRPC APIs on one loopback port.
async fn serve<B: ServiceBackend>(backend: Arc<B>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = crate::api::router(backend.clone()).merge(super::router(backend));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

async fn client(addr: SocketAddr) -> ServiceClient<Channel> {
    ServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

impl Server {
    async fn start() -> Server {
        let mem = Arc::new(InMemory::new(Timestamp::from_secs(1_700_000_000)));
        let (addr, task) = serve(mem.clone()).await;
        Server {
            mem,
            addr,
            client: client(addr).await,
            task,
        }
    }

    fn c(&self) -> ServiceClient<Channel> {
        self.client.clone()
    }

    /// Advances the clock until no deployment runs.
    async fn settle(&self) {
        for _ in 0..20 {
            let list = self
                .c()
                .list_deployments(pb::ListDeploymentsRequest {})
                .await
                .unwrap()
                .into_inner();
            if list.deployments.is_empty() {
                return;
            }
            self.mem.advance(Duration::from_secs(5));
        }
        panic!("deployments did not finish");
    }

    async fn create(&self, text: &str) -> Result<pb::ChangeResult, tonic::Status> {
        self.c()
            .create_app(pb::CreateAppRequest {
                definition: Some(json_definition(text)),
                force: false,
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

fn json_definition(text: &str) -> pb::Definition {
    pb::Definition {
        text: text.to_owned(),
        format: pb::DefinitionFormat::Json as i32,
    }
}

fn with(base: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(base).unwrap();
    f(&mut v);
    v.to_string()
}

fn app_req(id: &str) -> pb::GetAppRequest {
    pb::GetAppRequest { app_id: id.into() }
}

#[tokio::test]
async fn an_app_is_created_watched_to_its_end_and_changed() {
    let s = Server::start().await;
    let created = s.create(APP).await.unwrap();
    assert_eq!(created.app_id, "/shop/web");
    assert_eq!(created.effect, pb::Effect::Start as i32);
    let dep = created.deployment_id.clone().expect("a deployment started");

    let app = ok(s.c().get_app(app_req("shop/web")).await);
    assert_eq!((app.instances, app.tasks_staged), (2, 2));
    assert_eq!(app.deployment_id.as_deref(), Some(dep.as_str()));
    assert_eq!(app.version, created.version);
    let def: Value = serde_json::from_str(&app.definition_json).unwrap();
    assert_eq!(
        (def["id"].clone(), def["cmd"].clone()),
        (json!("/shop/web"), json!("sleep 1000"))
    );

    let staging = ok(s
        .c()
        .list_instances(pb::ListInstancesRequest {
            app_id: "/shop/web".into(),
        })
        .await)
    .instances;
    assert_eq!(staging.len(), 2);
    assert!(
        staging
            .iter()
            .all(|i| i.state == pb::InstanceState::Staging as i32)
    );
    assert_eq!(staging[0].service_ports, [10080]);

    let running = ok(s.c().list_deployments(pb::ListDeploymentsRequest {}).await).deployments;
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, dep);
    assert_eq!(running[0].cause, pb::Cause::Add as i32);
    let progress = running[0].progress.clone().unwrap();
    assert_eq!(progress.state, pb::ProgressState::Running as i32);
    assert_eq!(progress.new_instances, 2);

    // Watch it while the clock moves: its progress, then its end.
    let mut watch = ok(s
        .c()
        .watch_deployment(pb::WatchDeploymentRequest {
            deployment_id: dep.clone(),
        })
        .await);
    let first = watch.message().await.unwrap().unwrap();
    assert!(first.progress.is_some() && first.finished.is_none());
    let mem = s.mem.clone();
    let clock = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            mem.advance(Duration::from_secs(5));
        }
    });
    let mut last = first;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch goes on")
        .unwrap()
    {
        last = m;
    }
    clock.abort();
    let end = last.finished.expect("the last message is the end");
    assert_eq!(end.state, pb::OutcomeState::Succeeded as i32);
    assert_eq!(last.app_id, "/shop/web", "the app id is kept to the end");

    let done = ok(s
        .c()
        .get_deployment(pb::GetDeploymentRequest {
            deployment_id: dep.clone(),
        })
        .await);
    assert_eq!(
        done.finished.unwrap().state,
        pb::OutcomeState::Succeeded as i32
    );
    let ready = ok(s
        .c()
        .list_instances(pb::ListInstancesRequest::default())
        .await)
    .instances;
    assert!(
        ready
            .iter()
            .all(|i| i.state == pb::InstanceState::Ready as i32 && !i.host.is_empty())
    );

    // Scale, restart, then roll back to the first version.
    let scaled = ok(s
        .c()
        .scale_app(pb::ScaleAppRequest {
            app_id: "/shop/web".into(),
            instances: 3,
            force: false,
        })
        .await);
    assert_eq!(scaled.effect, pb::Effect::Scale as i32);
    s.settle().await;
    let restarted = ok(s
        .c()
        .restart_app(pb::RestartAppRequest {
            app_id: "/shop/web".into(),
            force: false,
        })
        .await);
    assert_eq!(restarted.effect, pb::Effect::Restart as i32);
    s.settle().await;
    let versions = ok(s
        .c()
        .list_versions(pb::ListVersionsRequest {
            app_id: "/shop/web".into(),
        })
        .await)
    .versions;
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert_eq!(versions[2], created.version, "newest first");
    let old = ok(s
        .c()
        .get_version(pb::GetVersionRequest {
            app_id: "/shop/web".into(),
            version: created.version.clone(),
        })
        .await);
    let old_def: Value = serde_json::from_str(&old.definition_json).unwrap();
    assert_eq!(old_def["instances"], 2);
    let back = ok(s
        .c()
        .rollback_app(pb::RollbackAppRequest {
            app_id: "/shop/web".into(),
            version: created.version.clone(),
            force: false,
        })
        .await);
    assert!(back.deployment_id.is_some());
    s.settle().await;
    let app = ok(s.c().get_app(app_req("/shop/web")).await);
    assert_eq!(app.instances, 2);

    // The HTTP API answers on the same port.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /v2/apps HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"/shop/web\""), "{answer}");
}

#[tokio::test]
async fn yaml_plans_filters_removal_and_cancelling() {
    let s = Server::start().await;
    let yaml = "id: /jobs/sleeper\ncmd: sleep 100\ninstances: 1\n";
    let c = ok(s
        .c()
        .create_app(pb::CreateAppRequest {
            definition: Some(pb::Definition {
                text: yaml.into(),
                format: pb::DefinitionFormat::Yaml as i32,
            }),
            force: false,
        })
        .await);
    assert_eq!(c.app_id, "/jobs/sleeper");
    s.create(APP).await.unwrap();
    s.settle().await;
    let only = ok(s
        .c()
        .list_apps(pb::ListAppsRequest {
            id_contains: "SHOP".into(),
        })
        .await)
    .apps;
    assert_eq!(
        only.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["/shop/web"]
    );

    // A plan changes nothing.
    let v2 = with(APP, |v| v["cmd"] = json!("sleep 2000"));
    let plan = ok(s
        .c()
        .plan_app(pb::PlanAppRequest {
            definition: Some(json_definition(&v2)),
            force: false,
        })
        .await);
    assert_eq!(plan.effect, pb::Effect::Restart as i32);
    assert_eq!(plan.changed_fields, ["cmd"]);
    assert_eq!((plan.instances_started, plan.instances_stopped), (2, 2));
    let app = ok(s.c().get_app(app_req("/shop/web")).await);
    assert!(app.definition_json.contains("sleep 1000"));

    // Cancel an update: a revert goes back.
    let upd = ok(s
        .c()
        .update_app(pb::UpdateAppRequest {
            definition: Some(json_definition(&v2)),
            force: false,
            allow_missing: false,
        })
        .await);
    let dep = upd.deployment_id.unwrap();
    let cancel = ok(s
        .c()
        .cancel_deployment(pb::CancelDeploymentRequest {
            deployment_id: dep.clone(),
            force: false,
        })
        .await);
    assert_eq!(cancel.ended_deployment_id.as_deref(), Some(dep.as_str()));
    let revert = cancel.deployment_id.expect("a revert");
    let d = ok(s
        .c()
        .get_deployment(pb::GetDeploymentRequest {
            deployment_id: revert,
        })
        .await);
    assert_eq!(d.cause, pb::Cause::Revert as i32);
    s.settle().await;

    // Delete: force by default, as Marathon.
    let gone = ok(s
        .c()
        .delete_app(pb::DeleteAppRequest {
            app_id: "/jobs/sleeper".into(),
            force: None,
        })
        .await);
    assert_eq!(gone.effect, pb::Effect::Stop as i32);
    s.settle().await;
    let left = ok(s.c().list_apps(pb::ListAppsRequest::default()).await);
    assert_eq!(left.apps.len(), 1);
}

/// The answer of a call that must succeed.
fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> T {
    r.expect("the call succeeds").into_inner()
}

/// The code and message of a refused call.
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("refused");
    (s.code(), s.message().to_owned())
}

#[tokio::test]
async fn invalid_input_is_invalid_argument_with_field_paths() {
    let s = Server::start().await;
    let bad = with(APP, |v| {
        v["cpus"] = json!(-1);
        v["upgradeStrategy"] = json!({"minimumHealthCapacity": 1.5});
    });
    let e = s.create(&bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("/cpus"), "{}", e.message());
    assert!(
        e.message()
            .contains("/upgradeStrategy/minimumHealthCapacity"),
        "{}",
        e.message()
    );
    let e = s.create("{\"id\": \"/x\",").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    let e = s
        .c()
        .create_app(pb::CreateAppRequest {
            definition: Some(pb::Definition {
                text: APP.into(),
                format: 7,
            }),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let huge = " ".repeat(crate::api::MAX_BODY_BYTES + 1);
    assert_eq!(
        s.create(&huge).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let (code, m) = refused(s.c().get_app(app_req("")).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(m.contains("invalid app id"), "{m}");
    s.create(APP).await.unwrap();
    let (code, m) = refused(
        s.c()
            .rollback_app(pb::RollbackAppRequest {
                app_id: "/shop/web".into(),
                version: "yesterday".into(),
                force: true,
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(m.contains("/version"), "{m}");
    // Nothing but the valid app was made.
    assert_eq!(s.mem.services().all().count(), 1);
}

#[tokio::test]
async fn unknown_things_are_not_found() {
    let s = Server::start().await;
    let (code, m) = refused(s.c().get_app(app_req("/nope")).await);
    assert_eq!(
        (code, m.as_str()),
        (Code::NotFound, "App '/nope' does not exist")
    );
    let update = pb::UpdateAppRequest {
        definition: Some(json_definition(APP)),
        force: false,
        allow_missing: false,
    };
    assert_eq!(
        refused(s.c().update_app(update.clone()).await).0,
        Code::NotFound
    );
    assert_eq!(
        refused(
            s.c()
                .list_instances(pb::ListInstancesRequest {
                    app_id: "/nope".into()
                })
                .await
        )
        .0,
        Code::NotFound
    );
    for id in ["nonsense", "00000000-0000-0000-0000-000000000009"] {
        let get = s
            .c()
            .get_deployment(pb::GetDeploymentRequest {
                deployment_id: id.into(),
            })
            .await;
        assert_eq!(refused(get).0, Code::NotFound, "{id}");
        let watch = s
            .c()
            .watch_deployment(pb::WatchDeploymentRequest {
                deployment_id: id.into(),
            })
            .await;
        assert_eq!(refused(watch).0, Code::NotFound, "{id}");
    }
    // allow_missing adds the app, as Marathon's PUT.
    let made = ok(s
        .c()
        .update_app(pb::UpdateAppRequest {
            allow_missing: true,
            ..update
        })
        .await);
    assert_eq!(made.effect, pb::Effect::Start as i32);
    let (code, _) = refused(
        s.c()
            .get_version(pb::GetVersionRequest {
                app_id: "/shop/web".into(),
                version: "2001-01-01T00:00:00.000Z".into(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    // A rollback to a version the app never had names the field, and
    // changes nothing.
    let versions = |s: &Server| {
        let mut c = s.c();
        async move {
            ok(c.list_versions(pb::ListVersionsRequest {
                app_id: "/shop/web".into(),
            })
            .await)
            .versions
        }
    };
    let before = versions(&s).await;
    let (code, message) = refused(
        s.c()
            .rollback_app(pb::RollbackAppRequest {
                app_id: "/shop/web".into(),
                version: "2001-01-01T00:00:00.000Z".into(),
                force: true,
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert!(message.starts_with("/version: "), "{message}");
    assert_eq!(versions(&s).await, before);
}

#[tokio::test]
async fn conflicts_are_already_exists_or_failed_precondition() {
    let s = Server::start().await;
    let first = s.create(APP).await.unwrap();
    let dep = first.deployment_id.unwrap();
    assert_eq!(s.create(APP).await.unwrap_err().code(), Code::AlreadyExists);
    // Locked by the running deployment: refused without force, naming it.
    let v2 = with(APP, |v| v["cmd"] = json!("sleep 5"));
    let update = pb::UpdateAppRequest {
        definition: Some(json_definition(&v2)),
        force: false,
        allow_missing: false,
    };
    let (code, m) = refused(s.c().update_app(update.clone()).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(m.contains(&dep), "{m}");
    let (code, _) = refused(
        s.c()
            .delete_app(pb::DeleteAppRequest {
                app_id: "/shop/web".into(),
                force: Some(false),
            })
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition);
    let (code, m) = refused(
        s.c()
            .promote_app(pb::PromoteAppRequest {
                app_id: "/shop/web".into(),
            })
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition);
    assert!(m.contains("nothing to promote"), "{m}");
    // With force the update supersedes the deployment.
    let forced = ok(s
        .c()
        .update_app(pb::UpdateAppRequest {
            force: true,
            ..update
        })
        .await);
    assert_eq!(forced.ended_deployment_id.as_deref(), Some(dep.as_str()));
    let old = ok(s
        .c()
        .get_deployment(pb::GetDeploymentRequest { deployment_id: dep })
        .await);
    let end = old.finished.unwrap();
    assert_eq!(end.state, pb::OutcomeState::Superseded as i32);
    assert_eq!(end.by, forced.deployment_id);
}

#[tokio::test]
async fn a_backend_that_cannot_answer_is_unavailable() {
    // The framework's handle with its framework gone.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let handle = Arc::new(crate::serve::handle::Handle::new(tx));
    let (addr, task) = serve(handle).await;
    let mut c = client(addr).await;
    let e = c
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(e.message(), "the service framework is not running");
    task.abort();
}
