//! The service framework's gRPC API, `berth.service.v1.Service`
//! (`proto/proto/berth/service/v1/service.proto`): the twin of the HTTP
//! API in [`super`], over the same [`ServiceBackend`], served on the same
//! port ([`router`] gives axum routes to merge with [`super::router`]'s;
//! gRPC is HTTP/2, and `axum::serve` speaks both).
//!
//! | RPC | HTTP twin |
//! |---|---|
//! | `ListApps` | `GET /v2/apps?id=` |
//! | `GetApp` | `GET /v2/apps/{id}` |
//! | `CreateApp` | `POST /v2/apps` |
//! | `UpdateApp` | `PUT /v2/apps/{id}?partialUpdate=false` (creates only with `allow_missing`) |
//! | `PlanApp` | `POST /v2/plan` |
//! | `DeleteApp` | `DELETE /v2/apps/{id}` |
//! | `ScaleApp` | `PUT /v2/apps/{id}` `{"instances": N}` |
//! | `RestartApp` | `POST /v2/apps/{id}/restart` |
//! | `RollbackApp` | `PUT /v2/apps/{id}` `{"version": V}` |
//! | `PromoteApp` | `POST /v2/apps/{id}/promote` |
//! | `ListVersions`, `GetVersion` | `GET /v2/apps/{id}/versions[/{version}]` |
//! | `ListDeployments`, `GetDeployment` | `GET /v2/deployments[/{id}]` |
//! | `CancelDeployment` | `DELETE /v2/deployments/{id}` |
//! | `ListInstances` | `GET /v2/apps/{id}/tasks`, `GET /v2/tasks` |
//! | `WatchDeployment` (server stream) | `GET /v2/deployments/{id}` polled |
//!
//! Errors ([`convert::status`]): an invalid definition or argument →
//! `INVALID_ARGUMENT` (the message names each field by its path), an
//! unknown app, version or deployment → `NOT_FOUND`, an app that exists →
//! `ALREADY_EXISTS`, Marathon's other 409s (locked by a deployment, a
//! dependency, nothing to promote) → `FAILED_PRECONDITION`: the caller
//! must change something first (pass `force`, wait), so not `ABORTED`,
//! which says "retry the read-modify-write". The backend unavailable →
//! `UNAVAILABLE`.
//!
//! `WatchDeployment` polls the backend every [`WATCH_POLL`] and sends the
//! deployment whenever what it would send changes; it ends after sending
//! the deployment finished. A removal's finished record goes with its
//! app, so a removal seen running and then gone is sent finished
//! (succeeded, at the time the watch noticed): only its end drops the
//! app.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::service::v1 as pb;
use berth_scheduler_core::error::quoted;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::{MAX_BODY_BYTES, OneDeployment, ServiceBackend};
use crate::app::{AppDefinition, AppId, text};
use crate::error::{Invalid, OpError};
use crate::state::{DeploymentId, Op, Request as OpRequest};
use crate::time::Timestamp;

pub mod convert;

#[cfg(test)]
mod tests;

use convert::op_status;
pub use convert::status;

/// The wall clock, for the end of a removal noticed by a watch.
fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_millis(ms)
}

/// How often `WatchDeployment` asks the backend again.
pub const WATCH_POLL: Duration = Duration::from_millis(200);

/// Implements `berth.service.v1.Service` over a backend.
#[derive(Debug)]
pub struct ServiceApi<B> {
    backend: Arc<B>,
}

impl<B> Clone for ServiceApi<B> {
    fn clone(&self) -> Self {
        ServiceApi {
            backend: self.backend.clone(),
        }
    }
}

impl<B: ServiceBackend> ServiceApi<B> {
    /// The API of `backend`.
    pub fn new(backend: Arc<B>) -> ServiceApi<B> {
        ServiceApi { backend }
    }
}

