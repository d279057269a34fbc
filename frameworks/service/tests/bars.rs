//! Issue 14's traffic bars, end to end: a 4-instance HTTP app in Docker
//! containers (busybox httpd in `berth/busybox`), served through the
//! router under a steady load of about 200 requests/s, is rolled to a new
//! version by each strategy.
//!
//! - A rolling update, a blue/green switch and a canary that promotes
//!   itself through its steps each complete with no failed request.
//! - A canary that answers 500 to one request in five is rolled back by
//!   the router's own measurements within two analysis intervals, and
//!   fewer than 1% of the requests during the rollout see an error.
//! - Blue/green with a preview port serves the new version there (and
//!   the old one on the service port) until `promote`; a canary with a
//!   `{"pause": null}` step waits for `promote`, then completes.
//!
//! The load: [`WORKERS`] workers, each request on a fresh connection; every
//! outcome is recorded (see [`common::Load`]). The tests run one at a time
//! (each holds [`ONE_AT_A_TIME`]): they measure, and two loads at once on
//! a small machine would measure each other. Without Docker (or the
//! image) they are skipped with a notice, and fail under CI. The agent
//! offers host ports from 31600-31799 (other end-to-end tests use
//! 31000-31499), a range of each test's own.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Harness, Instances, Load, Report, deployed, http, json_of, wait_deployment};
use serde_json::{Value, json};

