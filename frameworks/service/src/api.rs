//! Marathon's REST API, a compatible subset (axum), over a
//! [`ServiceBackend`]: a Marathon user's `curl` scripts work as they are.
//!
//! | route | answer |
//! |---|---|
//! | `GET /ping` | `pong` |
//! | `GET /v2/info` | who answers |
//! | `GET /v2/apps` (`?id=`, `?cmd=`: substring filters) | `{"apps": [...]}` |
//! | `POST /v2/apps` | 201, the app with `deployments: [{"id"}]`, `Location`, `Marathon-Deployment-Id` |
//! | `GET /v2/apps/{id}` | `{"app": ...}` |
//! | `PUT /v2/apps/{id}` | 200 (201 and `Location` when it created the app), `{"deploymentId", "version"}` |
//! | `PATCH /v2/apps/{id}` | 200, `{"deploymentId", "version"}` |
//! | `DELETE /v2/apps/{id}` | 200, `{"deploymentId", "version"}` |
//! | `POST /v2/apps/{id}/restart` | 200, `{"deploymentId", "version"}` |
//! | `POST /v2/apps/{id}/promote` | berth's: let a paused canary or blue/green preview go on |
//! | `GET /v2/apps/{id}/versions` | `{"versions": [...]}`, newest first |
//! | `GET /v2/apps/{id}/versions/{version}` | the definition at that version |
//! | `GET /v2/apps/{id}/tasks`, `GET /v2/tasks` (`?status=running\|staging`) | `{"tasks": [...]}` |
//! | `GET /v2/deployments` | `[...]`, with berth's progress under `berth` |
//! | `DELETE /v2/deployments/{id}` | 200 and the revert's `{"deploymentId", "version"}`; with `force=true` 202, no body |
//! | `POST /v2/plan` | berth's: what PUT of this definition would do ([`crate::state::PlanView`]), changing nothing |
//!
//! As Marathon: ids contain slashes (`/v2/apps/shop/web/restart`; a
//! suffix `restart`, `promote`, `tasks`, `versions` names the action, not
//! an app); `?force=true` cancels a running deployment (default false,
//! but true for DELETE of an app, as Marathon); PUT merges the body into
//! the current definition (`partialUpdate=true`, Marathon's default;
//! `partialUpdate=false` replaces it) and creates an unknown app; a PUT
//! body `{"version": "..."}` (with at most `id` beside it) is a rollback.
//! Errors: 422 `{"message": "Object is not valid", "details": [{"path",
//! "errors"}]}`, 404 `{"message": "App '/x' does not exist"}`, 409
//! `{"message": "App is locked by one or more deployments...",
//! "deployments": [{"id"}]}`, 400 `{"message": "Invalid JSON", "details"}`
//! with the line and column, 413 over [`MAX_BODY_BYTES`], 415 for a body
//! that is neither JSON (`application/json`, `*+json`, or no content
//! type) nor YAML (`application/yaml`, berth's), 503 when the backend
//! cannot answer.
//!
//! Not served: `/v2/groups`, `/v2/pods`, `/v2/queue`, `/v2/events`, PUT
//! and PATCH of `/v2/apps` (several apps at once), killing tasks, the
//! `label` filter (refused with 400). `embed` (repeatable):
//! `apps.tasks` / `app.tasks` adds each app's `tasks`,
//! `apps.lastTaskFailure` each app's last failed task (one app's
//! `lastTaskFailure` is always embedded, as Marathon's); counts and
//! deployments are always embedded (`apps.counts`, `apps.deployments` are
//! accepted); any other value is refused with 400.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_scheduler_core::error::quoted;
use serde_json::{Value, json};

use crate::app::{AppDefinition, AppId};
use crate::error::{Invalid, OpError};
use crate::state::{DeploymentId, Op, Request};
use crate::time::Timestamp;

mod backend;
pub mod grpc;
mod memory;
mod render;
mod request;

use request::{Refusal, app_id, body_value, definition, failed, flag, message, op_failed, reply};

