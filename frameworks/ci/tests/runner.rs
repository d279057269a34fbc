//! The CI runner against an in-process cluster (master and agent on
//! loopback): cancel, manual play, pipeline retry, single-job retry,
//! pipelines surviving a restart of the runner, auto-cancel of superseded
//! pipelines, `resource_group` (per project), logs cut at `max_log_bytes`,
//! artifact, log and source expiry, the gRPC API, and re-attaching to
//! running jobs after a restart of the runner.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use berth_ci::PipelineSource;
use berth_ci::exec::runner::{PipelineRecord, RunnerConfig, RunnerHandle, Submission};
use berth_ci::exec::source;
use berth_ci::exec::state::{JobStatus, PipelineStatus};
use berth_tests::Cluster;
use common::ci_fixture::{self, CiFixture as Fixture};

mod common;

fn repo(pipeline: &str) -> tempfile::TempDir {
    berth_tests::git_repo(&[(".gitlab-ci.yml", pipeline)])
}

async fn start_runner(cluster: &Cluster, data: &Path) -> Fixture {
    start_runner_with(cluster, data, |_| {}).await
}

/// A runner whose jobs get 5 s to stop when killed, its config changed
/// further by `tune`.
async fn start_runner_with(
    cluster: &Cluster,
    data: &Path,
    tune: impl FnOnce(&mut RunnerConfig),
) -> Fixture {
    ci_fixture::start(cluster, data, |config| {
        config.kill_grace = Duration::from_secs(5);
        tune(config);
    })
    .await
}

async fn submit(handle: &RunnerHandle, repo: &Path) -> u64 {
    submit_with(handle, repo, None, Vec::new()).await
}

/// Submits the pipeline of `reference` (HEAD when None) with variables.
async fn submit_with(
    handle: &RunnerHandle,
    repo: &Path,
    reference: Option<&str>,
    variables: Vec<berth_ci::SecretVariable>,
) -> u64 {
    let revision = source::resolve(repo, reference, false).unwrap();
    let definition = std::fs::read_to_string(repo.join(".gitlab-ci.yml")).unwrap();
    handle
        .submit(Submission {
            revision,
            definition,
            source: PipelineSource::Push,
            variables,
        })
        .await
        .unwrap()
}

fn var(name: &str, value: &str, masked: bool) -> berth_ci::SecretVariable {
    berth_ci::SecretVariable {
        name: name.into(),
        value: value.into(),
        masked,
    }
}