/// Requests per second through the router.
const RATE: u32 = 200;
/// Workers sending them.
const WORKERS: u32 = 16;
/// The load must reach at least this rate for a run to count.
const MIN_RATE: f64 = 150.0;
/// How long a deployment may take here.
const DEPLOY_WITHIN: Duration = Duration::from_secs(60);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The app: 4 instances of busybox httpd in containers (bridge network,
/// container port 8080 on any host port), each serving `/` (the
/// version's name) and `/cgi-bin/page` (the same, answering 500 to every
/// `fail_one_in`-th of an instance's requests, counted in a file: a
/// fixed share rather than a random one, so the error share the test
/// measures does not vary by chance; never with 0), rolled out as
/// `deployment` says.
fn web(version: &str, service_port: u16, fail_one_in: u32, deployment: &Value) -> Value {
    let fail = if fail_one_in == 0 {
        String::new()
    } else {
        format!(
            "n=$(($(cat /tmp/n 2>/dev/null || echo 0) + 1)); echo $n > /tmp/n\\nif [ $((n %% {fail_one_in})) = 0 ]; then echo \"Status: 500 Internal Server Error\"; fi\\n"
        )
    };
    let mut app = json!({
        "id": "/web",
        "cmd": format!(
            "mkdir -p /tmp/www/cgi-bin && echo {version} > /tmp/www/index.html && printf '#!/bin/busybox sh\\n{fail}echo \"Content-Type: text/plain\"\\necho\\necho {version}\\n' > /tmp/www/cgi-bin/page && chmod +x /tmp/www/cgi-bin/page && exec httpd -f -p 8080 -h /tmp/www"
        ),
        "container": {
            "type": "DOCKER",
            "docker": {"image": berth_tests::TEST_IMAGE},
            "portMappings": [{"containerPort": 8080, "hostPort": 0,
                              "servicePort": service_port, "name": "http"}]
        },
        "networks": [{"mode": "container/bridge"}],
        "cpus": 0.25,
        "mem": 32,
        "instances": 4,
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
                          "gracePeriodSeconds": 10, "intervalSeconds": 2,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 3,
                          "delaySeconds": 0}],
        "backoffSeconds": 1,
        "deployment": deployment,
    });
    if deployment["strategy"] == "rolling" {
        app["upgradeStrategy"] = json!({"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5});
    }
    app
}

/// A rollout of `/web` from v1 to v2 under the load, as far as the test
/// drives it.
struct Rollout {
    h: Harness,
    front: SocketAddr,
    load: Load,
    /// The deployment's id.
    id: String,
    /// When v2 was put, on the load's clock.
    put_at: Duration,
}

impl Rollout {
    /// Starts a harness on `ports`, deploys v1 (answering `path`), starts
    /// the load on `path` and puts v2 (its page failing one request in
    /// `fail_one_in`) with `deployment`. `None` when Docker is missing
    /// (outside CI).
    async fn start(
        ports: &str,
        path: &'static str,
        fail_one_in: u32,
        deployment: Value,
    ) -> anyhow::Result<Option<Rollout>> {
        let Some(h) = Harness::start(Instances::Docker, ports).await? else {
            return Ok(None);
        };
        let service_port = berth_tests::free_port();
        let front: SocketAddr = format!("127.0.0.1:{service_port}").parse()?;
        h.add(&web("v1", service_port, 0, &deployment), DEPLOY_WITHIN)
            .await?;
        assert_eq!(answers(front, path, 4).await?, ["v1"; 4]);
        let load = Load::start(front, path, RATE, WORKERS);
        // A steady state before the rollout.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let put_at = load.elapsed();
        let id = h
            .update(&web("v2", service_port, fail_one_in, &deployment))
            .await?;
        Ok(Some(Rollout {
            h,
            front,
            load,
            id,
            put_at,
        }))
    }

    /// Waits until the deployment is paused for `promote`.
    async fn paused(&self) -> anyhow::Result<()> {
        let d = wait_deployment(self.h.api, &self.id, DEPLOY_WITHIN, |d| {
            d["berth"]["state"] == "Paused" || d["berth"]["result"] != "running"
        })
        .await?;
        anyhow::ensure!(d["berth"]["state"] == "Paused", "not paused: {d}");
        Ok(())
    }

    /// Checks that the deployment, paused, does not go on by itself for
    /// `wait`, then promotes it.
    async fn promote_after(&self, wait: Duration) -> anyhow::Result<()> {
        tokio::time::sleep(wait).await;
        let (_, d) = json_of(
            self.h.api,
            "GET",
            &format!("/v2/deployments/{}", self.id),
            None,
        )
        .await?;
        anyhow::ensure!(d["berth"]["state"] == "Paused", "went on unpromoted: {d}");
        let (status, body) = json_of(self.h.api, "POST", "/v2/apps/web/promote", None).await?;
        anyhow::ensure!(status == 200, "POST /v2/apps/web/promote: {status} {body}");
        Ok(())
    }

    /// Waits for the deployment's end, lets the load run a second more and
    /// stops it: the result, when the end was seen (load's clock), and the
    /// load's report.
    async fn finish(self) -> anyhow::Result<(Value, Duration, Report, Harness, SocketAddr)> {
        let result = deployed(self.h.api, &self.id, DEPLOY_WITHIN).await?;
        let done_at = self.load.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = self.load.stop().await?;
        Ok((result, done_at, report, self.h, self.front))
    }
}

/// The bodies of `n` requests of `path` at `front` (an error is a failure).
async fn answers(front: SocketAddr, path: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, body) = http(front, "GET", path, None).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
        out.push(body.trim().to_owned());
    }
    Ok(out)
}

/// How the service port moves from v1 to v2.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shift {
    /// Both answer for a while.
    Gradual,
    /// In one step (blue/green): no request sent after some v2 answer
    /// had arrived got v1. (The router picks a request's backend somewhere
    /// between its sending and its answer; only that order is certain.)
    Atomic,
}

