//! The service framework's process tests' helpers: `berth service serve`
//! instances, the app they deploy, and polling its API.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_tests::http::{json as http_json, request};
use berth_tests::{ChildProcess, free_port};
use serde_json::{Value, json};

use super::{BERTH, TermOnDrop, agent_with, leader, log_file, log_tails, master, operator};

/// `berth service serve` instance `name` of the masters `addrs`, its API
/// on `listen`.
pub fn serve(addrs: &[String], dir: &Path, name: &str, listen: SocketAddr) -> ChildProcess {
    ChildProcess(
        Command::new(BERTH)
            .args(["service", "serve", "--master", &addrs.join(",")])
            .args(["--instance", name, "--listen", &listen.to_string()])
            .args(["--router-admin", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("service-{name}")))
            .spawn()
            .expect("berth service serve starts"),
    )
}

/// The app `/site` at `version`: three busybox httpd instances.
pub fn site(version: &str, service_port: u16) -> Value {
    json!({
        "id": "/site",
        "cmd": format!("mkdir -p www && echo {version} > www/index.html && exec busybox httpd -f -p 127.0.0.1:$PORT0 -h www"),
        "cpus": 0.1,
        "mem": 32,
        "instances": 3,
        "portDefinitions": [{"port": service_port}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
                          "gracePeriodSeconds": 10, "intervalSeconds": 2,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 3,
                          "delaySeconds": 0}],
        // One instance at a time, each counting after 3 s of health: a
        // deployment long enough to kill something in its middle.
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0},
        "deployment": {"minHealthySeconds": 3},
        "backoffSeconds": 1
    })
}

