//! Service containers of a task (GitLab CI's `services:`), as GitLab's
//! Docker executor runs them.
//!
//! - Before the task: a user-defined bridge network of its own,
//!   [`network_name`] (from the berth container id, which is unique per
//!   run: a task id may hold characters a network name cannot), labelled
//!   like the task's container. Each service's image is made present, then
//!   the service runs as container [`service_container_name`] on that
//!   network with its aliases as network-scoped aliases (Docker's embedded
//!   DNS resolves them for the task), its environment, entrypoint and
//!   command, labelled like the task's container plus [`LABEL_SERVICE`].
//!   A line per service goes into the task's `stdout` ("Starting service
//!   ..."). After a short settle time ([`SERVICE_SETTLE`]), every service
//!   must still run: one that exited fails the launch with its status and its
//!   last log lines. Services' own output is not copied into the task's log
//!   (GitLab does not either).
//! - The task's container joins the same network and carries
//!   [`LABEL_SERVICES`], so a re-adopted one is known to have services.
//! - After: when the task's container exits (its watcher sees it, whether
//!   it ended, was killed or timed out), before its end is published, its
//!   services and its network are removed; `cleanup` does it again (no-op
//!   when done). A launch that fails removes what it made.
//! - After an agent restart, recovery removes service containers and
//!   networks carrying this agent's owner label whose task container was
//!   not re-adopted.
//!
//! Not done: GitLab also waits (up to 30 s) until a service listens on its
//! image's first exposed port; berth waits only until it runs.

use bollard::models::{EndpointSettings, NetworkCreateRequest, NetworkingConfig};
use bollard::query_parameters::ListNetworksOptionsBuilder;

use super::*;
use crate::containerizer::ServiceSpec;

/// Label on a service container: its index among the task's services.
pub const LABEL_SERVICE: &str = "berth.service";
/// Label on a task's container and network: how many services it has.
pub const LABEL_SERVICES: &str = "berth.services";
/// How long services run before they are checked and the task starts.
const SERVICE_SETTLE: Duration = Duration::from_millis(300);
/// How many of a failed service's last log lines its error quotes.
const SERVICE_LOG_LINES: usize = 20;

/// The Docker network of the services of berth container `id`.
#[must_use]
pub fn network_name(id: &ContainerId) -> String {
    format!("berth-net-{id}")
}

/// The Docker name of service `index` of berth container `id`.
#[must_use]
pub fn service_container_name(id: &ContainerId, index: usize) -> String {
    format!("berth-{id}-service-{index}")
}

/// The labels every container of a task carries.
fn task_labels(spec: &LaunchSpec, owner: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_OWNER.to_owned(), owner.to_owned()),
        (LABEL_AGENT_ID.to_owned(), spec.agent_id.clone()),
        (LABEL_FRAMEWORK_ID.to_owned(), spec.framework_id.clone()),
        (LABEL_TASK_ID.to_owned(), spec.task_id.clone()),
        (LABEL_CONTAINER_ID.to_owned(), spec.container_id.0.clone()),
    ])
}

/// A started service: Docker's id and what the messages name it by.
struct Started {
    docker_id: String,
    what: String,
}

