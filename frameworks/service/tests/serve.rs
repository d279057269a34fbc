//! The service framework as a process against a real (in-process) master
//! and agent: an app of busybox httpd instances is deployed, served through
//! the router, and rolled to a new version under a steady load without a
//! failed request; a failing canary is rolled back; and the gRPC API
//! follows a real deployment; an app whose command fails shows why; an
//! instance failing its health check is killed after
//! `maxConsecutiveFailures`, never with 0.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Harness, Instances, Load, deployed, http, json_of};
use serde_json::{Value, json};

fn site(version: &str, service_port: u16) -> Value {
    json!({
        "id": "/site",
        "cmd": format!("mkdir -p www && echo {version} > www/index.html && exec busybox httpd -f -p 127.0.0.1:$PORT0 -h www"),
        "cpus": 0.1,
        "mem": 32,
        "instances": 2,
        "portDefinitions": [{"port": service_port, "name": "http"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
                          "gracePeriodSeconds": 10, "intervalSeconds": 2,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 3,
                          "delaySeconds": 1}],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5},
        "backoffSeconds": 1
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_deployed_routed_and_rolled_without_failed_requests() -> anyhow::Result<()> {
    let Some(h) = Harness::start(Instances::Process, "31000-31099").await? else {
        return Ok(());
    };
    let api = h.api;
    let service_port = berth_tests::free_port();
    h.add(&site("v1", service_port), Duration::from_secs(60))
        .await?;
    let front: SocketAddr = format!("127.0.0.1:{service_port}").parse()?;
    let (status, body) = http(front, "GET", "/", None).await?;
    assert_eq!((status, body.trim()), (200, "v1"));
    let (_, tasks) = json_of(api, "GET", "/v2/apps/site/tasks", None).await?;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(2), "{tasks}");

    // A steady load through the router while v2 rolls out.
    let load = Load::start(front, "/", 50, 2);
    let dep = h.update(&site("v2", service_port)).await?;
    let result = deployed(api, &dep, Duration::from_secs(90)).await?;
    assert_eq!(result["state"], "succeeded", "{result}");
    let seen = load.stop().await?;
    let (status, body) = http(front, "GET", "/", None).await?;
    assert_eq!((status, body.trim()), (200, "v2"));
    eprintln!("{}", seen.summary("rolling update under load"));
    assert!(seen.outcomes.len() > 20, "the load ran");
    let failed = seen.failed();
    assert!(
        failed.is_empty(),
        "failed requests during the rollout: {failed:?}"
    );
    h.stop().await
}

/// A CGI page that answers 500 to about one request in `one_in` (never
/// with 0), and a static index for the health check.
fn cgi_site(version: &str, one_in: u32, service_port: u16) -> Value {
    let fail = if one_in == 0 {
        String::new()
    } else {
        format!(
            "if [ $((RANDOM %% {one_in})) = 0 ]; then echo \"Status: 500 Internal Server Error\"; fi\\n"
        )
    };
    let mut app = site(version, service_port);
    app["cmd"] = Value::String(format!(
        "mkdir -p www/cgi-bin && printf '#!/bin/busybox sh\\n{fail}echo \"Content-Type: text/plain\"\\necho\\necho {version}\\n' > www/cgi-bin/page && chmod +x www/cgi-bin/page && echo ok > www/index.html && exec busybox httpd -f -p 127.0.0.1:$PORT0 -h www"
    ));
    app["deployment"] = json!({
        "strategy": "canary",
        "canary": {
            "steps": [{"weight": 20}, {"pause": 60}, {"weight": 100}],
            "analysis": {"intervalSeconds": 3, "minRequests": 5, "maxErrorRate": 0.05}
        }
    });
    app.as_object_mut().map(|o| o.remove("upgradeStrategy"));
    app
}

/// The canary bar in small: a canary that answers 500 to one
/// request in five is rolled back by the router's own measurements, and
/// the stable version goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_one_request_in_five_is_rolled_back() -> anyhow::Result<()> {
    let Some(h) = Harness::start(Instances::Process, "31100-31199").await? else {
        return Ok(());
    };
    let api = h.api;
    let service_port = berth_tests::free_port();
    let front: SocketAddr = format!("127.0.0.1:{service_port}").parse()?;
    h.add(&cgi_site("v1", 0, service_port), Duration::from_secs(60))
        .await?;
    let (status, body) = http(front, "GET", "/cgi-bin/page", None).await?;
    assert_eq!((status, body.trim()), (200, "v1"));

    let load = Load::start(front, "/cgi-bin/page", 50, 2);
    let dep = h.update(&cgi_site("v2", 5, service_port)).await?;
    let started = tokio::time::Instant::now();
    let result = deployed(api, &dep, Duration::from_secs(60)).await?;
    let took = started.elapsed();
    let seen = load.stop().await?;
    assert_eq!(result["state"], "rolledBack", "{result}");
    let errors = seen.failed().len();
    eprintln!(
        "canary rolled back after {took:?}: {} requests, {errors} errors ({:.1} %): {}",
        seen.outcomes.len(),
        100.0 * errors as f64 / seen.outcomes.len().max(1) as f64,
        result["why"]
    );
    // The stable version serves alone again.
    for _ in 0..20 {
        let (status, body) = http(front, "GET", "/cgi-bin/page", None).await?;
        assert_eq!((status, body.trim()), (200, "v1"));
    }
    let (_, app) = json_of(api, "GET", "/v2/apps/site", None).await?;
    assert!(
        app["app"]["cmd"]
            .as_str()
            .unwrap_or_default()
            .contains("echo v1"),
        "{app}"
    );
    h.stop().await
}

