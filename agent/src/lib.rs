//! The berth agent: runs on every machine of the cluster, advertises the
//! machine's resources to the master, launches the tasks the master sends
//! through a containerizer, reports their status updates reliably and serves
//! their logs.
//!
//! What it is:
//!
//! - [`run`]: the daemon. It serves the agent's own gRPC service (`Agent`,
//!   task logs) on the given listener and keeps one bidirectional stream to
//!   a master (`AgentApi.Attach`), dialled by the agent so agents behind NAT
//!   work. It re-registers with its agent id and task list after every
//!   reconnect.
//! - [`AgentConfig`] and [`detect_resources`]: configuration.
//! - [`containerizer`]: the [`containerizer::Containerizer`] trait (launch,
//!   wait, destroy, recover, after Mesos), the `process` implementation and
//!   the `docker` one (bollard; used for tasks with a `container`).
//! - [`status_update`]: the status-update manager, a pure structure — one
//!   ordered queue per task, only the head in flight, resent with backoff
//!   until acknowledged.
//! - [`supervisor`]: task supervisors, the parents of process tasks that
//!   outlive the agent and record their exit statuses
//!   (`berth task-supervisor` runs [`supervisor::run_program`]).
//! - [`checkpoint`]: the checkpoint store (`work_dir/agent.redb`): agent id,
//!   task records and unacknowledged status updates, each write fsynced.
//! - [`health`]: agent-side health checks (HTTP, TCP, command): spec
//!   validation, probes and the check loop.
//!
//! What it is not (yet): no resource isolation for process tasks.
//!
//! Files: sandboxes live in `work_dir/sandboxes/<framework_id>/<task_id>/`,
//! holding the task's `stdout` and `stderr`. A task id relaunched after its
//! earlier run was forgotten gets its sandbox emptied first. A forgotten
//! task's sandbox is deleted once unchanged for
//! [`AgentConfig::sandbox_gc_delay`] (see the `gc` module).

pub mod checkpoint;
pub mod containerizer;
pub mod error;
mod gc;
pub mod health;
pub mod logger;
pub mod status_update;
pub mod supervisor;

mod agent;
mod config;
mod logs;
mod master;
mod transfer;
mod writer;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use agent::{
    REASON_AGENT_SHUTDOWN, REASON_EXITED, REASON_FETCH_FAILED, REASON_FRAMEWORK_REMOVED,
    REASON_HEALTH_CHECK, REASON_HEALTH_CHECK_FAILED, REASON_KILLED_BY_REQUEST,
    REASON_LAUNCH_FAILED, REASON_OOM, REASON_RECOVERY_FAILED, REASON_SIGNALED, REASON_UNKNOWN_TASK,
};
pub use config::{
    AgentConfig, DEFAULT_FETCH_MAX_BYTES, DEFAULT_FETCH_TIMEOUT, DEFAULT_KILL_GRACE,
    DEFAULT_MASTER_TIMEOUT, DEFAULT_PORTS, DEFAULT_SANDBOX_GC_DELAY, DEFAULT_STATUS_RETRY_INITIAL,
    DEFAULT_TRANSFER_RETRY, DEFAULT_UPLOAD_TIMEOUT, MAX_TRANSFER_RETRY, ResourceOverrides,
    STATUS_RETRY_MAX, detect_resources, nothing_to_offer,
};
pub use error::AgentError;

use crate::agent::Agent;
use crate::containerizer::process::ProcessContainerizer;

/// How long shutdown waits for the final status updates to be acknowledged.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);
/// How long the log API gets to finish open streams on shutdown.
const SERVER_STOP: Duration = Duration::from_secs(2);
/// How often status updates are checked for resending.
const RETRY_TICK: Duration = Duration::from_millis(50);