/// Polls `what` until it gives `Some`, failing with the daemons' logs
/// after `limit`.
pub async fn until<T, F, Fut>(limit: Duration, dir: &Path, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; the daemons' logs end:\n{}",
            log_tails(dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The deployment `id` as `api` shows it, once it has ended.
pub async fn ended(api: SocketAddr, id: &str) -> Option<Value> {
    let (status, d) = http_json(api, "GET", &format!("/v2/deployments/{id}"), None)
        .await
        .ok()?;
    (status == 200 && d["berth"]["result"] != "running").then(|| d["berth"]["result"].clone())
}

/// Starts a deployment to `version` through `api`; its id and the
/// version's timestamp.
pub async fn update(
    api: SocketAddr,
    version: &str,
    service_port: u16,
) -> anyhow::Result<(String, String)> {
    let (status, r) = http_json(
        api,
        "PUT",
        "/v2/apps/site",
        Some(&site(version, service_port)),
    )
    .await?;
    anyhow::ensure!(status == 200, "PUT /v2/apps/site: {status} {r}");
    Ok((
        r["deploymentId"].as_str().unwrap_or_default().to_string(),
        r["version"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Waits until the running deployment `id` has at least one new instance
/// that counts, and old ones left to replace: its middle.
pub async fn midway(api: SocketAddr, id: &str, dir: &Path) {
    until(
        Duration::from_secs(60),
        dir,
        "the deployment's middle",
        || async {
            let (status, d) = http_json(api, "GET", &format!("/v2/deployments/{id}"), None)
                .await
                .ok()?;
            let b = &d["berth"];
            (status == 200
                && b["result"] == "running"
                && b["newHealthy"].as_u64() >= Some(1)
                && b["oldInstances"].as_u64() >= Some(1))
            .then_some(())
        },
    )
    .await;
}

/// Asks the service port until `stop`: the requests that failed, with why.
pub fn load(
    front: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut sent, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            sent += 1;
            match request(front, "GET", "/", None).await {
                Ok((200, _)) => {}
                Ok((status, body)) => failed.push(format!("{status} {}", body.trim())),
                Err(e) => failed.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (sent, failed)
    })
}

/// Whether busybox is installed (under CI it must be).
pub fn busybox_present() -> bool {
    if Path::new("/usr/bin/busybox").is_file() || Path::new("/bin/busybox").is_file() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but busybox is not installed"
    );
    eprintln!("skipping: busybox is not installed");
    false
}

/// Three masters, an agent and two framework instances: `a` active,
/// `b` its standby.
pub struct Pair {
    /// The masters' addresses.
    pub addrs: Vec<String>,
    /// The masters (`None` once killed).
    pub masters: Vec<Option<ChildProcess>>,
    /// The agent, stopped by SIGTERM at the end or when the test fails, so
    /// its tasks (which outlive a killed agent) go with it.
    pub agent: TermOnDrop,
    /// Instance a's API.
    pub api_a: SocketAddr,
    /// Instance b's API.
    pub api_b: SocketAddr,
    /// Instance a, active once this returns.
    pub active: Option<ChildProcess>,
    /// Instance b.
    pub standby: ChildProcess,
}

/// Starts a [`Pair`] with its logs in `dir`; the agent offers `resources`.
pub async fn pair(dir: &Path, resources: &str) -> anyhow::Result<Pair> {
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let masters = (1..=3).map(|id| Some(master(id, &addrs, dir))).collect();
    let agent = TermOnDrop(agent_with(
        &addrs,
        dir,
        0,
        &["--resources", resources, "--kill-tasks-on-shutdown"],
    ));
    let (api_a, api_b): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse()?,
        format!("127.0.0.1:{}", free_port()).parse()?,
    );
    let active = Some(serve(&addrs, dir, "a", api_a));
    until(
        Duration::from_secs(30),
        dir,
        "instance a active",
        || async {
            matches!(request(api_a, "GET", "/ping", None).await, Ok((200, _))).then_some(())
        },
    )
    .await;
    let standby = serve(&addrs, dir, "b", api_b);
    Ok(Pair {
        addrs,
        masters,
        agent,
        api_a,
        api_b,
        active,
        standby,
    })
}

/// Creates `/site` at v1 through `api` and waits until it is deployed.
pub async fn create_v1(api: SocketAddr, service_port: u16, dir: &Path) -> anyhow::Result<()> {
    let (status, created) =
        http_json(api, "POST", "/v2/apps", Some(&site("v1", service_port))).await?;
    anyhow::ensure!(status == 201, "POST /v2/apps: {status} {created}");
    let first = created["deployments"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let result = until(Duration::from_secs(60), dir, "v1 deployed", || {
        ended(api, &first)
    })
    .await;
    assert_eq!(result["state"], "succeeded", "{result}");
    Ok(())
}

/// The framework's tasks as the leading master has them: (running ids,
/// every id it knows, ended ones included).
pub async fn master_tasks(addrs: &[String]) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let id = leader(addrs).await?;
    let mut op = operator(&addrs[usize::try_from(id).ok()? - 1]).await?;
    let fw = op.list_frameworks(pb::Empty {}).await.ok()?.into_inner();
    let fw_id = fw
        .frameworks
        .iter()
        .filter_map(|f| f.info.as_ref())
        .find(|i| i.name == "service")?
        .id
        .clone();
    let tasks = op
        .list_tasks(pb::ListTasksRequest {
            framework_id: fw_id,
            include_completed: true,
        })
        .await
        .ok()?
        .into_inner()
        .tasks;
    let running = tasks
        .iter()
        .filter(|t| t.state == pb::TaskState::TaskRunning as i32)
        .map(|t| t.task_id.clone())
        .collect();
    Some((running, tasks.iter().map(|t| t.task_id.clone()).collect()))
}

/// The app's instances as the framework at `api` lists them: (id, version).
pub async fn instances(api: SocketAddr) -> Option<Vec<(String, String)>> {
    let (status, t) = http_json(api, "GET", "/v2/apps/site/tasks", None)
        .await
        .ok()?;
    (status == 200).then(|| {
        t["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or_default().to_string(),
                    t["version"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    })
}

/// After a deployment to `version` (timestamp `stamp`): the framework runs
/// exactly three instances, all of it, the master runs exactly those, and
/// the master has seen `launched` tasks of the framework in all.
pub async fn check_settled(
    api: SocketAddr,
    addrs: &[String],
    stamp: &str,
    launched: usize,
    dir: &Path,
) -> BTreeSet<String> {
    let ours = instances(api)
        .await
        .expect("the framework lists its instances");
    assert_eq!(ours.len(), 3, "instances: {ours:?}");
    assert!(
        ours.iter().all(|(_, v)| v == stamp),
        "an instance of another version than {stamp}: {ours:?}"
    );
    let ours: BTreeSet<String> = ours.into_iter().map(|(id, _)| id).collect();
    // The master's view settles once the killed tasks' ends are in.
    let (running, all) = until(
        Duration::from_secs(20),
        dir,
        "the master's tasks",
        || async {
            let (running, all) = master_tasks(addrs).await?;
            (running == ours).then_some((running, all))
        },
    )
    .await;
    assert_eq!(running, ours);
    assert_eq!(
        all.len(),
        launched,
        "tasks launched in all (a task launched twice, or one the framework lost track of): {all:?}"
    );
    ours
}