/// The bar for a rollout that must not fail a request: it succeeded, the
/// load held its rate, every request got a 200, both versions answered
/// (as `shift` says) and v2 answers alone afterwards. The harness, to be
/// stopped.
async fn zero_failures(name: &str, shift: Shift, rollout: Rollout) -> anyhow::Result<Harness> {
    let put_at = rollout.put_at;
    let (result, done_at, report, h, front) = rollout.finish().await?;
    let (v1, v2) = (report.span_of("v1"), report.span_of("v2"));
    eprintln!(
        "{} (rollout {:.1}s; last v1 answer sent {:?} after the first v2 one)",
        report.summary(name),
        (done_at - put_at).as_secs_f64(),
        v1.zip(v2)
            .map(|(v1, v2)| v1.1.as_secs_f64() - v2.0.as_secs_f64())
    );
    assert_eq!(result["state"], "succeeded", "{result}");
    assert!(report.rate() >= MIN_RATE, "{}", report.summary(name));
    let failed = report.failed();
    assert!(
        failed.is_empty(),
        "{name}: {} of {} requests failed: {:?}",
        failed.len(),
        report.outcomes.len(),
        &failed[..failed.len().min(20)]
    );
    let (Some(v1), Some(_)) = (v1, v2) else {
        panic!("{name}: not both versions answered: {v1:?} {v2:?}");
    };
    if shift == Shift::Atomic {
        let first_v2_answered = report
            .outcomes
            .iter()
            .filter(|o| o.body() == Some("v2"))
            .map(|o| o.at + o.took)
            .min()
            .unwrap_or_default();
        assert!(
            v1.1 < first_v2_answered,
            "{name}: v1 answered a request sent at {:?}, after v2 had answered at {:?}",
            v1.1,
            first_v2_answered
        );
    }
    assert_eq!(answers(front, "/", 8).await?, ["v2"; 8]);
    Ok(h)
}

