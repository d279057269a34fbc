//! The berth master.
//!
//! The master keeps the registry of agents, frameworks and tasks (a state
//! machine of [`registry::Command`]s, persisted in redb by [`store`]), runs
//! the allocator of `berth-scheduler-core`, makes resource offers to
//! frameworks, and serves three gRPC services on one port: the scheduler
//! API (frameworks), the agent API (agent-initiated streams) and the
//! operator API (the `berth` CLI).
//!
//! This crate is a library; the `berth master` and `berth dev` commands run
//! it with [`run`]. It is a single node today; Raft replication of the same
//! command log is the next step.

pub mod config;
mod core;
pub mod error;
pub mod raft;
pub mod registry;
mod service;
pub mod store;

use std::future::Future;

use berth_proto as pb;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

pub use config::MasterConfig;
pub use error::MasterError;

use crate::core::Core;
use crate::service::{AgentService, CoreHandle, OperatorService, SchedulerService};

/// Runs a master on `listener` until `shutdown` resolves, then stops
/// gracefully: streams are closed, and everything acknowledged is already
/// on disk.
///
/// # Errors
/// [`MasterError`] if the configuration is invalid, the registry cannot be
/// opened, or a registry write fails (the master stops rather than diverge
/// from its disk).
pub async fn run(
    listener: TcpListener,
    config: MasterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let config = config.validate()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let path = config.data_dir.join("registry.redb");
    let max_completed = config.max_completed_tasks;
    let (store, recovered) =
        tokio::task::spawn_blocking(move || store::Store::open(&path, max_completed))
            .await
            .map_err(|e| MasterError::Server(e.to_string()))??;
    let local = listener.local_addr()?;
    let address = config
        .advertise_address
        .clone()
        .unwrap_or_else(|| local.to_string());
    let master_id = format!(
        "master-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    info!(
        %master_id, %address, index = recovered.index,
        frameworks = recovered.registry.frameworks().count(),
        agents = recovered.registry.agents().count(),
        tasks = recovered.registry.tasks().count(),
        "master starting"
    );
    let core = Core::new(
        config,
        master_id,
        address,
        store,
        recovered.registry,
        recovered.index,
        recovered.since_snapshot,
    );
    let (req_tx, req_rx) = mpsc::channel(4096);
    let (stop_tx, stop_rx) = oneshot::channel();
    let core_task = tokio::spawn(core.run(req_rx, stop_rx));
    let handle = CoreHandle::new(req_tx);

    // When shutdown fires, stop the core first: it drops every stream's
    // sender, so the long-lived streams end and the server can drain.
    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(());
        let _ = server_stop_tx.send(());
    });

    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(pb::scheduler_server::SchedulerServer::new(
            SchedulerService(handle.clone()),
        ))
        .add_service(pb::agent_api_server::AgentApiServer::new(AgentService(
            handle.clone(),
        )))
        .add_service(pb::operator_server::OperatorServer::new(OperatorService(
            handle,
        )))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = server_stop_rx.await;
        });

    let mut core_task = core_task;
    tokio::select! {
        served = server => {
            served.map_err(|e| MasterError::Server(e.to_string()))?;
            match core_task.await {
                Ok(result) => result,
                Err(e) => Err(MasterError::Server(format!("core task: {e}"))),
            }
        }
        finished = &mut core_task => {
            // The core stopped on its own: a fatal storage error.
            match finished {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(MasterError::Server(format!("core task: {e}"))),
            }
        }
    }
}
