//! The CI runner against an in-process cluster (master and agent on
//! loopback): cancel, manual play, pipeline retry, and pipelines surviving
//! a restart of the runner.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use berth_ci::PipelineSource;
use berth_ci::exec::runner::{self, PipelineRecord, RunnerConfig, RunnerHandle, Submission};
use berth_ci::exec::source;
use berth_ci::exec::state::{JobStatus, PipelineStatus};
use berth_tests::Cluster;

fn repo(pipeline: &str) -> tempfile::TempDir {
    berth_tests::git_repo(&[(".gitlab-ci.yml", pipeline)])
}

struct Fixture {
    handle: RunnerHandle,
    stop: tokio::sync::oneshot::Sender<()>,
    runner: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start_runner(cluster: &Cluster, data: &Path) -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = RunnerConfig::new(vec![cluster.master_addr()], data.to_path_buf(), base);
    config.default_cpus = 0.1;
    config.default_mem = 32.0;
    config.kill_grace = Duration::from_secs(5);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (handle, runner) = runner::start(config, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let router = handle.router();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router.into_make_service()).await;
    });
    Fixture {
        handle,
        stop,
        runner,
        server,
    }
}

impl Fixture {
    async fn shut(self) {
        let _ = self.stop.send(());
        let _ = self.runner.await;
        self.server.abort();
    }
}

async fn submit(handle: &RunnerHandle, repo: &Path) -> u64 {
    let revision = source::resolve(repo, None, false).unwrap();
    let definition = std::fs::read_to_string(repo.join(".gitlab-ci.yml")).unwrap();
    handle
        .submit(Submission {
            revision,
            definition,
            source: PipelineSource::Web,
            variables: Vec::new(),
        })
        .await
        .unwrap()
}