/// Waits until `done` holds for the pipeline's record.
async fn wait_for(
    handle: &RunnerHandle,
    id: u64,
    what: &str,
    done: impl Fn(&PipelineRecord) -> bool,
) -> std::sync::Arc<PipelineRecord> {
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
    ci_fixture::call(router, method, uri, json, &[]).await
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

    // The log is collected after the job's end is recorded: wait for it to
    // be whole before reading it (under load it may still be on its way).
    wait_log_complete(&fx.handle, id, "build").await;
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

/// A pipeline with a long first job (`interruptible` as given) and a
/// deploy job after it that is never interruptible.
fn long_pipeline(interruptible: bool) -> String {
    format!(
        "long:\n  stage: build\n  interruptible: {interruptible}\n  script:\n    - echo started\n    - sleep 60\n  after_script:\n    - echo after-script-ran\ndeploy:\n  stage: deploy\n  script: [echo deployed]\n"
    )
}

/// A repository whose pipeline file is `pipeline`, on `main` and on a
/// branch `feature` (checked out).
fn feature_repo(pipeline: &str) -> tempfile::TempDir {
    let repo = repo(pipeline);
    berth_tests::git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    repo
}

/// Waits until job `long` of pipeline `id` runs and has printed.
async fn wait_running(handle: &RunnerHandle, id: u64) {
    wait_for(handle, id, "long to run", |r| {
        status_of(r, "long") == JobStatus::Running && log_of(handle, r, "long").contains("started")
    })
    .await;
}

/// Cancels the pipelines and waits until their jobs have ended.
async fn cancel_all(handle: &RunnerHandle, ids: &[u64]) {
    for &id in ids {
        handle.cancel(id).await.unwrap();
    }
    for &id in ids {
        wait_for(handle, id, "the cancel", |r| {
            r.status().is_finished() && r.state.running().is_empty()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_pipeline_of_a_feature_branch_auto_cancels_an_interruptible_one() {
    use berth_ci::exec::api::PipelineView;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    let repo = feature_repo(&long_pipeline(true));
    let first = submit_with(&fx.handle, repo.path(), Some("feature"), Vec::new()).await;
    wait_running(&fx.handle, first).await;

    let second = submit_with(&fx.handle, repo.path(), Some("feature"), Vec::new()).await;
    // Decided when the newer pipeline is created.
    let rec = fx.handle.get(first).await.unwrap().unwrap();
    assert_eq!(rec.auto_canceled_by, Some(second));
    assert!(
        matches!(
            status_of(&rec, "long"),
            JobStatus::Canceling | JobStatus::Canceled
        ),
        "{:?}",
        status_of(&rec, "long")
    );
    let rec = wait_for(&fx.handle, first, "the auto-cancel", |r| {
        r.status() == PipelineStatus::Canceled
    })
    .await;
    assert_eq!(status_of(&rec, "long"), JobStatus::Canceled);
    // The deploy job (not interruptible, but not started) never starts.
    assert_eq!(status_of(&rec, "deploy"), JobStatus::Canceled);
    assert!(
        rec.state.jobs()[rec.state.find("deploy").unwrap()]
            .attempts
            .is_empty()
    );
    // The existing cancel path: SIGTERM, and after_script runs.
    wait_for(&fx.handle, first, "after_script in the log", |r| {
        log_of(&fx.handle, r, "long").contains("after-script-ran")
    })
    .await;

    // The API says why.
    let api = berth_ci::exec::api::router(fx.handle.clone());
    let (code, body) = call(&api, "GET", &format!("/ci/v1/pipelines/{first}")).await;
    assert_eq!(code, 200, "{body}");
    let view: PipelineView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.summary.status, "canceled");
    assert_eq!(view.summary.auto_canceled_by, Some(second));
    assert!(view.jobs[0].interruptible);

    // The newer pipeline runs on, and was not canceled by anything.
    let rec = fx.handle.get(second).await.unwrap().unwrap();
    assert_eq!(rec.status(), PipelineStatus::Running);
    assert_eq!(rec.auto_canceled_by, None);
    cancel_all(&fx.handle, &[second]).await;
    let rec = fx.handle.get(second).await.unwrap().unwrap();
    assert_eq!(
        rec.auto_canceled_by, None,
        "a user's cancel is not an auto-cancel"
    );
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_job_that_is_not_interruptible_lets_the_older_pipeline_finish() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    let repo = feature_repo(&long_pipeline(false));
    let first = submit_with(&fx.handle, repo.path(), Some("feature"), Vec::new()).await;
    wait_running(&fx.handle, first).await;
    let second = submit_with(&fx.handle, repo.path(), Some("feature"), Vec::new()).await;
    // The decision is made when the newer pipeline is created: the older
    // one is untouched.
    let rec = fx.handle.get(first).await.unwrap().unwrap();
    assert_eq!(rec.auto_canceled_by, None);
    assert_eq!(status_of(&rec, "long"), JobStatus::Running);
    assert_eq!(rec.status(), PipelineStatus::Running);
    assert!(!rec.state.is_canceled());
    cancel_all(&fx.handle, &[first, second]).await;
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_of_the_default_branch_are_never_auto_canceled() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    // Every job interruptible, on main, the default branch.
    let repo = repo(&long_pipeline(true));
    let first = submit_with(&fx.handle, repo.path(), Some("main"), Vec::new()).await;
    wait_running(&fx.handle, first).await;
    let second = submit_with(&fx.handle, repo.path(), Some("main"), Vec::new()).await;
    let rec = fx.handle.get(first).await.unwrap().unwrap();
    assert_eq!(rec.auto_canceled_by, None);
    assert_eq!(status_of(&rec, "long"), JobStatus::Running);
    assert!(!rec.state.is_canceled());
    cancel_all(&fx.handle, &[first, second]).await;
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_cancel_can_be_turned_off() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner_with(&cluster, data.path(), |c| c.auto_cancel = false).await;
    let repo = feature_repo(&long_pipeline(true));
    let first = submit_with(&fx.handle, repo.path(), Some("feature"), Vec::new()).await;
    wait_running(&fx.handle, first).await;
    let second = submit_with(&fx.handle, repo.path(), Some("feature"), Vec::new()).await;
    let rec = fx.handle.get(first).await.unwrap().unwrap();
    assert_eq!(rec.auto_canceled_by, None);
    assert_eq!(status_of(&rec, "long"), JobStatus::Running);
    cancel_all(&fx.handle, &[first, second]).await;
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_one_resource_group_never_overlap_across_pipelines() {
    use berth_ci::exec::api::PipelineView;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    // Outside every sandbox: a lock file and the order of starts and ends.
    let shared = tempfile::tempdir().unwrap();
    let out = shared.path().join("order");
    let lock = shared.path().join("lock");
    let pipeline = format!(
        "variables:\n  OUT: {out}\n  LOCK: {lock}\ndeploy:\n  resource_group: production\n  script:\n    - if [ -e \"$LOCK\" ]; then echo overlap >> \"$OUT\"; fi\n    - touch \"$LOCK\"\n    - echo \"start $CI_PIPELINE_ID\" >> \"$OUT\"\n    - sleep 1\n    - if [ \"$FAIL\" = yes ]; then exit 1; fi\n    - sleep 60\n  after_script:\n    - echo \"end $CI_PIPELINE_ID\" >> \"$OUT\"\n    - rm -f \"$LOCK\"\n",
        out = out.display(),
        lock = lock.display(),
    );
    let repo = repo(&pipeline);
    // The first fails after a second, the second is canceled while it
    // runs, the third is canceled too: each must release the group.
    let first = submit_with(
        &fx.handle,
        repo.path(),
        None,
        vec![var("FAIL", "yes", false)],
    )
    .await;
    let second = submit_with(&fx.handle, repo.path(), None, Vec::new()).await;
    let third = submit_with(&fx.handle, repo.path(), None, Vec::new()).await;

    // While the first holds the group, the others wait for it, and say so.
    let api = berth_ci::exec::api::router(fx.handle.clone());
    for id in [second, third] {
        let (code, body) = call(&api, "GET", &format!("/ci/v1/pipelines/{id}")).await;
        assert_eq!(code, 200, "{body}");
        let view: PipelineView = serde_json::from_str(&body).unwrap();
        assert_eq!(view.jobs[0].status, "waiting_for_resource", "{body}");
        assert_eq!(view.jobs[0].resource_group.as_deref(), Some("production"));
        let rec = fx.handle.get(id).await.unwrap().unwrap();
        assert!(rec.is_waiting_for_resource(0));
        assert!(rec.state.jobs()[0].attempts.is_empty(), "never launched");
    }

    let rec = wait_for(&fx.handle, first, "the first deploy to fail", |r| {
        r.status().is_finished() && r.state.running().is_empty()
    })
    .await;
    assert_eq!(status_of(&rec, "deploy"), JobStatus::Failed);
    // The failure released the group: the second runs; cancel it there.
    let order = |n: &str| {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(n)
    };
    wait_for(&fx.handle, second, "the second deploy to start", |r| {
        status_of(r, "deploy") == JobStatus::Running && order(&format!("start {second}"))
    })
    .await;
    let rec = fx.handle.get(third).await.unwrap().unwrap();
    assert!(rec.is_waiting_for_resource(0), "still waiting");
    cancel_all(&fx.handle, &[second]).await;
    // The cancel released it (after after_script): the third runs.
    wait_for(&fx.handle, third, "the third deploy to start", |r| {
        status_of(r, "deploy") == JobStatus::Running && order(&format!("start {third}"))
    })
    .await;
    cancel_all(&fx.handle, &[third]).await;

    let rec = fx.handle.get(second).await.unwrap().unwrap();
    assert_eq!(status_of(&rec, "deploy"), JobStatus::Canceled);
    let lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = [first, second, third]
        .iter()
        .flat_map(|id| [format!("start {id}"), format!("end {id}")])
        .collect();
    assert_eq!(lines, expected, "one at a time, oldest first, no overlap");
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_logs_are_cut_at_max_log_bytes_and_served_whole_on_request() {
    const LIMIT: usize = 4096;
    const SECRET: &str = "zq-secret-token-value";
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner_with(&cluster, data.path(), |c| c.max_log_bytes = LIMIT as u64).await;
    let api = berth_ci::exec::api::router(fx.handle.clone());
    // 1000 copies of the secret back to back (21,000 bytes, 8,000 once
    // masked) around the limit: the cut falls inside one of them.
    let repo = repo(
        "noisy:\n  script:\n    - i=0; while [ $i -lt 1000 ]; do printf %s \"$TOKEN\"; i=$((i+1)); done; echo\n    - echo done-printing\n",
    );
    let id = submit_with(
        &fx.handle,
        repo.path(),
        None,
        vec![var("TOKEN", SECRET, true)],
    )
    .await;
    let log_uri = format!("/ci/v1/pipelines/{id}/jobs/noisy/log");
    let full_uri = format!("{log_uri}?full=true");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = call(&api, "GET", &full_uri).await;
        assert_eq!(code, 200, "{body}");
        if body.contains("Job succeeded") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no whole log: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The whole log, as stored, once nothing more is collected (until
    // then the marker says "so far").
    let rec = wait_log_complete(&fx.handle, id, "noisy").await;
    let (_, full) = call(&api, "GET", &full_uri).await;
    assert_eq!(status_of(&rec, "noisy"), JobStatus::Success);
    assert_eq!(full, log_of(&fx.handle, &rec, "noisy"));
    assert!(full.len() > LIMIT + 4000, "{}", full.len());
    assert!(full.contains("done-printing"));
    assert!(!full.contains("zq-"), "masked before it was stored");
    let (_, tail) = call(&api, "GET", &format!("{full_uri}&offset=10")).await;
    assert_eq!(tail, full[10..]);

    // The stream: exactly the first LIMIT bytes, then the marker.
    let (code, cut) = call(&api, "GET", &log_uri).await;
    assert_eq!(code, 200);
    let marker = format!(
        "\n[berth] log cut at {LIMIT} bytes; the full log ({} bytes) is at GET {full_uri}\n",
        full.len()
    );
    assert_eq!(cut.len(), LIMIT + marker.len(), "{cut}");
    assert_eq!(cut[..LIMIT], full[..LIMIT]);
    assert_eq!(cut[LIMIT..], marker);
    // The secret straddling the limit: the cut is inside its `[MASKED]`.
    let before = &cut[LIMIT - 16..LIMIT];
    assert!(before.chars().all(|c| "[MASKED]".contains(c)), "{before:?}");
    assert!(!cut.contains("zq"), "no part of the secret");

    // Paging by offset: the rest up to the limit, the marker once, then
    // nothing.
    let (_, page) = call(&api, "GET", &format!("{log_uri}?offset=4000")).await;
    assert_eq!(page, cut[4000..]);
    let (_, page) = call(&api, "GET", &format!("{log_uri}?offset={}", cut.len())).await;
    assert_eq!(page, "");
    fx.shut().await;
}

/// Sleeps until `at` plus a margin (for expiry deadlines in the past).
async fn sleep_past(at: std::time::SystemTime, margin: Duration) {
    let until = at + margin;
    if let Ok(left) = until.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

fn finished_at(rec: &PipelineRecord, name: &str) -> std::time::SystemTime {
    let i = rec.state.find(name).expect("job exists");
    rec.state.jobs()[i]
        .attempts
        .last()
        .and_then(|a| a.finished)
        .expect("finished")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_artifacts_and_logs_are_deleted_marked_and_fail_the_jobs_needing_them() {
    use berth_ci::exec::api::PipelineView;
    use berth_ci::exec::state::FailureReason;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner_with(&cluster, data.path(), |c| {
        c.log_retention = Some(Duration::from_secs(1));
    })
    .await;
    let api = berth_ci::exec::api::router(fx.handle.clone());
    let repo = repo(
        "build:\n  stage: build\n  script:\n    - mkdir -p out && echo v1 > out/version\n    - echo built\n  artifacts:\n    paths: [out/]\n    expire_in: 1 sec\nkept:\n  stage: build\n  script: [mkdir -p keep && echo k > keep/k]\n  artifacts:\n    paths: [keep/]\n    expire_in: never\nuse:\n  stage: test\n  when: manual\n  script: [cat out/version]\n",
    );
    let passed = |r: &PipelineRecord| {
        status_of(r, "build") == JobStatus::Success
            && status_of(r, "kept") == JobStatus::Success
            && status_of(r, "use") == JobStatus::Manual
    };
    let first = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, first, "the first pipeline", passed).await;
    assert_eq!(rec.status(), PipelineStatus::Success);
    let archive = |id: u64, job: &str| {
        data.path()
            .join("files/artifacts")
            .join(id.to_string())
            .join(format!("{job}.tar.gz"))
    };
    assert!(archive(first, "build").exists());

    // Past `expire_in`, but the latest successful pipeline of `main` keeps
    // its artifacts. Its logs are past the retention: they go.
    sleep_past(finished_at(&rec, "build"), Duration::from_millis(1200)).await;
    let report = fx.handle.sweep_expired().await.unwrap();
    assert_eq!(report.artifacts, 0, "{report:?}");
    assert!(report.logs >= 2, "{report:?}");
    assert!(archive(first, "build").exists());
    let rec = fx.handle.get(first).await.unwrap().unwrap();
    let build = rec.state.find("build").unwrap();
    assert!(rec.expired.log_expired(build, 1));
    assert!(!handle_log_exists(&fx.handle, first, build));
    let (code, body) = call(
        &api,
        "GET",
        &format!("/ci/v1/pipelines/{first}/jobs/build/log"),
    )
    .await;
    assert_eq!(code, 410, "{body}");
    assert!(body.contains("expired"), "{body}");

    // A newer successful pipeline of main: now the first one's artifacts
    // expire, except those kept `never`.
    let second = submit(&fx.handle, repo.path()).await;
    let rec2 = wait_for(&fx.handle, second, "the second pipeline", passed).await;
    sleep_past(finished_at(&rec2, "build"), Duration::from_millis(1200)).await;
    let report = fx.handle.sweep_expired().await.unwrap();
    assert_eq!(report.artifacts, 1, "{report:?}");
    assert!(!archive(first, "build").exists());
    assert!(archive(first, "kept").exists(), "expire_in: never");
    assert!(archive(second, "build").exists(), "the latest success");
    let (code, body) = call(&api, "GET", &format!("/ci/v1/pipelines/{first}")).await;
    assert_eq!(code, 200, "{body}");
    let view: PipelineView = serde_json::from_str(&body).unwrap();
    let flags: Vec<(&str, bool, bool)> = view
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.artifacts_expired, j.log_expired))
        .collect();
    assert_eq!(
        flags,
        [
            ("build", true, true),
            ("kept", false, true),
            ("use", false, false)
        ]
    );
    // The records survive a restart of the runner with what expired.
    drop(api);
    fx.shut().await;
    let fx = start_runner(&cluster, data.path()).await;
    let rec = fx.handle.get(first).await.unwrap().unwrap();
    assert!(rec.expired.artifacts_expired(build, 1));

    // The job that needs them fails before it runs: missing dependency.
    fx.handle.play(first, "use").await.unwrap();
    let rec = wait_for(&fx.handle, first, "use to fail", |r| {
        status_of(r, "use") == JobStatus::Failed
    })
    .await;
    let used = rec.state.find("use").unwrap();
    let end = rec.state.jobs()[used].attempts[0].end.clone().unwrap();
    assert_eq!(end.reason, Some(FailureReason::MissingDependencyFailure));
    assert!(end.message.contains("\"build\" expired"), "{}", end.message);
    assert!(rec.state.jobs()[used].attempts[0].started.is_some());
    assert!(
        log_of(&fx.handle, &rec, "use").contains("missing dependency"),
        "the job's log says why"
    );
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_pipelines_source_expires_and_a_job_retried_after_that_fails_saying_so() {
    use berth_ci::exec::api::PipelineView;
    use berth_ci::exec::state::FailureReason;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner_with(&cluster, data.path(), |c| {
        c.source_retention = Some(Duration::from_secs(1));
    })
    .await;
    let repo = repo(
        "build:\n  stage: build\n  script: [test \"$FAIL\" != yes]\nlater:\n  stage: deploy\n  when: manual\n  script: [echo played]\n",
    );
    // The first fails (its manual job is skipped): nothing of it is left
    // to run. The second passes with its manual job waiting to be played.
    let failed = submit_with(
        &fx.handle,
        repo.path(),
        None,
        vec![var("FAIL", "yes", false)],
    )
    .await;
    let manual = submit(&fx.handle, repo.path()).await;
    let rec1 = wait_for(&fx.handle, failed, "the first to fail", |r| {
        r.status() == PipelineStatus::Failed
    })
    .await;
    assert_eq!(status_of(&rec1, "later"), JobStatus::Skipped);
    let rec2 = wait_for(&fx.handle, manual, "the second to pass", |r| {
        r.status() == PipelineStatus::Success
    })
    .await;
    assert_eq!(status_of(&rec2, "later"), JobStatus::Manual);
    let source = |id: u64| data.path().join(format!("files/sources/{id}.tar.gz"));
    assert!(source(failed).exists() && source(manual).exists());

    let finished = |r: &PipelineRecord| {
        std::time::UNIX_EPOCH + Duration::from_millis(r.finished_ms.expect("finished"))
    };
    sleep_past(
        finished(&rec1).max(finished(&rec2)),
        Duration::from_millis(1200),
    )
    .await;
    let report = fx.handle.sweep_expired().await.unwrap();
    assert_eq!(report.sources, 1, "{report:?}");
    assert!(!source(failed).exists());
    assert!(source(manual).exists(), "a manual job may still need it");
    let api = berth_ci::exec::api::router(fx.handle.clone());
    for (id, expired) in [(failed, true), (manual, false)] {
        let (code, body) = call(&api, "GET", &format!("/ci/v1/pipelines/{id}")).await;
        assert_eq!(code, 200, "{body}");
        let view: PipelineView = serde_json::from_str(&body).unwrap();
        assert_eq!(view.summary.source_expired, expired, "{body}");
    }

    // A retry of the failed pipeline: its job fails before it runs.
    fx.handle.retry(failed).await.unwrap();
    let rec = wait_for(&fx.handle, failed, "the retried job to fail", |r| {
        r.state.jobs()[0].attempts.len() == 2 && status_of(r, "build") == JobStatus::Failed
    })
    .await;
    let attempt = &rec.state.jobs()[0].attempts[1];
    let end = attempt.end.clone().unwrap();
    assert_eq!(end.reason, Some(FailureReason::MissingDependencyFailure));
    assert!(
        end.message
            .contains(&format!("the source of pipeline {failed}"))
            && end.message.contains("expired"),
        "{}",
        end.message
    );
    assert!(attempt.task_id.is_empty(), "never launched");
    assert!(log_of(&fx.handle, &rec, "build").contains("source of pipeline"));
    // The manual job of the other pipeline still has its source.
    fx.handle.play(manual, "later").await.unwrap();
    let rec = wait_for(&fx.handle, manual, "the played job", |r| {
        status_of(r, "later").is_finished()
    })
    .await;
    assert_eq!(status_of(&rec, "later"), JobStatus::Success);
    drop(api);
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_group_of_another_repository_with_the_same_project_name_does_not_wait() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    let pipeline =
        "deploy:\n  resource_group: production\n  script:\n    - echo started\n    - sleep 60\n";
    let (a, b) = (repo(pipeline), repo(pipeline));
    let mut ids = Vec::new();
    for repo in [&a, &b] {
        // Two checkouts both named `app`.
        let mut revision = source::resolve(repo.path(), None, false).unwrap();
        revision.project_name = "app".into();
        let id = fx
            .handle
            .submit(Submission {
                revision,
                definition: pipeline.into(),
                source: PipelineSource::Push,
                variables: Vec::new(),
            })
            .await
            .unwrap();
        ids.push(id);
    }
    let running = |r: &PipelineRecord| {
        status_of(r, "deploy") == JobStatus::Running
            && log_of(&fx.handle, r, "deploy").contains("started")
    };
    let first = wait_for(&fx.handle, ids[0], "the first deploy", running).await;
    let second = wait_for(&fx.handle, ids[1], "the second deploy too", running).await;
    assert_eq!(first.project, second.project);
    assert_ne!(first.project_key(), second.project_key());
    assert!(!second.is_waiting_for_resource(0));
    // The same repository's next pipeline waits for the group.
    let third = submit(&fx.handle, a.path()).await;
    let rec = fx.handle.get(third).await.unwrap().unwrap();
    assert!(rec.is_waiting_for_resource(0), "the same project's group");
    cancel_all(&fx.handle, &[ids[0], ids[1], third]).await;
    fx.shut().await;
}

fn handle_log_exists(handle: &RunnerHandle, id: u64, job: usize) -> bool {
    handle.log_path(id, job, 1).exists()
}

/// Serves the runner's file routes, HTTP/JSON API and gRPC API on one
/// loopback port, as `berth ci serve` does; returns the gRPC endpoint.
async fn serve_apis(handle: &RunnerHandle) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = handle
        .router()
        .merge(berth_ci::exec::api::router(handle.clone()))
        .merge(berth_ci::exec::grpc::router(
            handle.clone(),
            tokio_util::sync::CancellationToken::new(),
        ));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service()).await;
    });
    (url, server)
}

type CiClient = ci::ci_client::CiClient<tonic::transport::Channel>;
use berth_sdk::proto::ci::v1 as ci;

/// Reads a `FollowJobLog` stream to its end (bounded), checking that the
/// chunks follow each other; returns the bytes and the attempt.
async fn follow_log(client: &mut CiClient, request: ci::FollowJobLogRequest) -> (String, u32) {
    let start = request.offset;
    let mut stream = client.follow_job_log(request).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    let mut attempt = 0;
    let read = async {
        while let Some(chunk) = stream.message().await.unwrap() {
            assert_eq!(chunk.offset, start + bytes.len() as u64, "contiguous");
            assert!(!chunk.data.is_empty());
            attempt = chunk.attempt;
            bytes.extend_from_slice(&chunk.data);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the log stream ends when the job does");
    (String::from_utf8(bytes).unwrap(), attempt)
}

fn log_request(pipeline: u64, job: &str) -> ci::FollowJobLogRequest {
    ci::FollowJobLogRequest {
        pipeline,
        job: job.into(),
        ..Default::default()
    }
}

fn job_of<'a>(pipeline: &'a ci::Pipeline, name: &str) -> &'a ci::Job {
    pipeline
        .jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_api_drives_pipelines_and_streams_a_running_jobs_log_to_its_end() {
    const SECRET: &str = "zq-grpc-secret-value";
    const LIMIT: u64 = 64;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner_with(&cluster, data.path(), |c| c.max_log_bytes = LIMIT).await;
    let (url, server) = serve_apis(&fx.handle).await;
    let mut client = CiClient::connect(url.clone()).await.unwrap();
    // The HTTP API answers on the same port.
    let http = http_get(&url, "/ci/v1/pipelines").await;
    assert_eq!(http, "[]");
    let listed = client
        .list_pipelines(ci::ListPipelinesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.pipelines.is_empty());

    let repo = repo(
        "build:\n  stage: build\n  script:\n    - i=1; while [ $i -le 6 ]; do echo \"line $i $TOKEN\"; i=$((i+1)); sleep 0.4; done\nship:\n  stage: deploy\n  when: manual\n  script: [echo shipped]\n",
    );
    // A bad trigger: the HTTP API's checks and messages, INVALID_ARGUMENT.
    let trigger = |repository: String| ci::TriggerPipelineRequest {
        repository,
        reference: None,
        dirty: false,
        variables: vec![ci::TriggerVariable {
            name: "TOKEN".into(),
            value: SECRET.into(),
            masked: true,
        }],
    };
    let err = client
        .trigger_pipeline(trigger("relative/path".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "repository \"relative/path\" must be an absolute path"
    );
    let mut bad = trigger(repo.path().display().to_string());
    bad.variables[0].name = "BAD NAME".into();
    let err = client.trigger_pipeline(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("is not a variable name"), "{err}");
    let mut short = trigger(repo.path().display().to_string());
    short.variables[0].value = "short".into();
    let err = client.trigger_pipeline(short).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("at least 8"), "{err}");
    let err = client
        .trigger_pipeline(ci::TriggerPipelineRequest {
            reference: Some("main".into()),
            dirty: true,
            ..trigger(repo.path().display().to_string())
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        fx.handle.list().await.unwrap().is_empty(),
        "bad triggers create nothing"
    );

    let created = client
        .trigger_pipeline(trigger(repo.path().display().to_string()))
        .await
        .unwrap()
        .into_inner();
    let summary = created.summary.clone().unwrap();
    let id = summary.id;
    assert_eq!(summary.source, "api");
    assert_eq!(created.stages, ["build", "deploy"]);
    assert!(job_of(&created, "ship").manual);
    assert!(!job_of(&created, "build").manual);

    // Followed from the start (the job may not even run yet) to its end:
    // every line once, masked, and exactly the stored log.
    let (streamed, attempt) = follow_log(
        &mut client,
        ci::FollowJobLogRequest {
            full: true,
            ..log_request(id, "build")
        },
    )
    .await;
    assert_eq!(attempt, 1);
    for i in 1..=6 {
        assert_eq!(
            streamed.matches(&format!("line {i} [MASKED]\n")).count(),
            1,
            "{streamed}"
        );
    }
    assert!(!streamed.contains("zq-"), "{streamed}");
    assert!(streamed.contains("Job succeeded"), "{streamed}");
    let rec = fx.handle.get(id).await.unwrap().unwrap();
    assert_eq!(status_of(&rec, "build"), JobStatus::Success);
    assert_eq!(streamed, log_of(&fx.handle, &rec, "build"));
    // The job's task carried the value for its agent to mask: the
    // sandbox's stdout (what the agent's log API serves) is masked too.
    let sandbox_out = sandbox_files(cluster.dir.path(), "stdout");
    let build_out = sandbox_out
        .iter()
        .find(|text| text.contains("line 6"))
        .unwrap_or_else(|| panic!("no sandbox stdout with the job's lines: {sandbox_out:?}"));
    assert!(build_out.contains("line 6 [MASKED]\n"), "{build_out}");
    assert!(!build_out.contains(SECRET), "{build_out}");
    // From an offset: the rest.
    let (tail, _) = follow_log(
        &mut client,
        ci::FollowJobLogRequest {
            offset: 10,
            full: true,
            ..log_request(id, "build")
        },
    )
    .await;
    assert_eq!(tail, streamed[10..]);
    // Not `full`: cut at max_log_bytes with the marker line, as over HTTP.
    let (cut, _) = follow_log(&mut client, log_request(id, "build")).await;
    let (http_code, http_cut) = call(
        &berth_ci::exec::api::router(fx.handle.clone()),
        "GET",
        &format!("/ci/v1/pipelines/{id}/jobs/build/log"),
    )
    .await;
    assert_eq!(http_code, 200);
    assert_eq!(cut[..LIMIT as usize], streamed[..LIMIT as usize]);
    let marker = format!(
        "[berth] log cut at {LIMIT} bytes; the full log ({} bytes) is sent by FollowJobLog with full = true\n",
        streamed.len()
    );
    assert!(cut.ends_with(&marker), "{cut}");
    // The same cut as over HTTP; only where the whole log is differs.
    let http_marker = format!(
        "[berth] log cut at {LIMIT} bytes; the full log ({} bytes) is at GET /ci/v1/pipelines/{id}/jobs/build/log?full=true\n",
        streamed.len()
    );
    assert_eq!(
        cut.strip_suffix(&marker),
        http_cut.strip_suffix(&http_marker),
        "{http_cut}"
    );

    // Errors: unknown pipeline, job or attempt.
    let err = client
        .get_pipeline(ci::GetPipelineRequest { id: 99 })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::NotFound, "no pipeline 99")
    );
    let err = client
        .follow_job_log(log_request(id, "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), format!("pipeline {id} has no job \"nope\""));
    let err = client
        .follow_job_log(log_request(99, "build"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .follow_job_log(ci::FollowJobLogRequest {
            attempt: Some(2),
            ..log_request(id, "build")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("has no attempt 2"), "{err}");
    for err in [
        client
            .cancel_pipeline(ci::CancelPipelineRequest { id: 99 })
            .await,
        client
            .retry_pipeline(ci::RetryPipelineRequest { id: 99 })
            .await,
        client
            .play_job(ci::PlayJobRequest {
                pipeline: 99,
                job: "ship".into(),
            })
            .await,
    ] {
        assert_eq!(err.unwrap_err().code(), tonic::Code::NotFound);
    }
    let err = client
        .play_job(ci::PlayJobRequest {
            pipeline: id,
            job: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // An action the state refuses.
    let err = client
        .play_job(ci::PlayJobRequest {
            pipeline: id,
            job: "build".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("not a manual job"), "{err}");

    // Get and play.
    let shown = client
        .get_pipeline(ci::GetPipelineRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job_of(&shown, "build").status, "success");
    assert_eq!(job_of(&shown, "build").attempts, 1);
    assert_eq!(job_of(&shown, "ship").status, "manual");
    let played = client
        .play_job(ci::PlayJobRequest {
            pipeline: id,
            job: "ship".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(job_of(&played, "ship").status, "manual");
    // In full: the fetcher's line alone may fill the first LIMIT bytes.
    let (shipped, _) = follow_log(
        &mut client,
        ci::FollowJobLogRequest {
            full: true,
            ..log_request(id, "ship")
        },
    )
    .await;
    assert!(shipped.contains("shipped"), "{shipped}");
    let shown = client
        .get_pipeline(ci::GetPipelineRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job_of(&shown, "ship").status, "success");

    // Cancel and retry.
    let long = berth_tests::git_repo(&[(".gitlab-ci.yml", &long_pipeline(false))]);
    let second = client
        .trigger_pipeline(ci::TriggerPipelineRequest {
            repository: long.path().display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap()
        .id;
    wait_running(&fx.handle, second).await;
    let canceled = client
        .cancel_pipeline(ci::CancelPipelineRequest { id: second })
        .await
        .unwrap()
        .into_inner();
    assert!(
        ["canceling", "canceled"].contains(&job_of(&canceled, "long").status.as_str()),
        "{canceled:?}"
    );
    // The canceled job's log ends (after its after_script).
    let (log, _) = follow_log(
        &mut client,
        ci::FollowJobLogRequest {
            full: true,
            ..log_request(second, "long")
        },
    )
    .await;
    assert!(log.contains("after-script-ran"), "{log}");
    let shown = client
        .get_pipeline(ci::GetPipelineRequest { id: second })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.summary.unwrap().status, "canceled");
    let retried = client
        .retry_pipeline(ci::RetryPipelineRequest { id: second })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.summary.unwrap().status, "running");
    let rec = wait_for(&fx.handle, second, "the retry to run", |r| {
        status_of(r, "long") == JobStatus::Running
    })
    .await;
    assert_eq!(rec.state.jobs()[0].attempts.len(), 2);
    let listed = client
        .list_pipelines(ci::ListPipelinesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = listed.pipelines.iter().map(|p| p.id).collect();
    assert_eq!(ids, [second, id], "newest first");
    cancel_all(&fx.handle, &[second]).await;
    server.abort();
    fx.shut().await;
}

/// The text of every file called `name` under `dir`.
fn sandbox_files(dir: &std::path::Path, name: &str) -> Vec<String> {
    berth_tests::files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == name))
        .map(|p| String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned())
        .collect()
}

/// GET over plain HTTP/1.1 (what `berth ci` clients do), body as text.
async fn http_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// Waits until the job's attempt has ended and its whole log is stored.
async fn wait_log_complete(
    handle: &RunnerHandle,
    id: u64,
    job: &str,
) -> std::sync::Arc<PipelineRecord> {
    wait_for(handle, id, "the job and its log to end", |r| {
        let i = r.state.find(job).unwrap();
        let state = &r.state.jobs()[i];
        state.status.is_finished()
            && state
                .attempts
                .last()
                .is_some_and(|a| !handle.is_collecting_log(&a.task_id))
    })
    .await
}

/// The lines `prefix 1` … `prefix n` each appear exactly once in `log`,
/// in order.
fn assert_lines_once(log: &str, prefix: &str, n: usize) {
    let mut at = 0;
    for i in 1..=n {
        let line = format!("{prefix} {i} ");
        assert_eq!(log.matches(&line).count(), 1, "{line:?} once in:\n{log}");
        let found = log.find(&line).unwrap();
        assert!(found >= at, "{line:?} in order in:\n{log}");
        at = found;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runner_reattaches_to_a_running_job_and_collects_its_log_exactly_once() {
    const SECRET: &str = "zq-reattach-secret";
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    // 30 lines over ~3 s on stdout, each with the secret, and every third
    // one on stderr too.
    let repo = repo(
        "slow:\n  script:\n    - i=1; while [ $i -le 30 ]; do echo \"out $i $TOKEN\"; if [ $((i % 3)) -eq 0 ]; then echo \"err $i \" >&2; fi; i=$((i+1)); sleep 0.1; done\n",
    );
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit_with(
        &fx.handle,
        repo.path(),
        None,
        vec![var("TOKEN", SECRET, true)],
    )
    .await;
    wait_for(&fx.handle, id, "slow to have printed", |r| {
        status_of(r, "slow") == JobStatus::Running
            && log_of(&fx.handle, r, "slow").contains("out 3 ")
    })
    .await;
    fx.shut().await;
    // The job goes on printing while no runner collects it.
    let stopped_at = std::fs::metadata(PipelineRecord::log_path(data.path(), id, 0, 1))
        .unwrap()
        .len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        std::fs::metadata(PipelineRecord::log_path(data.path(), id, 0, 1))
            .unwrap()
            .len(),
        stopped_at,
        "nothing collects the log while the runner is stopped"
    );

    let fx = start_runner(&cluster, data.path()).await;
    let rec = fx.handle.get(id).await.unwrap().unwrap();
    assert_eq!(status_of(&rec, "slow"), JobStatus::Running, "as stored");
    let rec = wait_log_complete(&fx.handle, id, "slow").await;
    assert_eq!(status_of(&rec, "slow"), JobStatus::Success);
    assert_eq!(rec.state.jobs()[0].attempts.len(), 1, "the same task");
    let log = log_of(&fx.handle, &rec, "slow");
    assert_lines_once(&log, "out", 30);
    assert_eq!(log.matches("[MASKED]").count(), 30, "{log}");
    assert!(!log.contains("zq-"), "masked after the restart too: {log}");
    for i in (3..=30).step_by(3) {
        assert_eq!(log.matches(&format!("err {i} \n")).count(), 1, "{log}");
    }
    assert_eq!(log.matches("Job succeeded").count(), 1, "{log}");
    fx.shut().await;
}

/// A job's log is one stream in the order written: the agent's fetch of
/// the source first, then the script's stdout and stderr interleaved as
/// they were written, the line that ends the job, and the upload of its
/// artifacts after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_log_keeps_stdout_stderr_and_the_agents_lines_in_the_order_written() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = repo(
        "test:\n  script:\n    - i=1; while [ $i -le 20 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done\n    - mkdir -p out && echo r > out/report\n    - echo 'test failed, see above' >&2; exit 4\n  artifacts:\n    when: always\n    paths: [out/]\n",
    );
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_log_complete(&fx.handle, id, "test").await;
    assert_eq!(status_of(&rec, "test"), JobStatus::Failed);
    let log = log_of(&fx.handle, &rec, "test");
    let mut at = 0;
    let mut next = |needle: &str| {
        let found = log[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing after byte {at} of:\n{log}"));
        at += found + needle.len();
    };
    next("berth: fetched");
    next("$ i=1;");
    for i in 1..=20 {
        next(&format!("out {i}\nerr {i}\n"));
    }
    next("test failed, see above\n");
    next("ERROR: Job failed: exit code 4\n");
    next("berth: uploaded artifacts");
    assert!(
        !log.contains("job script starts"),
        "the start mark is left out: {log}"
    );
    fx.shut().await;
}

/// A job asking for less than the masters accept (`BERTH_MEMORY` under a
/// milli-MiB; a container under Docker's 6 MiB) fails before it is
/// launched, saying why, and does not hold up the jobs packed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_asking_for_less_than_the_cluster_accepts_fails_without_blocking_others() {
    use berth_ci::exec::state::FailureReason;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = repo(
        "tiny:\n  variables: {BERTH_MEMORY: \"0.0001\"}\n  script: [echo tiny]\nboxed:\n  image: busybox\n  variables: {BERTH_MEMORY: \"4\"}\n  script: [echo boxed]\nfine:\n  script: [echo fine]\n",
    );
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, id, "the pipeline to finish", |r| {
        r.status().is_finished()
    })
    .await;
    assert_eq!(status_of(&rec, "fine"), JobStatus::Success);
    for (job, why) in [
        ("tiny", "asks for no mem"),
        ("boxed", "asks for 4 mem; a container task needs at least 6"),
    ] {
        assert_eq!(status_of(&rec, job), JobStatus::Failed, "{job}");
        let i = rec.state.find(job).unwrap();
        let attempt = &rec.state.jobs()[i].attempts[0];
        let end = attempt.end.clone().unwrap();
        assert_eq!(end.reason, Some(FailureReason::SchedulerFailure), "{job}");
        assert!(end.message.contains(why), "{job}: {}", end.message);
        let log = log_of(&fx.handle, &rec, job);
        assert!(
            log.contains("ERROR: Job failed (the cluster would refuse it)") && log.contains(why),
            "{job}: {log}"
        );
    }
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_ended_or_ran_out_of_time_while_the_runner_was_down_get_their_final_status() {
    use berth_ci::exec::state::FailureReason;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let done = shared.path().join("quick-done");
    // `quick` prints for ~1.5 s and fails with code 3 (after the runner
    // stopped); `expires` has 5 s and would sleep for a minute.
    let pipeline = format!(
        "quick:\n  script:\n    - i=1; while [ $i -le 10 ]; do echo \"quick $i \"; i=$((i+1)); sleep 0.15; done\n    - touch {done}\n    - exit 3\nexpires:\n  timeout: 5 seconds\n  script:\n    - echo started\n    - sleep 60\n",
        done = done.display()
    );
    let repo = repo(&pipeline);
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, id, "both jobs to run", |r| {
        status_of(r, "quick") == JobStatus::Running
            && status_of(r, "expires") == JobStatus::Running
            && log_of(&fx.handle, r, "quick").contains("quick 1 ")
            && log_of(&fx.handle, r, "expires").contains("started")
    })
    .await;
    fx.shut().await;
    let expires = rec.state.find("expires").unwrap();
    let started = rec.state.jobs()[expires].attempts[0].started.unwrap();
    assert!(
        started.elapsed().unwrap() < Duration::from_secs(5),
        "the runner stopped before the time limit"
    );
    // Down until `quick` has ended and `expires` is past its limit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done.exists() || started.elapsed().unwrap() < Duration::from_millis(5500) {
        assert!(tokio::time::Instant::now() < deadline, "quick never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let restarted = std::time::SystemTime::now();
    let fx = start_runner(&cluster, data.path()).await;
    let rec = wait_log_complete(&fx.handle, id, "quick").await;
    let rec = if status_of(&rec, "expires").is_finished() {
        rec
    } else {
        wait_log_complete(&fx.handle, id, "expires").await
    };
    // The real result of the task that ended meanwhile, and its whole log.
    let quick = &rec.state.jobs()[rec.state.find("quick").unwrap()];
    assert_eq!(quick.status, JobStatus::Failed);
    assert_eq!(quick.attempts.len(), 1);
    let end = quick.attempts[0].end.as_ref().unwrap();
    assert_eq!(end.reason, Some(FailureReason::ScriptFailure));
    assert_eq!(end.exit_code, Some(3));
    let log = log_of(&fx.handle, &rec, "quick");
    assert_lines_once(&log, "quick", 10);
    // Killed at once, for its time limit.
    let expired = &rec.state.jobs()[expires];
    assert_eq!(expired.status, JobStatus::Failed);
    let attempt = &expired.attempts[0];
    let end = attempt.end.as_ref().unwrap();
    assert_eq!(
        end.reason,
        Some(FailureReason::JobExecutionTimeout),
        "{end:?}"
    );
    let took = attempt.finished.unwrap().duration_since(restarted).unwrap();
    assert!(took < Duration::from_secs(15), "killed at once: {took:?}");
    assert_eq!(rec.status(), PipelineStatus::Failed);
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_task_the_cluster_no_longer_knows_fails_as_a_runner_system_failure_and_is_retried()
 {
    use berth_ci::exec::state::FailureReason;
    use berth_ci::exec::store::Store;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let mark = shared.path().join("first-ran");
    // The first attempt runs long; the second passes at once.
    let pipeline = format!(
        "flaky:\n  retry:\n    max: 1\n    when: runner_system_failure\n  script:\n    - if [ -e {mark} ]; then echo second attempt; else touch {mark}; echo first attempt; sleep 60; fi\n",
        mark = mark.display()
    );
    let repo = repo(&pipeline);
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit(&fx.handle, repo.path()).await;
    wait_for(&fx.handle, id, "the first attempt to run", |r| {
        status_of(r, "flaky") == JobStatus::Running
            && log_of(&fx.handle, r, "flaky").contains("first attempt")
    })
    .await;
    fx.shut().await;
    // While the runner is down, its record comes to name a task the
    // master has never heard of (as when the master lost it).
    {
        let store = Store::open(data.path().join("ci.redb")).unwrap();
        let rec: PipelineRecord = store.get(id).unwrap().unwrap();
        let mut json = serde_json::to_value(&rec).unwrap();
        json["state"]["jobs"][0]["attempts"][0]["task_id"] = format!("ci-{id}-0-7").into();
        let rec: PipelineRecord = serde_json::from_value(json).unwrap();
        store.put(id, &rec).unwrap();
    }

    let fx = start_runner(&cluster, data.path()).await;
    let rec = wait_for(&fx.handle, id, "the retried job to pass", |r| {
        status_of(r, "flaky").is_finished()
    })
    .await;
    let job = &rec.state.jobs()[0];
    assert_eq!(job.status, JobStatus::Success);
    assert_eq!(job.attempts.len(), 2, "retried once");
    let lost = job.attempts[0].end.as_ref().unwrap();
    assert_eq!(lost.reason, Some(FailureReason::RunnerSystemFailure));
    assert!(lost.message.contains("does not know this task"), "{lost:?}");
    let rec = wait_log_complete(&fx.handle, id, "flaky").await;
    assert!(log_of(&fx.handle, &rec, "flaky").contains("second attempt"));
    fx.shut().await;
}

/// GitLab's "retry job": a job that failed (its script fails while a
/// marker file is absent, and creates it) is retried alone through the
/// gRPC API; the job its failure skipped waits for it and runs; the job
/// before it does not run again and its artifacts are still there; the
/// pipeline ends `success` with the retried job at 2 attempts. A job still
/// to run or running is refused over HTTP (409), gRPC
/// (FAILED_PRECONDITION) and the handle alike; a job that passed can be
/// retried too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_retried_alone_and_the_pipeline_passes() {
    use berth_ci::exec::api::PipelineView;
    use berth_ci::exec::runner::RunError;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let mark = shared.path().join("failed-once");
    let go = shared.path().join("go");
    let pipeline = format!(
        "build:\n  stage: build\n  script: [echo built-once > out.txt]\n  artifacts:\n    paths: [out.txt]\ntest:\n  stage: test\n  script:\n    - cat out.txt\n    - if [ -e {mark} ]; then echo second-try; else touch {mark}; echo first-try; exit 1; fi\n    - while [ ! -e {go} ]; do sleep 0.1; done\ndeploy:\n  stage: deploy\n  script: [echo deployed]\n",
        mark = mark.display(),
        go = go.display()
    );
    let repo = repo(&pipeline);
    let fx = start_runner(&cluster, data.path()).await;
    let (url, server) = serve_apis(&fx.handle).await;
    let mut client = CiClient::connect(url).await.unwrap();
    let api = berth_ci::exec::api::router(fx.handle.clone());
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, id, "the pipeline to fail", |r| {
        r.status().is_finished()
    })
    .await;
    assert_eq!(rec.status(), PipelineStatus::Failed);
    assert_eq!(status_of(&rec, "test"), JobStatus::Failed);
    assert_eq!(status_of(&rec, "deploy"), JobStatus::Skipped);

    // Refused, changing nothing: a skipped job, unknown jobs and pipelines.
    let path = |job: &str| format!("/ci/v1/pipelines/{id}/jobs/{job}/retry");
    let (code, body) = call(&api, "POST", &path("deploy")).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        body,
        r#"{"error":"job \"deploy\" is skipped; only a finished job (success, failed or canceled) can be retried"}"#
    );
    let (code, body) = call(&api, "POST", &path("nope")).await;
    assert_eq!(
        (code, body.as_str()),
        (
            404,
            format!(r#"{{"error":"pipeline {id} has no job \"nope\""}}"#).as_str()
        )
    );
    let err = client
        .retry_job(ci::RetryJobRequest {
            pipeline: 99,
            job: "test".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::NotFound, "no pipeline 99")
    );
    assert!(matches!(
        fx.handle.retry_job(99, "test").await,
        Err(RunError::NoSuchPipeline(99))
    ));
    let unchanged = fx.handle.get(id).await.unwrap().unwrap();
    assert_eq!(unchanged.state, rec.state);

    // Retry the failed job alone.
    let retried = client
        .retry_job(ci::RetryJobRequest {
            pipeline: id,
            job: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.summary.as_ref().unwrap().status, "running");
    assert_eq!(job_of(&retried, "build").status, "success");
    assert!(
        ["pending", "running"].contains(&job_of(&retried, "test").status.as_str()),
        "{retried:?}"
    );
    assert_eq!(job_of(&retried, "deploy").status, "created");

    // While its second attempt runs (it waits for `go`), it cannot be
    // retried again.
    wait_for(&fx.handle, id, "the second attempt to run", |r| {
        status_of(r, "test") == JobStatus::Running
            && log_of(&fx.handle, r, "test").contains("second-try")
    })
    .await;
    let (code, body) = call(&api, "POST", &path("test")).await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("job \\\"test\\\" is running"), "{body}");
    let err = client
        .retry_job(ci::RetryJobRequest {
            pipeline: id,
            job: "test".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("is running"), "{err}");
    let (code, body) = call(&api, "POST", &path("deploy")).await;
    assert_eq!(code, 409, "created, waiting for test: {body}");
    assert!(body.contains("is created"), "{body}");
    std::fs::write(&go, "").unwrap();

    let rec = wait_for(&fx.handle, id, "the pipeline to pass", |r| {
        r.status().is_finished()
    })
    .await;
    assert_eq!(rec.status(), PipelineStatus::Success);
    let attempts = |rec: &PipelineRecord, name: &str| {
        rec.state.jobs()[rec.state.find(name).unwrap()]
            .attempts
            .len()
    };
    assert_eq!(attempts(&rec, "test"), 2);
    assert_eq!(attempts(&rec, "build"), 1, "build did not run again");
    assert_eq!(attempts(&rec, "deploy"), 1);
    let rec = wait_log_complete(&fx.handle, id, "test").await;
    let test = rec.state.find("test").unwrap();
    let first = std::fs::read_to_string(fx.handle.log_path(id, test, 1)).unwrap();
    // (The script's commands are echoed: compare output lines.)
    let has_line = |log: &str, line: &str| log.lines().any(|l| l == line);
    assert!(has_line(&first, "first-try"), "{first}");
    let second = log_of(&fx.handle, &rec, "test");
    assert!(
        has_line(&second, "built-once"),
        "build's artifacts were kept: {second}"
    );
    assert!(has_line(&second, "second-try"), "{second}");
    assert!(!has_line(&second, "first-try"), "{second}");

    // A job that passed can be retried too (over HTTP); the jobs after it
    // keep their results.
    let (code, body) = call(&api, "POST", &path("build")).await;
    assert_eq!(code, 200, "{body}");
    let view: PipelineView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.summary.status, "running");
    let rec = wait_for(&fx.handle, id, "build's second attempt", |r| {
        attempts(r, "build") == 2 && r.status().is_finished()
    })
    .await;
    assert_eq!(rec.status(), PipelineStatus::Success);
    assert_eq!(attempts(&rec, "test"), 2);
    assert_eq!(attempts(&rec, "deploy"), 1);
    server.abort();
    fx.shut().await;
}

/// A submission of `repo`'s HEAD with `revision` changed by `change`.
fn submission_of(repo: &Path, change: impl FnOnce(&mut source::Revision)) -> Submission {
    let mut revision = source::resolve(repo, None, false).unwrap();
    change(&mut revision);
    Submission {
        revision,
        definition: std::fs::read_to_string(repo.join(".gitlab-ci.yml")).unwrap(),
        source: PipelineSource::Push,
        variables: Vec::new(),
    }
}

/// The source archive is written before the pipeline is stored: when it
/// cannot be, nothing is stored (no record, no id used, no repository
/// remembering the commit as run, no file left) and the caller gets the
/// error, so that a poll tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_whose_source_cannot_be_archived_is_not_stored_nor_remembered() {
    use berth_ci::exec::runner::RunError;
    use berth_ci::exec::store::RepoUpdate;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    let repo = repo("build:\n  script: [echo built]\n");
    let store = fx.handle.store();
    let repo_id = store
        .create_repo(|_| serde_json::json!({ "ran": null }))
        .unwrap();
    let remember = |repo: u64| RepoUpdate {
        repo,
        apply: Box::new(|old: &[u8], pipeline: u64| {
            let mut record: serde_json::Value = serde_json::from_slice(old).ok()?;
            record["ran"] = pipeline.into();
            serde_json::to_vec(&record).ok()
        }),
    };
    // A commit the repository does not have: `git archive` fails.
    let bad = submission_of(repo.path(), |rev| {
        rev.sha = "0123456789abcdef0123456789abcdef01234567".into();
    });
    let err = fx
        .handle
        .submit_linked(bad, Some(remember(repo_id)))
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Source(_)), "{err}");
    assert!(fx.handle.list().await.unwrap().is_empty());
    assert!(store.all::<PipelineRecord>().unwrap().is_empty(), "stored");
    let record: serde_json::Value = store.repo(repo_id).unwrap().unwrap();
    assert_eq!(record["ran"], serde_json::Value::Null, "remembered as run");
    for dir in ["files/sources", "files/tmp"] {
        let left: Vec<_> = std::fs::read_dir(data.path().join(dir)).unwrap().collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    // Tried again: the first id, remembered with its pipeline, and it runs.
    let good = submission_of(repo.path(), |_| {});
    let id = fx
        .handle
        .submit_linked(good, Some(remember(repo_id)))
        .await
        .unwrap();
    assert_eq!(id, 1);
    let record: serde_json::Value = store.repo(repo_id).unwrap().unwrap();
    assert_eq!(record["ran"], 1);
    assert!(data.path().join("files/sources/1.tar.gz").exists());
    let rec = wait_for(&fx.handle, id, "the pipeline to pass", |r| {
        r.status().is_finished()
    })
    .await;
    assert_eq!(rec.status(), PipelineStatus::Success);
    fx.shut().await;
}

/// A pipeline stored without its source archive (the runner stopped
/// between the two, here: the archive deleted while it was down) does not
/// leave its jobs pending: at start they fail, without being launched,
/// with the reason in their message and log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_whose_source_archive_is_missing_fails_its_jobs_at_start_with_the_reason() {
    use berth_ci::exec::state::FailureReason;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner(&cluster, data.path()).await;
    // No agent has the tag: `build` stays pending.
    let repo = repo(
        "build:\n  tags: [nowhere]\n  script: [echo built]\nship:\n  stage: deploy\n  script: [echo shipped]\n",
    );
    let id = submit(&fx.handle, repo.path()).await;
    wait_for(&fx.handle, id, "build to wait for an agent", |r| {
        status_of(r, "build") == JobStatus::Pending
    })
    .await;
    fx.shut().await;
    std::fs::remove_file(data.path().join(format!("files/sources/{id}.tar.gz"))).unwrap();

    let fx = start_runner(&cluster, data.path()).await;
    // Decided before the runner takes any request.
    let rec = fx.handle.get(id).await.unwrap().unwrap();
    assert_eq!(status_of(&rec, "build"), JobStatus::Failed);
    assert_eq!(status_of(&rec, "ship"), JobStatus::Skipped);
    assert_eq!(rec.status(), PipelineStatus::Failed);
    let build = &rec.state.jobs()[rec.state.find("build").unwrap()];
    assert_eq!(build.attempts.len(), 1);
    let end = build.attempts[0].end.clone().unwrap();
    assert_eq!(end.reason, Some(FailureReason::MissingDependencyFailure));
    assert!(
        end.message
            .contains(&format!("the source archive of pipeline {id} is missing")),
        "{}",
        end.message
    );
    assert!(
        log_of(&fx.handle, &rec, "build").contains("source archive"),
        "the job's log says why"
    );
    let target = berth_ci::exec::api::log_target(&fx.handle, id, "build", None)
        .await
        .unwrap();
    assert!(target.finished, "nothing to collect");
    fx.shut().await;
}

/// Whether the latest attempt of `job` has ended and its log is whole, as
/// a viewer is told.
async fn log_finished(handle: &RunnerHandle, id: u64, job: &str) -> bool {
    berth_ci::exec::api::log_target(handle, id, job, None)
        .await
        .unwrap()
        .finished
}

/// After a restart the runner goes on collecting the logs of jobs that
/// had ended before their logs were whole, and viewers are told a log is
/// finished only once it is; a log that cannot be collected (its agent is
/// gone) is tried a few times and then ends with a line saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_logs_of_ended_jobs_are_resumed_at_start_or_end_with_a_line_saying_why() {
    use berth_ci::exec::collect::{LogRetry, Position, position_path};
    use berth_ci::exec::store::Store;
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = repo(
        "kept:\n  script:\n    - i=1; while [ $i -le 20 ]; do echo \"kept $i \"; i=$((i+1)); done\nlost:\n  script: [echo lost-line]\n",
    );
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit(&fx.handle, repo.path()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(log_finished(&fx.handle, id, "kept").await
        && log_finished(&fx.handle, id, "lost").await)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the jobs never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rec = fx.handle.get(id).await.unwrap().unwrap();
    assert_lines_once(&log_of(&fx.handle, &rec, "kept"), "kept", 20);
    fx.shut().await;

    // As if the runner had stopped while collecting both logs, after both
    // jobs were recorded as ended: the logs are cut back to nothing and
    // their positions are not done. And `lost` ran on an agent that is
    // gone.
    for job in ["kept", "lost"] {
        let log = PipelineRecord::log_path(data.path(), id, rec.state.find(job).unwrap(), 1);
        std::fs::write(&log, b"").unwrap();
        std::fs::write(
            position_path(&log),
            serde_json::to_vec(&Position::default()).unwrap(),
        )
        .unwrap();
    }
    {
        let store = Store::open(data.path().join("ci.redb")).unwrap();
        let mut stored: PipelineRecord = store.get(id).unwrap().unwrap();
        let lost = stored.state.find("lost").unwrap();
        stored.agents[lost] = "gone-agent".into();
        let task = stored.state.jobs()[lost].attempts[0].task_id.clone();
        stored.attempt_agents.insert(task, "gone-agent".into());
        store.put(id, &stored).unwrap();
    }

    let fx = start_runner_with(&cluster, data.path(), |c| {
        c.log_retry = LogRetry {
            tries: 3,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(100),
        };
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let kept = log_finished(&fx.handle, id, "kept").await;
        let lost = log_finished(&fx.handle, id, "lost").await;
        let rec = fx.handle.get(id).await.unwrap().unwrap();
        if kept {
            // Told finished: the whole log is there.
            assert_lines_once(&log_of(&fx.handle, &rec, "kept"), "kept", 20);
        }
        if kept && lost {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the logs were never finished (kept: {kept}, lost: {lost})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rec = fx.handle.get(id).await.unwrap().unwrap();
    let kept = log_of(&fx.handle, &rec, "kept");
    assert_lines_once(&kept, "kept", 20);
    assert_eq!(kept.matches("Job succeeded").count(), 1, "{kept}");
    assert_eq!(
        log_of(&fx.handle, &rec, "lost"),
        "[berth] the rest of this log could not be collected: the address of agent \"gone-agent\" is not known\n"
    );
    assert_eq!(status_of(&rec, "lost"), JobStatus::Success, "as it was");
    fx.shut().await;
}

/// One request to `router` with a raw body and content type; the status,
/// the content type and the body.
async fn call_raw(
    router: &axum::Router,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let mut builder = axum::http::Request::builder().method(method).uri(uri);
    if let Some(t) = content_type {
        builder = builder.header("content-type", t);
    }
    let request = builder
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

/// Bad input to the HTTP API (body, path, query) gets the documented JSON
/// 400 and changes nothing; the gRPC API shows what expired as the HTTP
/// API does (an expired log is NOT_FOUND), and its log streams end with
/// UNAVAILABLE when the server shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_gets_json_400_and_grpc_shows_expiry_and_stops_streams_at_shutdown() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start_runner_with(&cluster, data.path(), |c| {
        c.log_retention = Some(Duration::from_secs(1));
    })
    .await;
    let api = berth_ci::exec::api::router(fx.handle.clone());
    // `waiting` never finds an agent with its tag.
    let repo = repo(
        "build:\n  script: [echo built]\nwaiting:\n  tags: [nowhere]\n  script: [echo never]\n",
    );
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, id, "build to pass", |r| {
        status_of(r, "build") == JobStatus::Success
    })
    .await;

    let log = format!("/ci/v1/pipelines/{id}/jobs/build/log");
    let bad: Vec<(&str, String, Option<&str>, &str, &str)> = vec![
        (
            "POST",
            "/ci/v1/pipelines".into(),
            None,
            "repository=/src",
            "the body is not a pipeline trigger",
        ),
        (
            "POST",
            "/ci/v1/pipelines".into(),
            Some("application/json"),
            "{}",
            "missing field `repository`",
        ),
        (
            "POST",
            "/ci/v1/pipelines".into(),
            Some("application/json"),
            r#"{"repository": 5}"#,
            "invalid type",
        ),
        (
            "POST",
            "/ci/v1/pipelines".into(),
            Some("text/plain"),
            r#"{"repository": "relative"}"#,
            "must be an absolute path",
        ),
        ("GET", "/ci/v1/pipelines/abc".into(), None, "", "abc"),
        ("POST", "/ci/v1/pipelines/-1/cancel".into(), None, "", "-1"),
        (
            "POST",
            "/ci/v1/pipelines/99999999999999999999999/retry".into(),
            None,
            "",
            "99999999999999999999999",
        ),
        (
            "POST",
            "/ci/v1/pipelines/x/jobs/build/play".into(),
            None,
            "",
            "x",
        ),
        ("GET", format!("{log}?offset=-1"), None, "", "offset"),
        ("GET", format!("{log}?attempt=first"), None, "", "attempt"),
        ("GET", format!("{log}?full=maybe"), None, "", "full"),
    ];
    for (method, uri, content_type, body, why) in &bad {
        let (code, kind, answer) = call_raw(&api, method, uri, *content_type, body).await;
        assert_eq!(code, 400, "{method} {uri}: {answer}");
        assert_eq!(kind, "application/json", "{method} {uri}: {answer}");
        let json: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {answer}"));
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{method} {uri}: {error:?}");
    }
    // A body over the limit: 413, and JSON too.
    let huge = format!(
        r#"{{"repository": "/src", "pad": "{}"}}"#,
        "x".repeat(berth_ci::exec::api::MAX_BODY_BYTES)
    );
    let (code, kind, answer) = call_raw(
        &api,
        "POST",
        "/ci/v1/pipelines",
        Some("application/json"),
        &huge,
    )
    .await;
    assert_eq!((code, kind.as_str()), (413, "application/json"), "{answer}");
    assert!(
        answer.contains("request body is over the 2097152 bytes"),
        "{answer}"
    );
    // A megabyte in a path, a job name, a repository, a reference or a
    // variable name: refused with the value quoted cut short.
    // A URI holds at most 64 KiB (the `http` crate's limit), a body 2 MiB.
    let mb = "x".repeat(1 << 20);
    let long = "x".repeat(60_000);
    for (method, uri, body, why) in [
        (
            "GET",
            format!("/ci/v1/pipelines/{long}"),
            String::new(),
            "message cut",
        ),
        (
            "POST",
            format!("/ci/v1/pipelines/{id}/jobs/{long}/play"),
            String::new(),
            "(60000 bytes)",
        ),
        (
            "GET",
            format!("/ci/v1/pipelines/{id}/jobs/{long}/log"),
            String::new(),
            "(60000 bytes)",
        ),
        (
            "POST",
            "/ci/v1/pipelines".to_string(),
            format!(r#"{{"repository": "{mb}"}}"#),
            "(1048576 bytes) must be an absolute path",
        ),
        (
            "POST",
            "/ci/v1/pipelines".to_string(),
            format!(r#"{{"repository": "/{mb}"}}"#),
            "is longer than 4096 bytes",
        ),
    ] {
        let (code, _, answer) = call_raw(&api, method, &uri, Some("application/json"), &body).await;
        let shown: String = answer.chars().take(300).collect();
        assert!(matches!(code, 400 | 404), "{method}: {code} {shown}");
        assert!(answer.contains(why), "{method}: {shown}");
        assert!(
            answer.len() < 4096,
            "{method}: {} bytes: {shown}",
            answer.len()
        );
    }

    let all = fx.handle.list().await.unwrap();
    assert_eq!(all.len(), 1, "nothing was created");
    assert_eq!(status_of(&all[0], "build"), JobStatus::Success);

    // The build log passes its retention and is swept.
    let finished = rec.state.jobs()[rec.state.find("build").unwrap()].attempts[0]
        .finished
        .unwrap();
    sleep_past(finished, Duration::from_millis(1200)).await;
    let report = fx.handle.sweep_expired().await.unwrap();
    assert!(report.logs >= 1, "{report:?}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = berth_ci::exec::grpc::router(fx.handle.clone(), shutdown.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service()).await;
    });
    let mut client = CiClient::connect(url).await.unwrap();
    // Megabyte job names, repositories, references and variable names over
    // gRPC: short errors, trailers a standard client accepts.
    let short = |what: &str, e: tonic::Status, code: tonic::Code, why: &str| {
        let shown: String = e.message().chars().take(300).collect();
        assert_eq!(e.code(), code, "{what}: {shown}");
        assert!(e.message().contains(why), "{what}: {shown}");
        assert!(
            e.message().len() <= 1024,
            "{what}: {} bytes",
            e.message().len()
        );
    };
    let play = client
        .play_job(ci::PlayJobRequest {
            pipeline: id,
            job: mb.clone(),
        })
        .await
        .unwrap_err();
    short("play", play, tonic::Code::NotFound, "(1048576 bytes)");
    let retry = client
        .retry_job(ci::RetryJobRequest {
            pipeline: id,
            job: mb.clone(),
        })
        .await
        .unwrap_err();
    short("retry", retry, tonic::Code::NotFound, "(1048576 bytes)");
    let follow = client
        .follow_job_log(log_request(id, &mb))
        .await
        .unwrap_err();
    short("follow", follow, tonic::Code::NotFound, "(1048576 bytes)");
    let trigger = |f: &dyn Fn(&mut ci::TriggerPipelineRequest)| {
        let mut t = ci::TriggerPipelineRequest {
            repository: repo.path().to_string_lossy().into_owned(),
            ..Default::default()
        };
        f(&mut t);
        t
    };
    for (what, request, why) in [
        (
            "repository",
            trigger(&|t| t.repository = format!("/{mb}")),
            "longer than 4096 bytes",
        ),
        (
            "reference",
            trigger(&|t| t.reference = Some(mb.clone())),
            "(1048576 bytes) must be at most 4096 bytes",
        ),
        (
            "variable",
            trigger(&|t| {
                t.variables = vec![ci::TriggerVariable {
                    name: format!("{mb}-"),
                    value: "v".into(),
                    masked: false,
                }]
            }),
            "(1048577 bytes) is not a variable name",
        ),
    ] {
        let e = client.trigger_pipeline(request).await.unwrap_err();
        short(what, e, tonic::Code::InvalidArgument, why);
    }
    assert_eq!(
        fx.handle.list().await.unwrap().len(),
        1,
        "nothing was created"
    );
    let view = client
        .get_pipeline(ci::GetPipelineRequest { id })
        .await
        .unwrap()
        .into_inner();
    let build = job_of(&view, "build");
    assert!(build.log_expired, "{build:?}");
    assert!(!build.artifacts_expired, "{build:?}");
    assert!(!job_of(&view, "waiting").log_expired);
    let gone = client
        .follow_job_log(log_request(id, "build"))
        .await
        .expect_err("an expired log");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert!(gone.message().contains("expired"), "{}", gone.message());

    // A follower of a job that has not started waits ... until shutdown.
    let mut stream = client
        .follow_job_log(log_request(id, "waiting"))
        .await
        .unwrap()
        .into_inner();
    let early = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(early.is_err(), "nothing to send yet: {early:?}");
    shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends at shutdown")
        .expect_err("ended as unavailable");
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    server.abort();
    drop(api);
    fx.shut().await;
}