/// The gRPC API as axum routes (`/berth.service.v1.Service/*`), to merge
/// with the HTTP API's routes and serve on the same port.
pub fn router<B: ServiceBackend>(backend: Arc<B>) -> axum::Router {
    use tonic::server::NamedService as _;
    type Server<B> = pb::service_server::ServiceServer<ServiceApi<B>>;
    axum::Router::new().route_service(
        &format!("/{}/{{*rest}}", Server::<B>::NAME),
        Server::new(ServiceApi::new(backend)),
    )
}

/// An app id from a request.
fn app_id(s: &str) -> Result<AppId, Status> {
    AppId::parse(s).map_err(|e| {
        berth_proto::bounded_status(Status::invalid_argument(format!("invalid app id: {e}")))
    })
}

/// A deployment id from a request; an id that cannot be one is unknown.
fn deployment_id(s: &str) -> Result<DeploymentId, Status> {
    DeploymentId::parse(s).map_err(|_| op_status(OpError::UnknownDeployment(quoted(s).to_string())))
}

/// A definition from its text: size, syntax and validity checked, as the
/// HTTP API checks a body.
fn definition(d: Option<pb::Definition>) -> Result<AppDefinition, Status> {
    let d = d.unwrap_or_default();
    if d.text.len() > MAX_BODY_BYTES {
        return Err(Status::invalid_argument(format!(
            "the definition is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let parsed = match pb::DefinitionFormat::try_from(d.format) {
        Ok(pb::DefinitionFormat::Unspecified | pb::DefinitionFormat::Json) => text::json(&d.text),
        Ok(pb::DefinitionFormat::Yaml) => text::yaml(&d.text),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown definition format {}",
                d.format
            )));
        }
    };
    let invalid = |m: String| berth_proto::bounded_status(Status::invalid_argument(m));
    let value = parsed.map_err(|e| invalid(e.to_string()))?;
    AppDefinition::from_value(&value).map_err(|e| invalid(e.to_string()))
}

/// A version from a request; one that is not a time is invalid.
fn version(s: &str) -> Result<Timestamp, Status> {
    Timestamp::parse_rfc3339(s).map_err(|e| op_status(Invalid::at("/version", e).into()))
}

type Reply<T> = Result<Response<T>, Status>;

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Deployment, Status>> + Send>>;

impl<B: ServiceBackend> ServiceApi<B> {
    async fn change(&self, op: Op, force: bool) -> Reply<pb::ChangeResult> {
        let o = self
            .backend
            .apply(OpRequest { op, force })
            .await
            .map_err(status)?;
        Ok(Response::new(convert::change(&o)))
    }

    async fn versions(&self, id: &AppId) -> Result<Vec<crate::app::AppVersion>, Status> {
        self.backend
            .versions(id)
            .await
            .map_err(status)?
            .ok_or_else(|| op_status(OpError::UnknownApp(id.clone())))
    }
}

#[tonic::async_trait]
impl<B: ServiceBackend> pb::service_server::Service for ServiceApi<B> {
    async fn list_apps(
        &self,
        request: Request<pb::ListAppsRequest>,
    ) -> Reply<pb::ListAppsResponse> {
        let filter = request.into_inner().id_contains.to_lowercase();
        let apps = self.backend.apps().await.map_err(status)?;
        let apps = apps
            .iter()
            .filter(|a| {
                a.version
                    .definition
                    .id
                    .to_string()
                    .to_lowercase()
                    .contains(&filter)
            })
            .map(convert::app)
            .collect();
        Ok(Response::new(pb::ListAppsResponse { apps }))
    }

    async fn get_app(&self, request: Request<pb::GetAppRequest>) -> Reply<pb::App> {
        let id = app_id(&request.into_inner().app_id)?;
        match self.backend.app(&id).await.map_err(status)? {
            Some(a) => Ok(Response::new(convert::app(&a))),
            None => Err(op_status(OpError::UnknownApp(id))),
        }
    }

    async fn create_app(&self, request: Request<pb::CreateAppRequest>) -> Reply<pb::ChangeResult> {
        let req = request.into_inner();
        let def = definition(req.definition)?;
        self.change(Op::Add(def), req.force).await
    }