/// Waits until `done` holds for the pipeline's record.
async fn wait_for(
    handle: &RunnerHandle,
    id: u64,
    what: &str,
    done: impl Fn(&PipelineRecord) -> bool,
) -> PipelineRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rec = handle.get(id).await.unwrap().expect("the pipeline exists");
        if done(&rec) {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            rec.state
                .jobs()
                .iter()
                .map(|j| j.status)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_of(rec: &PipelineRecord, name: &str) -> JobStatus {
    let i = rec.state.find(name).expect("job exists");
    rec.state.jobs()[i].status
}

fn log_of(handle: &RunnerHandle, rec: &PipelineRecord, name: &str) -> String {
    let i = rec.state.find(name).expect("job exists");
    let attempts = rec.state.jobs()[i].attempts.len();
    std::fs::read_to_string(handle.log_path(rec.id, i, attempts)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_jobs_runs_after_script_and_starts_nothing_more() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    let repo = repo(
        "slow:\n  stage: build\n  script:\n    - echo started\n    - sleep 60\n  after_script:\n    - echo after-script-ran\nnext:\n  stage: test\n  script: [echo should-not-run]\n",
    );
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, id, "slow to run", |r| {
        status_of(r, "slow") == JobStatus::Running
            && log_of(&fx.handle, r, "slow").contains("started")
    })
    .await;
    assert_eq!(status_of(&rec, "next"), JobStatus::Created);
    fx.handle.cancel(id).await.unwrap();
    let rec = wait_for(&fx.handle, id, "the cancel", |r| {
        r.status() == PipelineStatus::Canceled
    })
    .await;
    assert_eq!(
        status_of(&rec, "slow"),
        JobStatus::Canceled,
        "never success"
    );
    assert_eq!(status_of(&rec, "next"), JobStatus::Canceled);
    let next = rec.state.find("next").unwrap();
    assert!(
        rec.state.jobs()[next].attempts.is_empty(),
        "next never started"
    );
    // The log is collected as the task ends; give the last chunk a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = log_of(&fx.handle, &rec, "slow");
    assert!(log.contains("after-script-ran"), "{log}");

    // Retrying the canceled pipeline runs both jobs again — and this time
    // they pass (the slow job is canceled again first, to show a second
    // attempt is a new task).
    fx.handle.retry(id).await.unwrap();
    let rec = wait_for(&fx.handle, id, "the retry to start", |r| {
        status_of(r, "slow") == JobStatus::Running
    })
    .await;
    let slow = rec.state.find("slow").unwrap();
    let tasks: Vec<&str> = rec.state.jobs()[slow]
        .attempts
        .iter()
        .map(|a| a.task_id.as_str())
        .collect();
    assert_eq!(tasks.len(), 2);
    assert_ne!(tasks[0], tasks[1]);
    fx.handle.cancel(id).await.unwrap();
    wait_for(&fx.handle, id, "the second cancel", |r| {
        r.status() == PipelineStatus::Canceled
    })
    .await;
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_jobs_run_when_played_and_pipelines_survive_a_runner_restart() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = repo(
        "build:\n  stage: build\n  script:\n    - mkdir -p out && echo v1 > out/version\n  artifacts:\n    paths: [out/]\ndeploy:\n  stage: deploy\n  when: manual\n  allow_failure: false\n  script:\n    - echo \"deploying $(cat out/version)\"\n",
    );
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, id, "the manual job", |r| {
        status_of(r, "deploy") == JobStatus::Manual
    })
    .await;
    assert_eq!(status_of(&rec, "build"), JobStatus::Success);
    assert_eq!(rec.status(), PipelineStatus::Blocked);
    let err = fx.handle.play(id, "build").await.unwrap_err();
    assert!(err.to_string().contains("not a manual job"), "{err}");
    let err = fx.handle.play(id, "nope").await.unwrap_err();
    assert!(err.to_string().contains("has no job"), "{err}");
    fx.shut().await;

    // A new runner on the same data directory finds the pipeline as it was,
    // and the artifacts of the first run's build reach the played job.
    let fx = start_runner(&cluster, data.path()).await;
    let rec = fx.handle.get(id).await.unwrap().expect("stored");
    assert_eq!(status_of(&rec, "deploy"), JobStatus::Manual);
    fx.handle.play(id, "deploy").await.unwrap();
    let rec = wait_for(&fx.handle, id, "the deploy", |r| {
        r.status().is_finished()
            && r.state.running().is_empty()
            && status_of(r, "deploy").is_finished()
    })
    .await;
    assert_eq!(rec.status(), PipelineStatus::Success);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = log_of(&fx.handle, &rec, "deploy");
    assert!(log.contains("deploying v1"), "{log}");
    // Pipeline ids go on from the stored ones.
    let second = submit(&fx.handle, repo.path()).await;
    assert_eq!(second, id + 1);
    fx.shut().await;
}

async fn call(router: &axum::Router, method: &str, uri: &str) -> (u16, String) {
    call_with(router, method, uri, None).await
}

