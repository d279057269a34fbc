//! Service containers: a task reaches its services by alias on its own
//! network, and nothing of them is left after the task, a failed launch or
//! an agent restart.

use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptionsBuilder};

use super::*;
use crate::containerizer::ServiceSpec;

/// A busybox service serving "hello" over HTTP on port 8080 as `web`.
fn web_service() -> ServiceSpec {
    ServiceSpec {
        image: IMAGE.into(),
        aliases: vec!["berth__busybox".into(), "berth-busybox".into(), "web".into()],
        entrypoint: vec![],
        command: vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p /www && echo \"hello from $WHO\" > /www/index.html && exec httpd -f -p 8080 -h /www"
                .into(),
        ],
        env: vec![("WHO".into(), "the service".into())],
    }
}

fn with_services(services: Vec<ServiceSpec>) -> ContainerSpec {
    let mut c = image(IMAGE);
    c.services = services;
    c
}

/// Launches `command` with the web service; its container id and sandbox.
async fn launch_with_web(fx: &Fixture, command: &str) -> (ContainerId, PathBuf) {
    let s = fx.spec(
        sh(command),
        "cpus:0.1;mem:32",
        with_services(vec![web_service()]),
    );
    let (id, sandbox) = (s.container_id.clone(), s.sandbox.clone());
    fx.c().launch(s).await.unwrap();
    (id, sandbox)
}

/// A new containerizer of the fixture's owner, as after an agent restart.
async fn restarted(fx: &mut Fixture) -> DockerContainerizer {
    drop(fx.c.take());
    DockerContainerizer::connect(fx.owner.clone(), CALL_TIMEOUT)
        .await
        .unwrap()
}

async fn network_exists(docker: &Docker, name: &str) -> bool {
    docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
        .is_ok()
}

/// The containers (any state) labelled with `owner` and berth container
/// `id`.
async fn containers_of(docker: &Docker, owner: &str, id: &ContainerId) -> Vec<String> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_OWNER}={owner}"),
            format!("{LABEL_CONTAINER_ID}={id}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.names.and_then(|n| n.first().cloned()))
        .collect()
}

/// Removes the networks labelled with `owner` (what a failed test left).
async fn remove_networks(docker: &Docker, owner: &str) {
    let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={owner}")])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    for n in docker
        .list_networks(Some(options))
        .await
        .unwrap_or_default()
    {
        if let Some(name) = n.name {
            let _ = docker.remove_network(&name).await;
        }
    }
}

#[test]
fn a_service_is_created_on_the_network_with_its_aliases() {
    let c = with_services(vec![web_service()]);
    let s = spec(Path::new("/work"), sh("true"), "cpus:0.1;mem:32", c);
    let body = crate::containerizer::docker::services::service_body(
        &s,
        &web_service(),
        0,
        "berth-net-x",
        "/owner",
    );
    let labels = body.labels.unwrap();
    assert_eq!(labels[LABEL_OWNER], "/owner");
    assert_eq!(labels[LABEL_CONTAINER_ID], s.container_id.0);
    assert_eq!(labels[LABEL_TASK_ID], "task-1");
    assert_eq!(labels[LABEL_SERVICE], "0");
    assert_eq!(body.env.unwrap(), ["WHO=the service"]);
    assert_eq!(body.cmd.unwrap()[0], "sh");
    assert_eq!(body.entrypoint, None);
    assert_eq!(
        body.host_config.unwrap().network_mode.as_deref(),
        Some("berth-net-x")
    );
    let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
    assert_eq!(
        endpoints["berth-net-x"].aliases.as_deref().unwrap(),
        ["berth__busybox", "berth-busybox", "web"]
    );
}

#[tokio::test]
async fn a_task_reaches_its_service_by_alias_and_nothing_is_left_after() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let (id, sandbox) = launch_with_web(
        &fx,
        "wget -qO- http://web:8080/ && wget -qO- http://berth-busybox:8080/index.html",
    )
    .await;
    let docker = fx.docker();
    let t = fx.c().wait(&id).await.unwrap();
    let stdout = read(sandbox.join("stdout"));
    let stderr = read(sandbox.join("stderr"));
    assert_eq!(t, Termination::Exited(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        "Starting service berth/busybox:latest as berth__busybox, berth-busybox, web ...\n\
         hello from the service\nhello from the service\n"
    );
    // The services and the network are gone once the end is known; only
    // the task's own container waits for the cleanup.
    assert_eq!(
        containers_of(&docker, &fx.owner, &id).await,
        [format!("/{}", container_name(&id))]
    );
    assert!(!network_exists(&docker, &network_name(&id)).await);
    fx.c().cleanup(&id).await;
    assert!(containers_of(&docker, &fx.owner, &id).await.is_empty());
    remove_networks(&docker, &fx.owner).await;
}