impl DockerContainerizer {
    /// Creates the task's network and starts its services on it; `None`
    /// for a task without services. On failure, removes what it made.
    pub(super) async fn start_services(
        &self,
        spec: &LaunchSpec,
        container: &ContainerSpec,
    ) -> Result<Option<String>, ContainerError> {
        if container.services.is_empty() {
            return Ok(None);
        }
        for s in &container.services {
            self.ensure_image(&s.image).await.map_err(|e| {
                ContainerError::Docker(format!("service {}: {}", s.image, bare(&e)))
            })?;
        }
        let network = network_name(&spec.container_id);
        let mut labels = task_labels(spec, &self.owner);
        labels.insert(
            LABEL_SERVICES.to_owned(),
            container.services.len().to_string(),
        );
        self.call(self.docker.create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(labels),
            ..Default::default()
        }))
        .await
        .map_err(|e| {
            ContainerError::Docker(format!("creating the services' network {network}: {e}"))
        })?;
        match self.run_services(spec, container, &network).await {
            Ok(()) => Ok(Some(network)),
            Err(e) => {
                remove_task_services(
                    &self.docker,
                    &self.owner,
                    &spec.container_id,
                    self.call_timeout,
                )
                .await;
                Err(e)
            }
        }
    }

    async fn run_services(
        &self,
        spec: &LaunchSpec,
        container: &ContainerSpec,
        network: &str,
    ) -> Result<(), ContainerError> {
        let mut started = Vec::with_capacity(container.services.len());
        for (index, s) in container.services.iter().enumerate() {
            let what = format!(
                "{} as {}",
                s.image,
                if s.aliases.is_empty() {
                    "(no alias)".to_owned()
                } else {
                    s.aliases.join(", ")
                }
            );
            let body = service_body(spec, s, index, network, &self.owner);
            let name = service_container_name(&spec.container_id, index);
            let failed = |e: CallError| {
                ContainerError::Docker(format!("starting service {what} failed: {e}"))
            };
            let created = self
                .call(self.docker.create_container(
                    Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                    body,
                ))
                .await
                .map_err(failed)?;
            self.call(self.docker.start_container(&created.id, None))
                .await
                .map_err(failed)?;
            append_line(spec, &format!("Starting service {what} ...\n")).await;
            started.push(Started {
                docker_id: created.id,
                what,
            });
        }
        // A service that fails at once has exited by then (and a quick
        // one is listening).
        tokio::time::sleep(SERVICE_SETTLE).await;
        for s in &started {
            self.check_running(s).await?;
        }
        Ok(())
    }

    /// An error if service `s` is no longer running, with its last output.
    async fn check_running(&self, s: &Started) -> Result<(), ContainerError> {
        let info = self
            .call(self.docker.inspect_container(&s.docker_id, None))
            .await?;
        let term = match observe(info.state.as_ref()) {
            Observed::Running => return Ok(()),
            Observed::Created => Termination::Unknown,
            Observed::Exited(t) => t,
        };
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&SERVICE_LOG_LINES.to_string())
            .build();
        let mut logs = self.docker.logs(&s.docker_id, Some(options));
        let mut text = Vec::new();
        let read = async {
            while let Some(Ok(item)) = logs.next().await {
                text.extend_from_slice(&item.into_bytes());
            }
        };
        let _ = tokio::time::timeout(self.call_timeout, read).await;
        let text = String::from_utf8_lossy(&text);
        let text = text.trim_end();
        Err(ContainerError::Docker(format!(
            "service {} {term} before the job started; {}",
            s.what,
            if text.is_empty() {
                "it wrote nothing".to_owned()
            } else {
                format!("its last output:\n{text}")
            }
        )))
    }

    /// Removes service containers and networks with this agent's owner
    /// label whose task container is not in `adopted`.
    pub(super) async fn remove_orphan_services(
        &self,
        adopted: &HashSet<String>,
    ) -> Result<(), ContainerError> {
        let owner = format!("{LABEL_OWNER}={}", self.owner);
        let filters = HashMap::from([("label", vec![owner.clone(), LABEL_SERVICE.to_owned()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        for summary in self
            .call(self.docker.list_containers(Some(options)))
            .await?
        {
            let labels = summary.labels.unwrap_or_default();
            let task = labels.get(LABEL_CONTAINER_ID);
            if labels.get(LABEL_OWNER) != Some(&self.owner)
                || task.is_some_and(|t| adopted.contains(t))
            {
                continue;
            }
            if let Some(docker_id) = summary.id {
                tracing::warn!(docker_id, container = ?task, "removing orphan service container: its task was not recovered");
                self.remove_quietly(&docker_id).await;
            }
        }
        let filters = HashMap::from([("label", vec![owner])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        for net in self.call(self.docker.list_networks(Some(options))).await? {
            let labels = net.labels.unwrap_or_default();
            let task = labels.get(LABEL_CONTAINER_ID);
            if labels.get(LABEL_OWNER) != Some(&self.owner)
                || task.is_some_and(|t| adopted.contains(t))
            {
                continue;
            }
            if let Some(name) = net.name {
                tracing::warn!(network = %name, container = ?task, "removing orphan services network: its task was not recovered");
                remove_network(&self.docker, &name, self.call_timeout).await;
            }
        }
        Ok(())
    }
}

/// An error's text without the `docker: ` its display starts with.
fn bare(e: &ContainerError) -> String {
    match e {
        ContainerError::Docker(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The create request of service `index`.
pub(super) fn service_body(
    spec: &LaunchSpec,
    s: &ServiceSpec,
    index: usize,
    network: &str,
    owner: &str,
) -> ContainerCreateBody {
    let mut labels = task_labels(spec, owner);
    labels.insert(LABEL_SERVICE.to_owned(), index.to_string());
    ContainerCreateBody {
        image: Some(s.image.clone()),
        cmd: (!s.command.is_empty()).then(|| s.command.clone()),
        entrypoint: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
        env: Some(s.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_owned(),
                EndpointSettings {
                    aliases: Some(s.aliases.clone()),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// Appends a line of the agent's to the task's `stdout` (masked as the
/// task's output is); failures are logged.
async fn append_line(spec: &LaunchSpec, line: &str) {
    let mut masker = Masker::new(&spec.masked_values);
    let mut bytes = masker.push(line.as_bytes());
    bytes.extend(masker.finish());
    let path = spec.sandbox.join("stdout");
    let write = async {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        f.write_all(&bytes).await?;
        f.flush().await
    };
    if let Err(e) = write.await {
        tracing::warn!(path = %path.display(), error = %e, "cannot write to the task's stdout");
    }
}

/// Removes the service containers and the network of berth container
/// `id`; failures are logged (recovery retries what is left).
pub(super) async fn remove_task_services(
    docker: &Docker,
    owner: &str,
    id: &ContainerId,
    call_timeout: Duration,
) {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_OWNER}={owner}"),
            format!("{LABEL_CONTAINER_ID}={id}"),
            LABEL_SERVICE.to_owned(),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    match bounded(call_timeout, docker.list_containers(Some(options))).await {
        Ok(list) => {
            for docker_id in list.into_iter().filter_map(|c| c.id) {
                let options = RemoveContainerOptionsBuilder::new().force(true).build();
                match bounded(
                    call_timeout,
                    docker.remove_container(&docker_id, Some(options)),
                )
                .await
                {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        tracing::warn!(docker_id, container = %id, error = %e, "removing a service container failed");
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "listing the task's service containers failed");
        }
    }
    remove_network(docker, &network_name(id), call_timeout).await;
}

/// Removes a network; one that is gone is fine, failures are logged.
async fn remove_network(docker: &Docker, name: &str, call_timeout: Duration) {
    match bounded(call_timeout, docker.remove_network(name)).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => {
            tracing::warn!(network = name, error = %e, "removing the services' network failed")
        }
    }
}