async fn call_with(
    router: &axum::Router,
    method: &str,
    uri: &str,
    json: Option<serde_json::Value>,
) -> (u16, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let builder = axum::http::Request::builder().method(method).uri(uri);
    let request = match json {
        Some(v) => builder
            .header("content-type", "application/json")
            .body(axum::body::Body::from(v.to_string()))
            .unwrap(),
        None => builder.body(axum::body::Body::empty()).unwrap(),
    };
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_lists_shows_plays_cancels_and_serves_logs() {
    use berth_ci::exec::api::{PipelineSummary, PipelineView};
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    let api = berth_ci::exec::api::router(fx.handle.clone());
    let repo = repo(
        "build:\n  stage: build\n  script: [echo compiled]\nship:\n  stage: deploy\n  when: manual\n  script: [echo shipped]\n",
    );
    let id = submit(&fx.handle, repo.path()).await;
    wait_for(&fx.handle, id, "the manual job", |r| {
        status_of(r, "ship") == JobStatus::Manual
    })
    .await;

    let (code, body) = call(&api, "GET", "/ci/v1/pipelines").await;
    assert_eq!(code, 200, "{body}");
    let list: Vec<PipelineSummary> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    // A manual job that may fail (the default) does not hold the pipeline.
    assert_eq!(list[0].status, "success");

    let (code, body) = call(&api, "GET", &format!("/ci/v1/pipelines/{id}")).await;
    assert_eq!(code, 200, "{body}");
    let view: PipelineView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.stages, ["build", "deploy"]);
    let statuses: Vec<(&str, &str)> = view
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.status.as_str()))
        .collect();
    assert_eq!(statuses, [("build", "success"), ("ship", "manual")]);

    let (code, body) = call(
        &api,
        "GET",
        &format!("/ci/v1/pipelines/{id}/jobs/build/log"),
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("compiled"), "{body}");

    // Errors: unknown pipeline or job, and an action the state refuses.
    let (code, body) = call(&api, "GET", "/ci/v1/pipelines/99").await;
    assert_eq!(
        (code, body.as_str()),
        (404, r#"{"error":"no pipeline 99"}"#)
    );
    let (code, _) = call(
        &api,
        "POST",
        &format!("/ci/v1/pipelines/{id}/jobs/nope/play"),
    )
    .await;
    assert_eq!(code, 404);
    let (code, body) = call(
        &api,
        "POST",
        &format!("/ci/v1/pipelines/{id}/jobs/build/play"),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("not a manual job"), "{body}");
    let (code, _) = call(&api, "GET", "/ci/v1/pipelines/not-a-number").await;
    assert_eq!(code, 400);

    let (code, body) = call(
        &api,
        "POST",
        &format!("/ci/v1/pipelines/{id}/jobs/ship/play"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let rec = wait_for(&fx.handle, id, "ship", |r| {
        status_of(r, "ship").is_finished()
    })
    .await;
    assert_eq!(status_of(&rec, "ship"), JobStatus::Success);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, body) = call(&api, "GET", &format!("/ci/v1/pipelines/{id}/jobs/ship/log")).await;
    assert!(body.contains("shipped"), "{body}");

    // Cancel of a finished pipeline changes nothing that ran.
    let (code, body) = call(&api, "POST", &format!("/ci/v1/pipelines/{id}/cancel")).await;
    assert_eq!(code, 200, "{body}");
    let view: PipelineView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.jobs[0].status, "success");
    assert_eq!(view.jobs[1].status, "success");
    assert_eq!(view.summary.status, "success");

    // Logs from an offset: the rest only.
    let (_, whole) = call(
        &api,
        "GET",
        &format!("/ci/v1/pipelines/{id}/jobs/build/log"),
    )
    .await;
    let (_, tail) = call(
        &api,
        "GET",
        &format!("/ci/v1/pipelines/{id}/jobs/build/log?offset=5"),
    )
    .await;
    assert_eq!(tail, whole[5..]);

    // Triggering a repository by path: checked first, then run.
    let (code, body) = call_with(
        &api,
        "POST",
        "/ci/v1/pipelines",
        Some(serde_json::json!({"repository": "relative/path"})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("must be an absolute path"), "{body}");
    let (code, body) = call_with(
        &api,
        "POST",
        "/ci/v1/pipelines",
        Some(serde_json::json!({
            "repository": repo.path(),
            "variables": [{"name": "BAD NAME", "value": "x"}]
        })),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = call_with(
        &api,
        "POST",
        "/ci/v1/pipelines",
        Some(serde_json::json!({"repository": repo.path()})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let view: PipelineView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.summary.id, id + 1);
    assert_eq!(view.summary.source, "api");
    wait_for(&fx.handle, id + 1, "the triggered pipeline", |r| {
        status_of(r, "build") == JobStatus::Success
    })
    .await;
    fx.shut().await;
}