/// Runs an agent until `shutdown` resolves.
///
/// Opens the checkpoint (`work_dir/agent.redb`) and re-adopts the tasks of
/// an earlier run, connects to the Docker Engine when enabled, serves the
/// `Agent` gRPC service (task logs) on `listener` and stays attached to a
/// master. On shutdown it stops accepting launches and returns, leaving
/// tasks running for the next start to re-adopt; with
/// `kill_tasks_on_shutdown` it first kills every task (SIGTERM, grace,
/// SIGKILL) and tries for up to 2 s to deliver the final status updates.
///
/// A failed checkpoint write stops it too (fail closed): it returns at
/// once with the error, leaving its tasks to the next start.
///
/// # Errors
/// An invalid configuration, an unusable work directory, failed resource
/// detection, a failed checkpoint write, or a failure of the gRPC server.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let mut config = config.validate()?;
    config.work_dir =
        std::path::absolute(&config.work_dir).map_err(|source| AgentError::WorkDir {
            path: config.work_dir.clone(),
            source,
        })?;
    let sandboxes = config.work_dir.join("sandboxes");
    tokio::fs::create_dir_all(&sandboxes)
        .await
        .map_err(|source| AgentError::WorkDir {
            path: sandboxes.clone(),
            source,
        })?;
    let base = match &config.resources {
        Some(r) => r.clone(),
        None => detect_resources(&config.work_dir)?,
    };
    let resources = match &config.resource_overrides {
        Some(given) => given.over(&base),
        None => base,
    };
    if let Some(warning) = config::nothing_to_offer(&resources) {
        tracing::warn!("{warning}");
    }
    let hostname = match &config.hostname {
        Some(h) => h.clone(),
        None => hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".to_owned()),
    };
    let local = listener.local_addr().map_err(AgentError::Listener)?;
    let address = config
        .advertise_address
        .clone()
        .unwrap_or_else(|| advertised(local, &hostname));
    tracing::info!(%address, %hostname, %resources, work_dir = %config.work_dir.display(), "agent starting");

    let checkpoint_path = config.work_dir.join(checkpoint::FILE_NAME);
    let checkpoint =
        checkpoint::Checkpoint::open(&checkpoint_path).map_err(AgentError::Checkpoint)?;
    let recovered = checkpoint.load().map_err(AgentError::Checkpoint)?;
    // Resolved once: the Docker containerizer publishes on it, health
    // checks of Docker tasks connect to it.
    config.task_bind = Some(task_bind(config.task_bind, local.ip(), &address));
    let docker = connect_docker(&config).await;
    let process = Arc::new(ProcessContainerizer::with_supervisor(
        config.task_supervisor.clone(),
    ));
    let agent = Arc::new(Agent::new(
        config, &resources, hostname, address, process, docker, checkpoint,
    ));
    let known = recovered.tasks.len();
    if known > 0 || !recovered.agent_id.is_empty() {
        let adopted = agent.recover(recovered).await;
        tracing::info!(tasks = known, adopted, "recovered from the checkpoint");
    } else {
        // Nothing to recover, but Docker containers of an earlier run of
        // this agent that never made it into the checkpoint are orphans.
        agent.recover(recovered).await;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .add_service(berth_proto::agent_server::AgentServer::new(
            logs::LogService::new(Arc::clone(&agent)),
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = server_stop.wait_for(|s| *s).await;
        });
    let mut server = tokio::spawn(server);
    let master = tokio::spawn(master::maintain(Arc::clone(&agent), stop_rx.clone()));
    let retry = {
        let agent = Arc::clone(&agent);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RETRY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => agent.tick(Instant::now()),
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        })
    };

    let gc = {
        let agent = Arc::clone(&agent);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(gc::sweep_interval(agent.config.sandbox_gc_delay));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopped = tokio::select! {
                    _ = tick.tick() => false,
                    _ = stop.wait_for(|s| *s) => true,
                };
                if stopped {
                    break;
                }
                let sweeper = Arc::clone(&agent);
                let sweep = tokio::task::spawn_blocking(move || {
                    sweeper.collect_garbage(std::time::SystemTime::now())
                });
                if let Err(e) = sweep.await {
                    tracing::warn!(error = %e, "a sandbox sweep failed");
                }
            }
        })
    };

    let mut write_failure = None;
    let server_result = tokio::select! {
        () = shutdown => None,
        r = &mut server => Some(r),
        e = agent.writer.failed() => {
            write_failure = Some(e);
            None
        }
    };
    if let Some(r) = &server_result {
        tracing::error!(result = ?r, "agent API server stopped unexpectedly; shutting down");
    }

    // Shutdown: leave the tasks running for the next start to re-adopt, or
    // (when configured) kill every task; then give the final updates a
    // chance. After a failed checkpoint write nothing more can be recorded
    // or reported: the agent stops at once and leaves its tasks to the
    // next start, which recovers them from the last good write.
    let kill = agent.config.kill_tasks_on_shutdown && write_failure.is_none();
    agent.begin_shutdown(kill);
    let max_grace = {
        let core = agent.lock();
        core.tasks
            .values()
            .map(|e| e.task.kill_grace_period_seconds)
            .filter(|s| s.is_finite() && *s > 0.0)
            .fold(agent.config.default_kill_grace.as_secs_f64(), f64::max)
    };
    let kill_deadline =
        Instant::now() + Duration::from_secs_f64(max_grace.min(3600.0)) + Duration::from_secs(2);
    while kill && agent.active_tasks() > 0 && Instant::now() < kill_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_deadline = Instant::now() + SHUTDOWN_DRAIN;
    while kill && !agent.updates_drained() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if kill && !agent.updates_drained() {
        tracing::warn!(
            pending = agent.lock().updates.len(),
            "shutting down with unacknowledged status updates"
        );
    }
    let _ = stop_tx.send(true);
    let _ = master.await;
    let _ = retry.await;
    let _ = gc.await;
    let result = match server_result {
        _ if write_failure.is_some() => Ok(()),
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(AgentError::Server(e)),
        Some(Err(e)) => Err(AgentError::Internal(format!(
            "agent API server task failed: {e}"
        ))),
        None => match tokio::time::timeout(SERVER_STOP, &mut server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(AgentError::Server(e)),
            Ok(Err(e)) => Err(AgentError::Internal(format!(
                "agent API server task failed: {e}"
            ))),
            Err(_) => {
                tracing::warn!("agent API server did not stop in time; aborting open log streams");
                server.abort();
                Ok(())
            }
        },
    };
    // Tasks left running: wait (briefly) for their watchers to let go of
    // the agent, so its checkpoint is closed when `run` returns and an
    // agent started next in this process can open it.
    let release_deadline = Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(&agent) > 1 && Instant::now() < release_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&agent) > 1 {
        tracing::warn!(
            holders = Arc::strong_count(&agent) - 1,
            "agent state still in use at exit"
        );
    }
    agent.writer.close().await;
    if let Some(e) = write_failure.or_else(|| agent.writer.failure()) {
        return Err(AgentError::CheckpointWrite(e));
    }
    result
}