pub use backend::{
    AppStatus, BackendError, DeploymentInfo, FrameworkInfo, InstanceInfo, LastFailure,
    OneDeployment, ServiceBackend, TaskCounts, app_status, deployment_info, find_deployment,
};
pub use memory::InMemory;

#[cfg(test)]
mod tests;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

type Q = Query<HashMap<String, String>>;

/// The API's routes over `backend`.
pub fn router<B: ServiceBackend>(backend: Arc<B>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/v2/info", get(info::<B>))
        .route("/v2/apps", get(list_apps::<B>).post(create_app::<B>))
        .route(
            "/v2/apps/{*rest}",
            get(get_under::<B>)
                .put(put_app::<B>)
                .patch(patch_app::<B>)
                .delete(delete_app::<B>)
                .post(post_under::<B>),
        )
        .route("/v2/tasks", get(all_tasks::<B>))
        .route("/v2/deployments", get(deployments::<B>))
        .route(
            "/v2/deployments/{id}",
            get(one_deployment::<B>).delete(cancel_deployment::<B>),
        )
        .route("/v2/plan", post(plan::<B>))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "no such resource").into_response() })
        .with_state(backend)
}

fn location(id: &AppId) -> HeaderValue {
    HeaderValue::from_str(&format!("/v2/apps{id}")).unwrap_or(HeaderValue::from_static("/v2/apps"))
}

fn with_deployment_header(mut r: Response, d: Option<&DeploymentId>) -> Response {
    if let Some(v) = d.and_then(|d| HeaderValue::from_str(d.as_str()).ok()) {
        r.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    r
}

async fn info<B: ServiceBackend>(State(b): State<Arc<B>>) -> Response {
    match b.info().await {
        Ok(i) => reply(
            StatusCode::OK,
            json!({
                "name": "berth-service",
                "version": env!("CARGO_PKG_VERSION"),
                "buildref": "unknown",
                "elected": i.elected,
                "leader": i.leader,
                "frameworkId": i.framework_id,
                "marathon_config": { "framework_name": "berth-service" },
                "http_config": {},
            }),
        ),
        Err(e) => failed(e).into_response(),
    }
}

/// What an app's JSON embeds besides its counts and deployments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Embed {
    /// Its `tasks`.
    tasks: bool,
    /// Its `lastTaskFailure`, if it has one.
    last_task_failure: bool,
}

/// Marathon's `embed` parameters (`prefix` is `apps` or `app`) added to
/// `embed`; a value berth cannot embed is refused.
fn embeds(pairs: &[(String, String)], prefix: &str, mut embed: Embed) -> Result<Embed, Refusal> {
    for (_, v) in pairs.iter().filter(|(k, _)| k == "embed") {
        match v.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
            Some("tasks") => embed.tasks = true,
            Some("lastTaskFailure") => embed.last_task_failure = true,
            Some("counts" | "deployments") => {}
            _ => {
                return Err(message(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "embed {} is not supported by berth ({prefix}.tasks, {prefix}.lastTaskFailure, {prefix}.counts and {prefix}.deployments are)",
                        quoted(v)
                    ),
                ));
            }
        }
    }
    Ok(embed)
}

/// `app` rendered, with what `embed` asks for.
async fn app_json<B: ServiceBackend>(b: &B, a: &AppStatus, embed: Embed) -> Result<Value, Refusal> {
    let mut v = render::app(a);
    if embed.last_task_failure
        && let Some(f) = &a.last_failure
        && let Some(o) = v.as_object_mut()
    {
        o.insert(
            "lastTaskFailure".into(),
            render::last_failure(&a.version.definition.id, f),
        );
    }
    if embed.tasks {
        let id = &a.version.definition.id;
        let list = b.instances(Some(id)).await.map_err(failed)?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "tasks".into(),
                Value::Array(list.iter().map(render::task).collect()),
            );
        }
    }
    Ok(v)
}