/// A whole rollout under the load that must fail no request.
async fn fails_nothing(
    name: &str,
    shift: Shift,
    ports: &str,
    deployment: Value,
) -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(r) = Rollout::start(ports, "/", 0, deployment).await? else {
        return Ok(());
    };
    zero_failures(name, shift, r).await?.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_under_load_fails_no_request() -> anyhow::Result<()> {
    let deployment = json!({"strategy": "rolling"});
    fails_nothing("rolling update", Shift::Gradual, "31600-31629", deployment).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_under_load_fails_no_request() -> anyhow::Result<()> {
    let deployment = json!({"strategy": "blueGreen", "blueGreen": {"keepOldSeconds": 2}});
    fails_nothing(
        "blue/green switch",
        Shift::Atomic,
        "31630-31659",
        deployment,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_promoting_itself_under_load_fails_no_request() -> anyhow::Result<()> {
    let deployment = json!({
        "strategy": "canary",
        "canary": {
            "steps": [{"weight": 25}, {"pause": 2}, {"weight": 50}, {"pause": 2}, {"weight": 100}],
            "analysis": {"intervalSeconds": 2}
        }
    });
    let name = "canary (promotes itself)";
    fails_nothing(name, Shift::Gradual, "31660-31689", deployment).await
}

/// The analysis interval of the failing canary.
const INTERVAL: Duration = Duration::from_secs(5);
/// Besides two intervals, a rollback may take one step of the framework
/// (it looks every second) and the test's polling (100 ms).
const STEP_SLACK: Duration = Duration::from_millis(1500);

/// The canary bar: weight 5% first (as a user would start a canary), the
/// analysis every 5 s with the default thresholds (at least 20 canary
/// requests, at most 5% errors, at most twice the stable version's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_one_request_in_five_is_rolled_back_in_two_intervals() -> anyhow::Result<()>
{
    let _one = ONE_AT_A_TIME.lock().await;
    let deployment = json!({
        "strategy": "canary",
        "canary": {
            "steps": [{"weight": 5}, {"pause": 30}, {"weight": 25}, {"pause": 30}, {"weight": 100}],
            "analysis": {"intervalSeconds": INTERVAL.as_secs()}
        }
    });
    let Some(r) = Rollout::start("31690-31719", "/cgi-bin/page", 5, deployment).await? else {
        return Ok(());
    };
    let put_at = r.put_at;
    let (result, done_at, report, h, front) = r.finish().await?;
    assert_eq!(result["state"], "rolledBack", "{result}");
    let (first_canary, last_canary) = report
        .span_of("v2")
        .ok_or_else(|| anyhow::anyhow!("the canary never answered"))?;
    let canary: Vec<_> = report
        .outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .filter(|(_, body)| body == "v2")
        .collect();
    let canary_errors = canary.iter().filter(|(status, _)| *status != 200).count();
    let to_rollback = done_at.saturating_sub(first_canary);
    let during = report.between(put_at, done_at);
    let errors = during.iter().filter(|o| !o.ok()).count();
    let share = errors as f64 / during.len().max(1) as f64;
    eprintln!(
        "{}; rollout {:.1}s: {} requests, {errors} errors ({:.2}%); the canary answered {} ({canary_errors} errors) for {:.1}s, rolled back {:.1}s after its first request: {}",
        report.summary("failing canary"),
        (done_at - put_at).as_secs_f64(),
        during.len(),
        share * 100.0,
        canary.len(),
        (last_canary - first_canary).as_secs_f64(),
        to_rollback.as_secs_f64(),
        result["why"]
    );
    assert!(report.rate() >= MIN_RATE, "{}", report.summary("canary"));
    assert!(
        to_rollback <= 2 * INTERVAL + STEP_SLACK,
        "rolled back {to_rollback:?} after the canary's first request"
    );
    assert!(share < 0.01, "{errors} of {} requests failed", during.len());
    // Every error is the canary's own 500: the stable version failed none.
    let stable_failed = report
        .outcomes
        .iter()
        .filter(|o| !o.ok() && !matches!(&o.result, Ok((500, body)) if body == "v2"))
        .count();
    assert_eq!(
        stable_failed, 0,
        "requests failed other than the canary's 500s"
    );
    assert_eq!(answers(front, "/cgi-bin/page", 20).await?, ["v1"; 20]);
    h.stop().await
}

/// Blue/green with a preview port: v2 answers there while the service
/// port still answers v1, until `promote` switches the service port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_serves_the_preview_port_until_promoted() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let preview_port = berth_tests::free_port();
    let deployment = json!({
        "strategy": "blueGreen",
        "blueGreen": {"previewPort": preview_port, "keepOldSeconds": 2}
    });
    let Some(r) = Rollout::start("31720-31749", "/", 0, deployment).await? else {
        return Ok(());
    };
    r.paused().await?;
    let preview: SocketAddr = format!("127.0.0.1:{preview_port}").parse()?;
    assert_eq!(answers(preview, "/", 8).await?, ["v2"; 8]);
    assert_eq!(answers(r.front, "/", 8).await?, ["v1"; 8]);
    r.promote_after(Duration::from_secs(2)).await?;
    let h = zero_failures("blue/green with preview", Shift::Atomic, r).await?;
    // The preview port closes with the deployment's end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while http(preview, "GET", "/", None).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the preview port still answers after the deployment ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await
}

/// A canary with `{"pause": null}` waits (both versions serving) until
/// `POST /v2/apps/web/promote`, then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_pausing_for_promote_completes_once_promoted() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let deployment = json!({
        "strategy": "canary",
        "canary": {
            "steps": [{"weight": 25}, {"pause": null}, {"weight": 100}],
            "analysis": {"intervalSeconds": 2}
        }
    });
    let Some(r) = Rollout::start("31750-31779", "/", 0, deployment).await? else {
        return Ok(());
    };
    r.paused().await?;
    // Paused at 25%: both versions answer.
    let seen = answers(r.front, "/", 40).await?;
    assert!(
        seen.iter().any(|b| b == "v1") && seen.iter().any(|b| b == "v2"),
        "{seen:?}"
    );
    r.promote_after(Duration::from_secs(3)).await?;
    zero_failures("canary paused until promote", Shift::Gradual, r)
        .await?
        .stop()
        .await
}
