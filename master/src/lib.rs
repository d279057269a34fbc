//! The berth master.
//!
//! The master keeps the registry of agents, frameworks and tasks (a state
//! machine of [`registry::Command`]s, replicated by Raft in [`raft`]), runs
//! the allocator of `berth-scheduler-core`, makes resource offers to
//! frameworks, and serves three gRPC services on one port: the scheduler
//! API (frameworks), the agent API (agent-initiated streams) and the
//! operator API (the `berth` CLI).
//!
//! This crate is a library; the `berth master` and `berth dev` commands run
//! it with [`run`]. Masters form one Raft group (a group of one unless
//! `MasterConfig::peers` names others); only the leader serves.

pub mod config;
mod core;
pub mod entry;
pub mod error;
mod pending;
pub mod raft;
pub mod registry;
mod service;

use std::future::Future;

use berth_proto as pb;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

pub use config::{DEFAULT_OFFER_LIMIT, MasterConfig};
pub use error::MasterError;

use crate::core::Core;
use crate::service::{
    AgentService, CoreHandle, KeyValueService, OperatorService, SchedulerService,
};

/// Runs a master on `listener` until `shutdown` resolves, then stops
/// gracefully: streams are closed, and everything acknowledged is already
/// on disk.
///
/// The master is one member of a Raft group (a group of one unless
/// `config.peers` names others). Its registry is the state machine of the
/// group's log; only the leader serves frameworks and agents.
///
/// # Errors
/// [`MasterError`] if the configuration is invalid, the Raft storage cannot
/// be opened, or a storage write fails (the master stops rather than
/// diverge from its disk).
pub async fn run(
    listener: TcpListener,
    config: MasterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let config = config.validate()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let path = config.data_dir.join("raft.redb");
    let storage = tokio::task::spawn_blocking(move || raft::storage::RaftStorage::open(&path))
        .await
        .map_err(|e| MasterError::Server(e.to_string()))??;
    let voters: Vec<u64> = if config.peers.is_empty() {
        vec![config.id]
    } else {
        config.peers.iter().map(|(id, _)| *id).collect()
    };
    if !storage.is_initialized() && !config.join {
        storage.initialize(&voters)?;
    }
    let (snapshot_index, data) = storage.snapshot_data()?;
    let mut registry = if data.is_empty() {
        registry::Registry::new(config.max_completed_tasks)
    } else {
        registry::Registry::from_snapshot(&data).map_err(|e| {
            MasterError::Corrupt(format!("registry snapshot at {snapshot_index}: {e}"))
        })?
    };
    registry.set_max_completed(config.max_completed_tasks);
    registry.rebuild_indexes();

    let local = listener.local_addr()?;
    let address = config
        .advertise_address
        .clone()
        .unwrap_or_else(|| local.to_string());
    let master_id = format!(
        "master-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    info!(%master_id, raft_id = config.id, %address, snapshot_index, "master starting");

    // Raft: transport, inbound service, node.
    let peers: Vec<(u64, String)> = config
        .peers
        .iter()
        .filter(|(id, _)| *id != config.id)
        .cloned()
        .collect();
    let transport =
        raft::transport::GrpcTransport::new(config.id, peers, config.raft_faults.clone());
    let (inbox_tx, mut inbox_rx) = mpsc::channel(4096);
    let heard = raft::transport::HeardFrom::default();
    transport.set_self_address(&address);
    let raft_service = raft::transport::RaftTransportService::new(
        config.id,
        inbox_tx,
        config.raft_faults.clone(),
        heard.clone(),
    )
    .learning_peers(transport.clone());
    let raft_streams = raft_service.clone();
    let mut node_config = raft::node::NodeConfig::new(config.id);
    node_config.tick = config.raft_tick;
    node_config.election_tick = config.election_ticks;
    node_config.heartbeat_tick = config.heartbeat_ticks;
    let (raft_stop_tx, raft_stop_rx) = oneshot::channel::<()>();
    let (raft_handle, applied, raft_task) =
        raft::node::start(node_config, storage, transport.clone(), async move {
            let _ = raft_stop_rx.await;
        })?;
    {
        let handle = raft_handle.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbox_rx.recv().await {
                handle.step(msg).await;
            }
        });
    }
    if voters == [config.id] && !config.join {
        // A group of one need not wait an election timeout.
        let _ = raft_handle.campaign().await;
    }

    let core = Core::new(
        config,
        master_id,
        address,
        core::RaftParts {
            handle: raft_handle,
            applied,
            transport,
            registry,
            snapshot_index,
            heard,
        },
    );
    let kv_events = core.kv_events();
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
        raft_streams.close_streams();
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
            handle.clone(),
        )))
        .add_service(pb::key_value_server::KeyValueServer::new(
            KeyValueService::new(handle, kv_events),
        ))
        .add_service(raft_service.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = server_stop_rx.await;
        });

    let mut core_task = core_task;
    let result = tokio::select! {
        served = server => {
            match served.map_err(|e| MasterError::Server(e.to_string())) {
                Ok(()) => match core_task.await {
                    Ok(result) => result,
                    Err(e) => Err(MasterError::Server(format!("core task: {e}"))),
                },
                Err(e) => Err(e),
            }
        }
        finished = &mut core_task => {
            // The core stopped on its own: a fatal storage or raft error.
            match finished {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(MasterError::Server(format!("core task: {e}"))),
            }
        }
    };
    let _ = raft_stop_tx.send(());
    let _ = raft_task.await;
    result
}