/// The Docker containerizer, when enabled and a daemon answers; otherwise
/// says once why tasks with a container will fail here.
async fn connect_docker(config: &AgentConfig) -> Option<Arc<dyn containerizer::Containerizer>> {
    let task_bind = config
        .task_bind
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if !config.docker {
        tracing::info!("Docker disabled by configuration; running process tasks only");
        return None;
    }
    let owner = config.work_dir.display().to_string();
    match containerizer::docker::DockerContainerizer::connect(owner, config.docker_timeout).await {
        Ok(d) => {
            tracing::info!(%task_bind, "Docker Engine found; tasks with a container run under Docker, their ports published on the task bind address");
            Some(Arc::new(d.with_task_bind(task_bind)))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no usable Docker daemon; running process tasks only (tasks with a container will fail)");
            None
        }
    }
}

/// Where Docker tasks' ports are published: `configured`, else the
/// listener's IP `listen` when it and the `advertised` address (which the
/// service framework's router reaches tasks at) are loopback, else every
/// interface.
fn task_bind(configured: Option<IpAddr>, listen: IpAddr, advertised: &str) -> IpAddr {
    let host = advertised
        .rsplit_once(':')
        .map_or(advertised, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let advertised_loopback =
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    configured.unwrap_or(if listen.is_loopback() && advertised_loopback {
        listen
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    })
}

/// The address others reach the log API at: the listener's address, with the
/// hostname in place of an unspecified IP.
fn advertised(local: SocketAddr, hostname: &str) -> String {
    if local.ip().is_unspecified() {
        format!("{hostname}:{}", local.port())
    } else {
        local.to_string()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn docker_tasks_are_published_where_the_agent_listens_when_loopback() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo2: IpAddr = "127.0.0.2".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let lan: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(task_bind(None, lo, "127.0.0.1:5051"), lo);
        assert_eq!(task_bind(None, lo2, "127.0.0.2:5051"), lo2);
        assert_eq!(task_bind(None, lo, "localhost:5051"), lo);
        assert_eq!(task_bind(None, lo, "[::1]:5051"), lo);
        assert_eq!(task_bind(None, any, "node-1:5051"), any);
        assert_eq!(task_bind(None, lan, "10.0.0.5:5051"), any);
        // Advertised beyond loopback: the router comes from elsewhere.
        assert_eq!(task_bind(None, lo, "node-1.example:5051"), any);
        assert_eq!(task_bind(Some(lan), lo, "127.0.0.1:5051"), lan);
    }

    #[test]
    fn advertised_address() {
        let any: SocketAddr = "0.0.0.0:5051".parse().unwrap();
        assert_eq!(advertised(any, "node-1"), "node-1:5051");
        let local: SocketAddr = "127.0.0.1:5051".parse().unwrap();
        assert_eq!(advertised(local, "node-1"), "127.0.0.1:5051");
    }
}
