//! Child pipelines (`trigger:include`) against an in-process cluster:
//! a runner restart while the child waits goes on with it, canceling the
//! parent cancels the child, and a retried depend trigger job makes a new
//! child.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use berth_ci::PipelineSource;
use berth_ci::exec::runner::{PipelineRecord, RunnerHandle, Submission};
use berth_ci::exec::source;
use berth_ci::exec::state::{JobStatus, PipelineStatus};
use berth_tests::Cluster;
use common::ci_fixture::{self, CiFixture as Fixture};

mod common;

async fn start_runner(cluster: &Cluster, data: &Path) -> Fixture {
    ci_fixture::start(cluster, data, |config| {
        config.kill_grace = Duration::from_secs(5);
    })
    .await
}

async fn submit(handle: &RunnerHandle, repo: &Path) -> u64 {
    let revision = source::resolve(repo, None, false).unwrap();
    let definition = std::fs::read_to_string(repo.join(".gitlab-ci.yml")).unwrap();
    handle
        .submit(Submission {
            revision,
            definition,
            source: PipelineSource::Push,
            variables: vec![berth_ci::SecretVariable {
                name: "GIVEN".into(),
                value: "by-hand".into(),
                masked: false,
            }],
        })
        .await
        .unwrap()
}

async fn wait_for(
    handle: &RunnerHandle,
    id: u64,
    what: &str,
    done: impl Fn(&PipelineRecord) -> bool,
) -> std::sync::Arc<PipelineRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(rec) = handle.get(id).await.unwrap()
            && done(&rec)
        {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_of(rec: &PipelineRecord, name: &str) -> JobStatus {
    let i = rec.state.find(name).expect("job exists");
    rec.state.jobs()[i].status
}

const PARENT: &str = "kid:\n  trigger:\n    include: child.yml\n    strategy: depend\n    forward: {pipeline_variables: true}\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_child_goes_on_after_a_runner_restart_and_ends_its_depend_job() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = berth_tests::git_repo(&[
        (".gitlab-ci.yml", PARENT),
        (
            "child.yml",
            "ship:\n  when: manual\n  allow_failure: false\n  script: ['test \"$GIVEN\" = by-hand', 'test \"$CI_PIPELINE_SOURCE\" = parent_pipeline']\n",
        ),
    ]);
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, id, "the child", |r| {
        !r.family.children.is_empty()
    })
    .await;
    let child = rec.family.children[0].pipeline;
    assert_eq!(status_of(&rec, "kid"), JobStatus::Running);
    let kid = wait_for(&fx.handle, child, "the manual job", |r| {
        status_of(r, "ship") == JobStatus::Manual
    })
    .await;
    let link = kid.family.parent.unwrap();
    assert_eq!((link.pipeline, link.job, link.attempt), (id, 0, 1));
    assert_eq!(kid.source, "parent_pipeline");
    fx.shut().await;

    // A new runner finds both as they were: the depend job still waits.
    let fx = start_runner(&cluster, data.path()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rec = fx.handle.get(id).await.unwrap().unwrap();
    assert_eq!(status_of(&rec, "kid"), JobStatus::Running);
    assert_eq!(rec.family.children.len(), 1, "not created twice");
    fx.handle.play(child, "ship").await.unwrap();
    let rec = wait_for(&fx.handle, id, "the parent", |r| r.status().is_finished()).await;
    assert_eq!(rec.status(), PipelineStatus::Success);
    let kid = fx.handle.get(child).await.unwrap().unwrap();
    assert_eq!(kid.status(), PipelineStatus::Success);
    let log = std::fs::read_to_string(fx.handle.log_path(id, 0, 1)).unwrap();
    assert!(
        log.contains(&format!("Created child pipeline #{child}")),
        "{log}"
    );
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn canceling_the_parent_cancels_the_child_and_a_retried_trigger_job_makes_a_new_one() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = berth_tests::git_repo(&[
        (".gitlab-ci.yml", PARENT),
        ("child.yml", "slow:\n  script: [sleep 30]\n"),
    ]);
    let fx = start_runner(&cluster, data.path()).await;
    let id = submit(&fx.handle, repo.path()).await;
    let rec = wait_for(&fx.handle, id, "the child", |r| {
        !r.family.children.is_empty()
    })
    .await;
    let child = rec.family.children[0].pipeline;
    wait_for(&fx.handle, child, "the child's job", |r| {
        status_of(r, "slow") == JobStatus::Running
    })
    .await;
    fx.handle.cancel(id).await.unwrap();
    let kid = wait_for(&fx.handle, child, "the child canceled", |r| {
        r.status() == PipelineStatus::Canceled
    })
    .await;
    assert_eq!(status_of(&kid, "slow"), JobStatus::Canceled);
    let rec = wait_for(&fx.handle, id, "the parent canceled", |r| {
        r.status() == PipelineStatus::Canceled
    })
    .await;
    assert_eq!(status_of(&rec, "kid"), JobStatus::Canceled);

    // Retried, the trigger job makes a new child for its second attempt.
    fx.handle.retry_job(id, "kid").await.unwrap();
    let rec = wait_for(&fx.handle, id, "a second child", |r| {
        r.family.children.len() == 2
    })
    .await;
    let second = rec.family.children[1];
    assert_eq!((second.job, second.attempt), (0, 2));
    assert_ne!(second.pipeline, child);
    fx.handle.cancel(id).await.unwrap();
    wait_for(
        &fx.handle,
        second.pipeline,
        "the second child canceled",
        |r| r.status() == PipelineStatus::Canceled && r.state.running().is_empty(),
    )
    .await;
    fx.shut().await;
}
