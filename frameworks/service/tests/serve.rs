//! The service framework as a process against a real (in-process) master
//! and agent: an app of busybox httpd instances is deployed, served through
//! the router, and rolled to a new version under a steady load without a
//! failed request.

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