async fn list_apps<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let embed = match embeds(&pairs, "apps", Embed::default()) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let q: HashMap<String, String> = pairs.into_iter().collect();
    if q.contains_key("label") {
        return message(
            StatusCode::BAD_REQUEST,
            "the label filter is not supported by berth",
        )
        .into_response();
    }
    let apps = match b.apps().await {
        Ok(a) => a,
        Err(e) => return failed(e).into_response(),
    };
    let id = q.get("id").map(|s| s.to_lowercase());
    let cmd = q.get("cmd").map(|s| s.to_lowercase());
    let list: Vec<&AppStatus> = apps
        .iter()
        .filter(|a| {
            id.as_ref()
                .is_none_or(|f| a.version.definition.id.to_string().contains(f.as_str()))
        })
        .filter(|a| {
            cmd.as_ref()
                .is_none_or(|f| match &a.version.definition.command {
                    crate::app::Command::Shell(c) => c.to_lowercase().contains(f.as_str()),
                    _ => false,
                })
        })
        .collect::<Vec<_>>();
    let mut out = Vec::with_capacity(list.len());
    for a in list {
        match app_json(&*b, a, embed).await {
            Ok(v) => out.push(v),
            Err(r) => return r.into_response(),
        }
    }
    reply(StatusCode::OK, json!({ "apps": out }))
}

/// `force` and a whole app definition in the body.
async fn definition_body(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(bool, AppDefinition), Refusal> {
    let force = flag(q, "force", false)?;
    let v = body_value(headers, body).await?;
    Ok((force, definition(&v)?))
}

async fn create_app<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (force, def) = definition_body(&q, &headers, body).await?;
        let id = def.id.clone();
        let o = b
            .apply(Request {
                op: Op::Add(def),
                force,
            })
            .await
            .map_err(failed)?;
        let Some(current) = o.current.clone() else {
            return Err(message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the app was not created",
            ));
        };
        let status = AppStatus {
            version: current,
            deployment: o.deployment.clone(),
            counts: TaskCounts::default(),
            last_failure: None,
        };
        let mut r = reply(StatusCode::CREATED, render::app(&status));
        r.headers_mut().insert(header::LOCATION, location(&id));
        Ok(with_deployment_header(r, o.deployment.as_ref()))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Answers a change with Marathon's deployment result.