    async fn update_app(&self, request: Request<pb::UpdateAppRequest>) -> Reply<pb::ChangeResult> {
        let req = request.into_inner();
        let definition = definition(req.definition)?;
        let op = Op::Update {
            definition,
            create: req.allow_missing,
        };
        self.change(op, req.force).await
    }

    async fn plan_app(&self, request: Request<pb::PlanAppRequest>) -> Reply<pb::Plan> {
        let req = request.into_inner();
        let definition = definition(req.definition)?;
        let op = Op::Update {
            definition,
            create: true,
        };
        let p = self
            .backend
            .plan(OpRequest {
                op,
                force: req.force,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(convert::plan(&p)))
    }

    async fn delete_app(&self, request: Request<pb::DeleteAppRequest>) -> Reply<pb::ChangeResult> {
        let req = request.into_inner();
        let id = app_id(&req.app_id)?;
        // As Marathon's DELETE: force unless told otherwise.
        self.change(Op::Remove { id }, req.force.unwrap_or(true))
            .await
    }

    async fn scale_app(&self, request: Request<pb::ScaleAppRequest>) -> Reply<pb::ChangeResult> {
        let req = request.into_inner();
        let id = app_id(&req.app_id)?;
        let op = Op::Scale {
            id,
            instances: req.instances,
        };
        self.change(op, req.force).await
    }

    async fn restart_app(
        &self,
        request: Request<pb::RestartAppRequest>,
    ) -> Reply<pb::ChangeResult> {
        let req = request.into_inner();
        let id = app_id(&req.app_id)?;
        self.change(Op::Restart { id }, req.force).await
    }

    async fn rollback_app(
        &self,
        request: Request<pb::RollbackAppRequest>,
    ) -> Reply<pb::ChangeResult> {
        let req = request.into_inner();
        let id = app_id(&req.app_id)?;
        let version = version(&req.version)?;
        self.change(Op::Rollback { id, version }, req.force).await
    }

    async fn promote_app(
        &self,
        request: Request<pb::PromoteAppRequest>,
    ) -> Reply<pb::ChangeResult> {
        let id = app_id(&request.into_inner().app_id)?;
        let mut r = self.change(Op::Promote { id: id.clone() }, false).await?;
        // As the HTTP API: the deployment that goes on.
        let running = self.backend.app(&id).await.map_err(status)?;
        r.get_mut().deployment_id = running
            .and_then(|a| a.deployment)
            .map(|d| d.as_str().to_owned());
        Ok(r)
    }

    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Reply<pb::ListVersionsResponse> {
        let id = app_id(&request.into_inner().app_id)?;
        let versions = self
            .versions(&id)
            .await?
            .iter()
            .rev()
            .map(|v| v.version.to_string())
            .collect();
        Ok(Response::new(pb::ListVersionsResponse { versions }))
    }

    async fn get_version(&self, request: Request<pb::GetVersionRequest>) -> Reply<pb::AppVersion> {
        let req = request.into_inner();
        let id = app_id(&req.app_id)?;
        let unknown = || {
            op_status(OpError::UnknownVersion {
                app: id.clone(),
                version: quoted(&req.version).to_string(),
            })
        };
        let at = Timestamp::parse_rfc3339(&req.version).map_err(|_| unknown())?;
        let versions = self.versions(&id).await?;
        let found = versions
            .iter()
            .find(|v| v.version == at)
            .ok_or_else(unknown)?;
        Ok(Response::new(convert::app_version(found)))
    }

    async fn list_deployments(
        &self,
        _request: Request<pb::ListDeploymentsRequest>,
    ) -> Reply<pb::ListDeploymentsResponse> {
        let list = self.backend.deployments().await.map_err(status)?;
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments: list.iter().map(convert::running).collect(),
        }))
    }

    async fn get_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Reply<pb::Deployment> {
        let given = request.into_inner().deployment_id;
        let id = deployment_id(&given)?;
        match self.backend.deployment(&id).await.map_err(status)? {
            Some(d) => Ok(Response::new(convert::deployment(&d))),
            None => Err(op_status(OpError::UnknownDeployment(
                quoted(&given).to_string(),
            ))),
        }
    }

    async fn cancel_deployment(
        &self,
        request: Request<pb::CancelDeploymentRequest>,
    ) -> Reply<pb::ChangeResult> {
        let req = request.into_inner();
        let id = deployment_id(&req.deployment_id)?;
        self.change(Op::CancelDeployment { id }, req.force).await
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        let given = request.into_inner().app_id;
        let app = if given.is_empty() {
            None
        } else {
            let id = app_id(&given)?;
            if self.backend.app(&id).await.map_err(status)?.is_none() {
                return Err(op_status(OpError::UnknownApp(id)));
            }
            Some(id)
        };
        let list = self.backend.instances(app.as_ref()).await.map_err(status)?;
        Ok(Response::new(pb::ListInstancesResponse {
            instances: list.iter().map(convert::instance).collect(),
        }))
    }

    type WatchDeploymentStream = WatchStream;

    async fn watch_deployment(
        &self,
        request: Request<pb::WatchDeploymentRequest>,
    ) -> Reply<Self::WatchDeploymentStream> {
        let given = request.into_inner().deployment_id;
        let id = deployment_id(&given)?;
        // An unknown deployment fails the call itself.
        let first = self
            .backend
            .deployment(&id)
            .await
            .map_err(status)?
            .ok_or_else(|| op_status(OpError::UnknownDeployment(quoted(&given).to_string())))?;
        let watch = Watch {
            backend: self.backend.clone(),
            id,
            first: Some(first),
            last: None,
            app: String::new(),
            done: false,
        };
        let stream = futures::stream::unfold(watch, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One `WatchDeployment` in progress.
struct Watch<B> {
    backend: Arc<B>,
    id: DeploymentId,
    /// What the call itself read, sent first.
    first: Option<OneDeployment>,
    /// The last message sent.
    last: Option<pb::Deployment>,
    /// The deployment's app, from its running views (a finished one's
    /// record does not name it).
    app: String,
    done: bool,
}

impl<B: ServiceBackend> Watch<B> {
    /// The answer when the deployment is no longer known. A removal's
    /// record goes with its app: once the app is dropped (which only its
    /// removal's end does), the removal is sent finished, succeeded, at
    /// the time the watch noticed. Anything else is `NOT_FOUND`.
    fn vanished(&self) -> Result<pb::Deployment, Status> {
        match &self.last {
            Some(m) if m.finished.is_none() && m.to_version.is_none() => {
                let mut end = m.clone();
                end.progress = None;
                end.finished = Some(pb::Finished {
                    finished_at: wall_clock().to_string(),
                    state: pb::OutcomeState::Succeeded as i32,
                    why: None,
                    by: None,
                });
                Ok(end)
            }
            _ => Err(op_status(OpError::UnknownDeployment(
                self.id.as_str().to_owned(),
            ))),
        }
    }

    /// The next message to send; `None` once the finished deployment was
    /// sent (or an error ended the stream).
    async fn next(&mut self) -> Option<Result<pb::Deployment, Status>> {
        while !self.done {
            let read = match self.first.take() {
                Some(d) => Ok(Some(d)),
                None => {
                    tokio::time::sleep(WATCH_POLL).await;
                    self.backend.deployment(&self.id).await
                }
            };
            let mut message = match read {
                Ok(Some(d)) => convert::deployment(&d),
                Ok(None) => {
                    self.done = true;
                    return Some(self.vanished());
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(status(e)));
                }
            };
            if message.app_id.is_empty() {
                message.app_id.clone_from(&self.app);
            } else {
                self.app.clone_from(&message.app_id);
            }
            if message.finished.is_some() {
                self.done = true;
            }
            if self.last.as_ref() != Some(&message) {
                self.last = Some(message.clone());
                return Some(Ok(message));
            }
        }
        None
    }
}
