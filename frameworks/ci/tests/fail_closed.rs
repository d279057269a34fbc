//! The CI runner fails closed: when a pipeline's record cannot be stored,
//! the runner stops with the reason instead of going on, and a runner
//! started again on the same data (writes working) picks the job up where
//! the stored state left it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use berth_ci::PipelineSource;
use berth_ci::exec::runner::{PipelineRecord, RunnerHandle, Submission};
use berth_ci::exec::source;
use berth_ci::exec::state::JobStatus;
use berth_tests::Cluster;
use common::ci_fixture;

mod common;

fn job_status(rec: &PipelineRecord) -> JobStatus {
    rec.state.jobs()[0].status
}

async fn wait_for_job(handle: &RunnerHandle, id: u64, want: JobStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rec = handle.get(id).await.unwrap().expect("the pipeline exists");
        if job_status(&rec) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {want:?}: {:?}",
            job_status(&rec)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_stops_the_runner_and_loses_nothing() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = berth_tests::git_repo(&[(
        ".gitlab-ci.yml",
        "slow:\n  script:\n    - echo started\n    - sleep 2\n",
    )]);
    let fx = ci_fixture::start(&cluster, data.path(), |_| {}).await;
    let handle = fx.handle.clone();
    let revision = source::resolve(repo.path(), None, false).unwrap();
    let definition = std::fs::read_to_string(repo.path().join(".gitlab-ci.yml")).unwrap();
    let id = handle
        .submit(Submission {
            revision,
            definition,
            source: PipelineSource::Push,
            variables: Vec::new(),
        })
        .await
        .unwrap();
    wait_for_job(&handle, id, JobStatus::Running).await;
    assert_eq!(handle.failure(), None);

    // The disk fills up: the job's end cannot be stored.
    handle.store().fail_writes(true);
    fx.wait_stopped(Duration::from_secs(120)).await;
    let why = handle.failure().expect("the runner says why it stopped");
    assert!(
        why.starts_with(&format!("cannot store pipeline {id}: ")) && why.contains("fault injected"),
        "{why}"
    );
    // What is stored is what was true before the failed write.
    let stored: PipelineRecord = handle.store().get(id).unwrap().unwrap();
    assert_eq!(job_status(&stored), JobStatus::Running);
    // The handle holds the state file.
    drop(handle);

    // A new runner on the same data re-attaches and records the job's end.
    let fx = ci_fixture::start(&cluster, data.path(), |_| {}).await;
    wait_for_job(&fx.handle, id, JobStatus::Success).await;
    assert_eq!(fx.handle.failure(), None);
    fx.shut().await;
}