#[tokio::test]
async fn a_killed_task_takes_its_services_and_network_along() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let (id, _) = launch_with_web(&fx, "sleep 300").await;
    let docker = fx.docker();
    assert!(network_exists(&docker, &network_name(&id)).await);
    let service = inspect(&docker, &service_container_name(&id, 0))
        .await
        .unwrap();
    assert_eq!(service.state.unwrap().running, Some(true));
    fx.c().destroy(&id, Duration::from_secs(1)).await.unwrap();
    assert!(
        inspect(&docker, &service_container_name(&id, 0))
            .await
            .is_none()
    );
    assert!(!network_exists(&docker, &network_name(&id)).await);
    fx.c().cleanup(&id).await;
    remove_networks(&docker, &fx.owner).await;
}

#[tokio::test]
async fn a_service_that_exits_fails_the_launch_with_its_last_output() {
    let Some(fx) = docker_or_skip().await else {
        return;
    };
    let mut broken = web_service();
    broken.aliases = vec!["db".into()];
    broken.command = vec![
        "sh".into(),
        "-c".into(),
        "echo no database here >&2; exit 3".into(),
    ];
    let s = fx.spec(
        sh("echo the job ran"),
        "cpus:0.1;mem:32",
        with_services(vec![web_service(), broken]),
    );
    let (id, sandbox) = (s.container_id.clone(), s.sandbox.clone());
    let e = fx.c().launch(s).await.unwrap_err().to_string();
    assert_eq!(
        e,
        "docker: service berth/busybox:latest as db exited with status 3 before the job \
         started; its last output:\nno database here"
    );
    let docker = fx.docker();
    assert!(containers_of(&docker, &fx.owner, &id).await.is_empty());
    assert!(!network_exists(&docker, &network_name(&id)).await);
    assert!(!read(sandbox.join("stdout")).contains("the job ran"));
    remove_networks(&docker, &fx.owner).await;
}

#[tokio::test]
async fn recovery_removes_the_services_of_tasks_it_does_not_readopt() {
    let Some(mut fx) = docker_or_skip().await else {
        return;
    };
    let (id, _) = launch_with_web(&fx, "sleep 300").await;
    let docker = fx.docker();
    assert_eq!(containers_of(&docker, &fx.owner, &id).await.len(), 2);
    // The agent restarts and its checkpoint no longer has the task.
    let c = restarted(&mut fx).await;
    assert!(c.recover(Vec::new()).await.unwrap().is_empty());
    assert!(containers_of(&docker, &fx.owner, &id).await.is_empty());
    assert!(!network_exists(&docker, &network_name(&id)).await);
    fx.c = Some(c);
    remove_networks(&docker, &fx.owner).await;
}

#[tokio::test]
async fn recovery_keeps_the_services_of_a_readopted_task() {
    let Some(mut fx) = docker_or_skip().await else {
        return;
    };
    let (id, sandbox) = launch_with_web(&fx, "sleep 2; wget -qO- http://web:8080/").await;
    let docker = fx.docker();
    let c = restarted(&mut fx).await;
    let record = RecoverRecord {
        container_id: id.clone(),
        framework_id: "fw-1".into(),
        task_id: "task-1".into(),
        pid: 0,
        pgid: 0,
        sandbox: sandbox.clone(),
        masked_values: Vec::new(),
    };
    assert_eq!(
        c.recover(vec![record]).await.unwrap(),
        std::slice::from_ref(&id)
    );
    // The service still serves the re-adopted task, and goes with it.
    assert_eq!(c.wait(&id).await.unwrap(), Termination::Exited(0));
    assert!(read(sandbox.join("stdout")).contains("hello from the service"));
    assert!(
        inspect(&docker, &service_container_name(&id, 0))
            .await
            .is_none()
    );
    assert!(!network_exists(&docker, &network_name(&id)).await);
    c.cleanup(&id).await;
    fx.c = Some(c);
    remove_networks(&docker, &fx.owner).await;
}