/// The gRPC API on the HTTP API's port, over the running framework: an
/// app created with `CreateApp` is followed with `WatchDeployment` to its
/// end, its instances are listed with their agents, and `DeleteApp`'s
/// deployment is followed until the app is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_api_follows_a_real_deployment() -> anyhow::Result<()> {
    use berth_proto::service::v1 as pb;
    let Some(h) = Harness::start(Instances::Process, "31800-31899").await? else {
        return Ok(());
    };
    let mut c = pb::service_client::ServiceClient::connect(format!("http://{}", h.api)).await?;
    let created = c
        .create_app(pb::CreateAppRequest {
            definition: Some(pb::Definition {
                text: site("v1", berth_tests::free_port()).to_string(),
                format: pb::DefinitionFormat::Json as i32,
            }),
            force: false,
        })
        .await?
        .into_inner();
    let dep = created.deployment_id.expect("a deployment");
    let follow = |c: &mut pb::service_client::ServiceClient<_>, id: String| {
        let mut c = c.clone();
        async move {
            let mut stream = c
                .watch_deployment(pb::WatchDeploymentRequest { deployment_id: id })
                .await?
                .into_inner();
            let mut seen = Vec::new();
            let deadline = Duration::from_secs(60);
            while let Some(m) = tokio::time::timeout(deadline, stream.message()).await?? {
                seen.push(m);
            }
            anyhow::Ok(seen)
        }
    };
    let seen = follow(&mut c, dep.clone()).await?;
    let last = seen.last().expect("at least the end");
    let end = last.finished.clone().expect("the stream ends with the end");
    assert_eq!(end.state, pb::OutcomeState::Succeeded as i32, "{seen:?}");
    assert!(seen.len() > 1, "progress came before the end: {seen:?}");
    assert!(
        seen.iter().all(|m| m.id == dep && m.app_id == "/site"),
        "{seen:?}"
    );

    let instances = c
        .list_instances(pb::ListInstancesRequest {
            app_id: "/site".into(),
        })
        .await?
        .into_inner()
        .instances;
    assert_eq!(instances.len(), 2, "{instances:?}");
    for i in &instances {
        assert!(!i.agent_id.is_empty() && !i.host.is_empty(), "{i:?}");
        assert_eq!(i.ports.len(), 1, "{i:?}");
        assert_eq!(i.healthy, Some(true), "{i:?}");
    }
    let gone = c
        .delete_app(pb::DeleteAppRequest {
            app_id: "/site".into(),
            force: None,
        })
        .await?
        .into_inner();
    let seen = follow(&mut c, gone.deployment_id.expect("a removal")).await?;
    let end = seen.last().and_then(|m| m.finished.clone());
    assert_eq!(
        end.map(|e| e.state),
        Some(pb::OutcomeState::Succeeded as i32),
        "{seen:?}"
    );
    let left = c
        .list_apps(pb::ListAppsRequest::default())
        .await?
        .into_inner();
    assert!(left.apps.is_empty(), "{left:?}");
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_whose_command_exits_at_once_shows_its_last_task_failure() -> anyhow::Result<()> {
    let Some(h) = Harness::start(Instances::Process, "31900-31949").await? else {
        return Ok(());
    };
    let api = h.api;
    let app = json!({
        "id": "/broken", "cmd": "exit 3", "cpus": 0.1, "mem": 16, "instances": 1,
        "backoffSeconds": 1, "maxLaunchDelaySeconds": 2,
        // A health check: the deployment waits for an instance that never
        // gets healthy.
        "portDefinitions": [{"port": berth_tests::free_port(), "name": "http"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0}],
    });
    let (status, created) = json_of(api, "POST", "/v2/apps", Some(&app)).await?;
    assert_eq!(status, 201, "{created}");
    let failure = last_task_failure(api, "/broken").await?;
    eprintln!("lastTaskFailure: {failure}");
    assert_eq!(failure["appId"], "/broken", "{failure}");
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    let message = failure["message"].as_str().unwrap_or_default();
    assert!(message.contains("status 3"), "{failure}");
    let task = failure["taskId"].as_str().unwrap_or_default();
    assert!(task.starts_with("broken."), "{failure}");
    assert!(
        !failure["host"].as_str().unwrap_or_default().is_empty(),
        "{failure}"
    );
    // The list embeds it when asked; the waiting deployment shows it.
    let (_, list) = json_of(api, "GET", "/v2/apps?embed=apps.lastTaskFailure", None).await?;
    assert_eq!(
        list["apps"][0]["lastTaskFailure"]["appId"], "/broken",
        "{list}"
    );
    let (_, plain) = json_of(api, "GET", "/v2/apps", None).await?;
    assert!(plain["apps"][0].get("lastTaskFailure").is_none(), "{plain}");
    let (_, deployments) = json_of(api, "GET", "/v2/deployments", None).await?;
    let progress = &deployments[0]["berth"];
    assert_eq!(
        progress["lastFailure"]["state"], "TASK_FAILED",
        "{deployments}"
    );
    let (status, gone) = json_of(api, "DELETE", "/v2/apps/broken?force=true", None).await?;
    assert_eq!(status, 200, "{gone}");
    h.stop().await
}