async fn change<B: ServiceBackend>(b: &B, req: Request) -> Result<Response, Refusal> {
    let o = b.apply(req).await.map_err(failed)?;
    let status = if o.effect == crate::state::Effect::Start {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut r = reply(status, render::deployment_result(&o));
    if status == StatusCode::CREATED {
        r.headers_mut().insert(header::LOCATION, location(&o.app));
    }
    Ok(with_deployment_header(r, o.deployment.as_ref()))
}

async fn get_under<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Path(rest): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let run = async {
        if let Some((app, v)) = rest.rsplit_once("/versions/") {
            let id = app_id(app)?;
            let unknown = || {
                op_failed(OpError::UnknownVersion {
                    app: id.clone(),
                    version: quoted(v).to_string(),
                })
            };
            let at = Timestamp::parse_rfc3339(v).map_err(|_| unknown())?;
            let versions = b.versions(&id).await.map_err(failed)?;
            let versions = versions.ok_or_else(|| op_failed(OpError::UnknownApp(id.clone())))?;
            let found = versions
                .iter()
                .find(|x| x.version == at)
                .ok_or_else(unknown)?;
            return Ok(reply(StatusCode::OK, found.to_marathon_json()));
        }
        if let Some(app) = rest.strip_suffix("/versions") {
            let id = app_id(app)?;
            let versions = b.versions(&id).await.map_err(failed)?;
            let versions = versions.ok_or_else(|| op_failed(OpError::UnknownApp(id)))?;
            let list: Vec<String> = versions
                .iter()
                .rev()
                .map(|v| v.version.to_string())
                .collect();
            return Ok(reply(StatusCode::OK, json!({ "versions": list })));
        }
        if let Some(app) = rest.strip_suffix("/tasks") {
            let id = app_id(app)?;
            if b.app(&id).await.map_err(failed)?.is_none() {
                return Err(op_failed(OpError::UnknownApp(id)));
            }
            return tasks(&*b, Some(&id), None).await;
        }
        let id = app_id(&rest)?;
        // One app embeds its last failure, as Marathon's does.
        let always = Embed {
            tasks: false,
            last_task_failure: true,
        };
        let embed = embeds(&pairs, "app", always)?;
        match b.app(&id).await.map_err(failed)? {
            Some(a) => Ok(reply(
                StatusCode::OK,
                json!({ "app": app_json(&*b, &a, embed).await? }),
            )),
            None => Err(op_failed(OpError::UnknownApp(id))),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn tasks<B: ServiceBackend>(
    b: &B,
    app: Option<&AppId>,
    status: Option<&str>,
) -> Result<Response, Refusal> {
    let list = b.instances(app).await.map_err(failed)?;
    let staging = match status {
        None => None,
        Some("staging") => Some(true),
        Some("running") => Some(false),
        Some(other) => {
            return Err(message(
                StatusCode::BAD_REQUEST,
                format!("status must be running or staging, not {}", quoted(other)),
            ));
        }
    };
    let list: Vec<Value> = list
        .iter()
        .filter(|i| staging.is_none_or(|s| s == (i.state == crate::deploy::InstanceState::Staging)))
        .map(render::task)
        .collect();
    Ok(reply(StatusCode::OK, json!({ "tasks": list })))
}

async fn all_tasks<B: ServiceBackend>(State(b): State<Arc<B>>, Query(q): Q) -> Response {
    tasks(&*b, None, q.get("status").map(String::as_str))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// What PUT and PATCH of `/v2/apps/{id}` start from: the app's id,
/// `force`, and the body.
async fn app_change_body(
    rest: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(AppId, bool, Value), Refusal> {
    let id = app_id(rest)?;
    let force = flag(q, "force", false)?;
    let v = body_value(headers, body).await?;
    Ok((id, force, v))
}

/// The refusal of a body whose `id` is not the app's.
fn wrong_id(id: &AppId) -> Refusal {
    op_failed(Invalid::at("/id", format!("must be {id}, the app's id, or absent")).into())
}

async fn put_app<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Path(rest): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (id, force, v) = app_change_body(&rest, &q, &headers, body).await?;
        let partial = flag(&q, "partialUpdate", true)?;
        let op = if let Some(version) = v.get("version") {
            rollback_op(&id, &v, version)?
        } else if partial {
            Op::Patch {
                id: id.clone(),
                patch: v,
                create: true,
            }
        } else {
            let mut whole = v;
            if let Value::Object(m) = &mut whole {
                m.entry("id").or_insert_with(|| json!(id.to_string()));
            }
            let def = definition(&whole)?;
            if def.id != id {
                return Err(wrong_id(&id));
            }
            Op::Update {
                definition: def,
                create: true,
            }
        };
        change(&*b, Request { op, force }).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Marathon's rollback: a PUT body of `version` and at most `id`.
fn rollback_op(id: &AppId, body: &Value, version: &Value) -> Result<Op, Refusal> {
    let invalid = |path: &str, m: String| op_failed(Invalid::at(path, m).into());
    if let Value::Object(m) = body
        && m.keys().any(|k| k != "id" && k != "version")
    {
        return Err(invalid(
            "/version",
            "The 'version' field may only be combined with the 'id' field.".into(),
        ));
    }
    if let Some(given) = body.get("id") {
        let same = given
            .as_str()
            .and_then(|s| AppId::parse(s).ok())
            .is_some_and(|g| g == *id);
        if !same {
            return Err(wrong_id(id));
        }
    }
    let Some(text) = version.as_str() else {
        return Err(invalid("/version", "must be a string".into()));
    };
    let at = Timestamp::parse_rfc3339(text).map_err(|e| invalid("/version", e))?;
    Ok(Op::Rollback {
        id: id.clone(),
        version: at,
    })
}

async fn patch_app<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Path(rest): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (id, force, v) = app_change_body(&rest, &q, &headers, body).await?;
        let op = Op::Patch {
            id,
            patch: v,
            create: false,
        };
        change(&*b, Request { op, force }).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn delete_app<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Path(rest): Path<String>,
    Query(q): Q,
) -> Response {
    let run = async {
        let id = app_id(&rest)?;
        let force = flag(&q, "force", true)?;
        change(
            &*b,
            Request {
                op: Op::Remove { id },
                force,
            },
        )
        .await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn post_under<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Path(rest): Path<String>,
    Query(q): Q,
) -> Response {
    let run = async {
        let force = flag(&q, "force", false)?;
        if let Some(app) = rest.strip_suffix("/restart") {
            let op = Op::Restart { id: app_id(app)? };
            return change(&*b, Request { op, force }).await;
        }
        if let Some(app) = rest.strip_suffix("/promote") {
            let id = app_id(app)?;
            let op = Op::Promote { id: id.clone() };
            let o = b.apply(Request { op, force }).await.map_err(failed)?;
            let running = b.app(&id).await.map_err(failed)?.and_then(|a| a.deployment);
            let body = json!({
                "deploymentId": running.as_ref().map(DeploymentId::as_str),
                "version": o.current.map_or(o.at, |c| c.version).to_string(),
            });
            return Ok(reply(StatusCode::OK, body));
        }
        Err(message(
            StatusCode::NOT_FOUND,
            "POST under /v2/apps/{id} takes /restart or /promote",
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn deployments<B: ServiceBackend>(State(b): State<Arc<B>>) -> Response {
    match b.deployments().await {
        Ok(list) => reply(
            StatusCode::OK,
            Value::Array(list.iter().map(render::deployment).collect()),
        ),
        Err(e) => failed(e).into_response(),
    }
}

/// berth's: one deployment, running (as in the list) or finished (with
/// how it ended), so a client can wait for its end.
async fn one_deployment<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
) -> Response {
    let unknown = || op_failed(OpError::UnknownDeployment(quoted(&id).to_string()));
    let Ok(did) = DeploymentId::parse(&id) else {
        return unknown().into_response();
    };
    match b.deployment(&did).await {
        Ok(Some(OneDeployment::Running(d))) => {
            let mut v = render::deployment(&d);
            v["berth"]["result"] = Value::String("running".into());
            reply(StatusCode::OK, v)
        }
        Ok(Some(OneDeployment::Finished(f))) => reply(
            StatusCode::OK,
            json!({
                "id": f.id.as_str(),
                "affectedApps": [],
                "berth": {
                    "cause": f.cause,
                    "startedAt": f.started_at.to_string(),
                    "finishedAt": f.finished_at.to_string(),
                    "result": f.result,
                },
            }),
        ),
        Ok(None) => unknown().into_response(),
        Err(e) => failed(e).into_response(),
    }
}

async fn cancel_deployment<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    let run = async {
        let force = flag(&q, "force", false)?;
        let unknown = || op_failed(OpError::UnknownDeployment(quoted(&id).to_string()));
        let did = DeploymentId::parse(&id).map_err(|_| unknown())?;
        let req = Request {
            op: Op::CancelDeployment { id: did },
            force,
        };
        if force {
            b.apply(req).await.map_err(failed)?;
            return Ok::<_, Refusal>(StatusCode::ACCEPTED.into_response());
        }
        let o = b.apply(req).await.map_err(failed)?;
        let r = reply(StatusCode::OK, render::deployment_result(&o));
        Ok(with_deployment_header(r, o.deployment.as_ref()))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn plan<B: ServiceBackend>(
    State(b): State<Arc<B>>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (force, def) = definition_body(&q, &headers, body).await?;
        let req = Request {
            op: Op::Update {
                definition: def,
                create: true,
            },
            force,
        };
        let p = b.plan(req).await.map_err(failed)?;
        Ok::<_, Refusal>(reply(StatusCode::OK, json!(p)))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