/// The app `id`'s `lastTaskFailure`, once it has one (within 30 s).
async fn last_task_failure(api: SocketAddr, id: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, one) = json_of(api, "GET", &format!("/v2/apps{id}"), None).await?;
        let f = &one["app"]["lastTaskFailure"];
        if !f.is_null() {
            return Ok(f.clone());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no lastTaskFailure: {one}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The app `id` of one `sleep` instance whose TCP health check never
/// passes (nothing listens on its port), probed every 2 s from the
/// start, killed after `failures` in a row (never for 0).
fn never_healthy(id: &str, failures: u32) -> Value {
    json!({
        "id": id, "cmd": "sleep 100000", "cpus": 0.05, "mem": 16, "instances": 1,
        "backoffSeconds": 60, "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 0,
                          "delaySeconds": 0, "intervalSeconds": 2, "timeoutSeconds": 1,
                          "maxConsecutiveFailures": failures}],
    })
}

/// The app's instances' task ids.
async fn task_ids(api: SocketAddr, id: &str) -> anyhow::Result<Vec<String>> {
    let (_, t) = json_of(api, "GET", &format!("/v2/apps{id}/tasks"), None).await?;
    Ok(t["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect())
}

/// `maxConsecutiveFailures` end to end: the agent kills an instance after
/// that many failed checks in a row (not at the first), the framework
/// shows why and replaces it after the backoff; with 0 the failing
/// instance is never killed. A 0 grace period is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_killed_after_max_consecutive_failures_only() -> anyhow::Result<()> {
    let Some(h) = Harness::start(Instances::Process, "31950-31999").await? else {
        return Ok(());
    };
    let api = h.api;
    for app in [never_healthy("/three", 3), never_healthy("/never", 0)] {
        let (status, created) = json_of(api, "POST", "/v2/apps", Some(&app)).await?;
        assert_eq!(status, 201, "{created}");
    }
    let started = tokio::time::Instant::now();
    let failure = last_task_failure(api, "/three").await?;
    let took = started.elapsed();
    eprintln!("killed after {took:?}: {failure}");
    let message = failure["message"].as_str().unwrap_or_default();
    assert!(message.contains("failed 3 times in a row"), "{failure}");
    let task = failure["taskId"].as_str().unwrap_or_default();
    assert!(
        task.starts_with("three.") && task.ends_with(".1"),
        "{failure}"
    );
    // Three checks 2 s apart, the first at once: not at the first.
    assert!(took >= Duration::from_secs(3), "killed after {took:?}");
    // With the agent's default grace period (10 s) instead of none, the
    // third failure would come after 14 s.
    assert!(took < Duration::from_secs(12), "killed after {took:?}");
    // The instance that is never killed still runs its first task, failing
    // (by now more than 3 times in a row).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let never = task_ids(api, "/never").await?;
    assert_eq!(never.len(), 1, "{never:?}");
    assert!(never[0].ends_with(".1"), "{never:?}");
    let (_, one) = json_of(api, "GET", "/v2/apps/never", None).await?;
    assert!(one["app"]["lastTaskFailure"].is_null(), "{one}");
    assert_eq!(one["app"]["tasksHealthy"], 0, "{one}");
    for id in ["three", "never"] {
        let (status, gone) =
            json_of(api, "DELETE", &format!("/v2/apps/{id}?force=true"), None).await?;
        assert_eq!(status, 200, "{gone}");
    }
    h.stop().await
}
