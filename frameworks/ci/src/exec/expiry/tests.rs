use std::time::{Duration, SystemTime};

use super::*;
use crate::exec::state::{
    AllowFailure, JobEnd, JobNode, JobStatus, Pipeline, RetryPolicy, When as StateWhen,
};
use crate::{Config, Context, MemoryRepository, ParseOptions, PipelineSource};

const DAY: Duration = Duration::from_secs(86_400);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A pipeline record of `yaml` on `ref_name`, every job created.
fn record(id: u64, ref_name: &str, yaml: &str) -> PipelineRecord {
    let (config, _) = Config::parse(yaml, &ParseOptions::default()).unwrap();
    let ctx = Context {
        project_name: "demo".into(),
        project_dir: "/builds/demo".into(),
        commit_sha: "0123456789abcdef0123456789abcdef01234567".into(),
        ref_name: ref_name.into(),
        ref_is_tag: false,
        default_branch: "main".into(),
        pipeline_id: id,
        source: PipelineSource::Push,
        changed_files: None,
        secrets: Vec::new(),
        ..Default::default()
    };
    let plan = config
        .plan(&ctx, &MemoryRepository::default())
        .unwrap()
        .unwrap();
    let nodes = plan
        .jobs
        .iter()
        .map(|j| JobNode {
            name: j.name.clone(),
            stage: j.stage_index,
            needs: j.needs.as_ref().map(|needs| {
                needs
                    .iter()
                    .filter_map(|n| plan.jobs.iter().position(|k| k.name == n.job))
                    .collect()
            }),
            when: if j.when == crate::When::Manual {
                StateWhen::Manual
            } else {
                StateWhen::OnSuccess
            },
            allow_failure: AllowFailure {
                any: j.allow_failure.any,
                exit_codes: Vec::new(),
            },
            retry: RetryPolicy {
                max: j.retry.max,
                ..RetryPolicy::default()
            },
        })
        .collect();
    let jobs = plan.jobs.len();
    PipelineRecord {
        id,
        project: "demo".into(),
        sha: ctx.commit_sha.clone(),
        ref_name: ref_name.into(),
        source: "push".into(),
        token: "token".into(),
        created_ms: 0,
        finished_ms: None,
        plan,
        state: Pipeline::new(nodes).unwrap(),
        masked_values: Vec::new(),
        agents: vec![String::new(); jobs],
        attempt_agents: Default::default(),
        kill_reasons: vec![None; jobs],
        repository: "/src/demo".into(),
        branch: true,
        auto_canceled_by: None,
        waiting_for_resource: Vec::new(),
        expired: Expired::default(),
        reports: BTreeMap::new(),
        family: Default::default(),
        stuck: Vec::new(),
    }
}

/// Runs every job that becomes pending to the end `end` gives it, each
/// finishing at `at`.
fn run_all(rec: &mut PipelineRecord, at: SystemTime, end: impl Fn(&str) -> JobEnd) {
    loop {
        rec.state.advance(at);
        let pending = rec.state.pending();
        if pending.is_empty() {
            break;
        }
        for i in pending {
            let name = rec.state.nodes()[i].name.clone();
            rec.state.started(i, format!("task-{i}"), at).unwrap();
            rec.state.finished(i, end(&name), at).unwrap();
        }
    }
}

fn pass(_: &str) -> JobEnd {
    JobEnd::success()
}

const BUILD_TEST: &str = "build:\n  stage: build\n  script: [make]\n  artifacts:\n    paths: [out/]\n    expire_in: 1 hour\nlogs-only:\n  stage: build\n  script: [make]\ntest:\n  stage: test\n  when: manual\n  script: [make test]\n";

fn map(recs: Vec<PipelineRecord>) -> BTreeMap<u64, PipelineRecord> {
    recs.into_iter().map(|r| (r.id, r)).collect()
}

fn policy(keep_latest: bool) -> Policy {
    Policy {
        artifacts_default: DEFAULT_ARTIFACT_EXPIRY,
        logs: None,
        keep_latest_artifacts: keep_latest,
        sources: None,
    }
}

/// No log being collected.
fn none() -> Collecting {
    Collecting::default()
}

fn artifacts_due(due: &[Due]) -> Vec<(u64, &str)> {
    due.iter()
        .filter_map(|d| match d {
            Due::Artifacts { pipeline, name, .. } => Some((*pipeline, name.as_str())),
            Due::Logs { .. } | Due::Source { .. } => None,
        })
        .collect()
}

#[test]
fn artifacts_expire_after_expire_in_from_the_jobs_end() {
    let mut rec = record(1, "main", BUILD_TEST);
    run_all(&mut rec, t0(), pass);
    let all = map(vec![rec]);
    let p = policy(false);
    assert!(due(&all, t0() + Duration::from_secs(3599), &p, &none()).is_empty());
    let d = due(&all, t0() + Duration::from_secs(3600), &p, &none());
    assert_eq!(
        d,
        vec![Due::Artifacts {
            pipeline: 1,
            job: 0,
            name: "build".into(),
            attempt: 1
        }]
    );
}

#[test]
fn without_expire_in_artifacts_keep_the_default_and_never_keeps_them() {
    let yaml = "a:\n  script: [x]\n  artifacts:\n    paths: [a]\nb:\n  script: [x]\n  artifacts:\n    paths: [b]\n    expire_in: never\n";
    let mut rec = record(1, "main", yaml);
    assert!(rec.plan.jobs[1].artifacts.as_ref().unwrap().expire_never);
    run_all(&mut rec, t0(), pass);
    let all = map(vec![rec]);
    let p = policy(false);
    assert!(due(&all, t0() + 29 * DAY, &p, &none()).is_empty());
    // 30 days (GitLab's default) for `a`; `b` stays for ever.
    assert_eq!(
        artifacts_due(&due(&all, t0() + 30 * DAY, &p, &none())),
        [(1, "a")]
    );
    assert_eq!(
        artifacts_due(&due(&all, t0() + 10_000 * DAY, &p, &none())),
        [(1, "a")]
    );
}

#[test]
fn the_latest_successful_pipeline_of_each_ref_keeps_its_artifacts() {
    let later = t0() + 2 * DAY;
    let mut p1 = record(1, "main", BUILD_TEST);
    run_all(&mut p1, t0(), pass);
    let mut p2 = record(2, "main", BUILD_TEST);
    run_all(&mut p2, t0(), pass);
    // A newer pipeline of main that failed does not count.
    let mut p3 = record(3, "main", BUILD_TEST);
    run_all(&mut p3, t0(), |_| JobEnd::script_failure(1));
    let mut other = record(4, "feature", BUILD_TEST);
    run_all(&mut other, t0(), pass);
    assert_eq!(p2.status(), PipelineStatus::Success);
    assert_eq!(p3.status(), PipelineStatus::Failed);
    let all = map(vec![p1, p2, p3, other]);
    // Pipeline 2 is main's latest success, 4 is feature's: both kept.
    assert_eq!(
        artifacts_due(&due(&all, later, &policy(true), &none())),
        [(1, "build"), (3, "build")]
    );
    assert_eq!(
        artifacts_due(&due(&all, later, &policy(false), &none())),
        [(1, "build"), (2, "build"), (3, "build"), (4, "build")]
    );
}

#[test]
fn logs_expire_after_the_retention_per_attempt() {
    let yaml = "build:\n  script: [x]\n  retry: 1\n";
    let mut rec = record(1, "main", yaml);
    rec.state.advance(t0());
    rec.state.started(0, "t1", t0()).unwrap();
    // The first attempt fails and is retried; the second ends a day later.
    assert!(
        rec.state
            .finished(0, JobEnd::script_failure(1), t0())
            .unwrap()
    );
    rec.state.started(0, "t2", t0() + DAY).unwrap();
    rec.state
        .finished(0, JobEnd::success(), t0() + DAY)
        .unwrap();
    let mut all = map(vec![rec]);
    let p = Policy {
        logs: Some(7 * DAY),
        ..policy(false)
    };
    assert!(due(&all, t0() + 6 * DAY, &p, &none()).is_empty());
    assert_eq!(
        due(&all, t0() + 7 * DAY, &p, &none()),
        [Due::Logs {
            pipeline: 1,
            job: 0,
            from: 1,
            to: 1
        }]
    );
    // Once the first is marked, only the second is left, a day later.
    all.get_mut(&1).unwrap().expired.logs.insert(0, 1);
    assert!(due(&all, t0() + 7 * DAY, &p, &none()).is_empty());
    assert_eq!(
        due(&all, t0() + 8 * DAY, &p, &none()),
        [Due::Logs {
            pipeline: 1,
            job: 0,
            from: 2,
            to: 2
        }]
    );
    // No retention: logs stay.
    assert!(due(&all, t0() + 1000 * DAY, &policy(false), &none()).is_empty());
}

#[test]
fn a_running_job_and_an_expired_attempt_are_not_due() {
    let mut rec = record(1, "main", BUILD_TEST);
    rec.state.advance(t0());
    rec.state.started(0, "t", t0()).unwrap();
    let all = map(vec![rec.clone()]);
    let p = Policy {
        logs: Some(DAY),
        ..policy(false)
    };
    assert!(
        due(&all, t0() + 100 * DAY, &p, &none()).is_empty(),
        "still running"
    );
    rec.state.finished(0, JobEnd::success(), t0()).unwrap();
    rec.expired.artifacts.insert(0, 1);
    let all = map(vec![rec.clone()]);
    assert!(artifacts_due(&due(&all, t0() + 100 * DAY, &p, &none())).is_empty());
    // A newer attempt's artifacts are new: they expire again.
    rec.state.retry_job(0).unwrap();
    rec.state.started(0, "t2", t0()).unwrap();
    rec.state.finished(0, JobEnd::success(), t0()).unwrap();
    assert!(!rec.expired.artifacts_expired(0, 2));
    let all = map(vec![rec]);
    assert_eq!(
        artifacts_due(&due(&all, t0() + 100 * DAY, &p, &none())),
        [(1, "build")]
    );
}

#[test]
fn artifact_sources_follow_dependencies_needs_and_stages() {
    let yaml = "a:\n  stage: build\n  script: [x]\nb:\n  stage: build\n  script: [x]\nc:\n  stage: test\n  script: [x]\nd:\n  stage: test\n  needs: [a, {job: b, artifacts: false}]\n  script: [x]\ne:\n  stage: test\n  dependencies: [b]\n  script: [x]\nf:\n  stage: test\n  needs: []\n  script: [x]\n";
    let rec = record(1, "main", yaml);
    let names = |i: usize| -> Vec<&str> {
        artifact_sources(&rec.plan, i)
            .into_iter()
            .map(|k| rec.plan.jobs[k].name.as_str())
            .collect()
    };
    let at = |n: &str| rec.plan.jobs.iter().position(|j| j.name == n).unwrap();
    assert_eq!(names(at("a")), Vec::<&str>::new());
    assert_eq!(names(at("c")), ["a", "b"]);
    assert_eq!(names(at("d")), ["a"]);
    assert_eq!(names(at("e")), ["b"]);
    assert_eq!(names(at("f")), Vec::<&str>::new());
    assert!(artifact_sources(&rec.plan, 99).is_empty());
}

#[tokio::test]
async fn the_sweep_deletes_files_and_marks_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::new(dir.path().join("files"), 1 << 20).unwrap();
    let mut rec = record(1, "main", BUILD_TEST);
    run_all(&mut rec, t0(), pass);
    let archive = files.artifacts(1, "build").unwrap();
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    std::fs::write(&archive, b"tar.gz").unwrap();
    let logs: Vec<_> = (0..2)
        .map(|j| PipelineRecord::log_path(dir.path(), 1, j, 1))
        .collect();
    std::fs::create_dir_all(logs[0].parent().unwrap()).unwrap();
    for log in &logs {
        std::fs::write(log, b"log\n").unwrap();
        // The log collector's position file goes with its log.
        std::fs::write(crate::exec::collect::position_path(log), b"{}").unwrap();
    }
    let mut all = map(vec![rec]);
    let p = Policy {
        logs: Some(DAY),
        ..policy(false)
    };
    let (report, changed) = sweep(&mut all, &files, dir.path(), &p, t0() + 2 * DAY, &none()).await;
    assert_eq!(
        report,
        SweepReport {
            artifacts: 1,
            logs: 2,
            sources: 0
        }
    );
    assert_eq!(changed, [1]);
    assert!(!archive.exists());
    assert!(logs.iter().all(|l| !l.exists()));
    assert!(
        !logs[0].parent().unwrap().exists(),
        "the empty log dir went"
    );
    let rec = &all[&1];
    assert!(rec.expired.artifacts_expired(0, 1));
    assert!(rec.expired.log_expired(0, 1) && rec.expired.log_expired(1, 1));
    assert!(!rec.expired.log_expired(0, 2));
    // Nothing left to do.
    let (report, changed) = sweep(&mut all, &files, dir.path(), &p, t0() + 3 * DAY, &none()).await;
    assert_eq!(report, SweepReport::default());
    assert!(changed.is_empty());
}

#[tokio::test]
async fn artifacts_never_uploaded_are_not_called_expired() {
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::new(dir.path().join("files"), 1 << 20).unwrap();
    let mut rec = record(1, "main", BUILD_TEST);
    run_all(&mut rec, t0(), pass);
    let mut all = map(vec![rec]);
    let (report, changed) = sweep(
        &mut all,
        &files,
        dir.path(),
        &policy(false),
        t0() + 2 * DAY,
        &none(),
    )
    .await;
    assert_eq!(report, SweepReport::default());
    assert!(changed.is_empty());
    assert!(!all[&1].expired.artifacts_expired(0, 1));
}

#[tokio::test]
async fn a_job_needing_expired_artifacts_fails_with_a_missing_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record(1, "main", BUILD_TEST);
    run_all(&mut rec, t0(), pass);
    let test = rec.state.find("test").unwrap();
    assert_eq!(rec.state.jobs()[test].status, JobStatus::Manual);
    rec.expired.artifacts.insert(0, 1);
    rec.state.play(test).unwrap();
    assert_eq!(expired_dependency(&rec, test), Some(0));
    let mut all = map(vec![rec]);
    let changed = fail_expired_dependencies(&mut all, dir.path(), t0()).await;
    assert_eq!(changed, [1]);
    let rec = &all[&1];
    let job = &rec.state.jobs()[test];
    assert_eq!(job.status, JobStatus::Failed);
    let end = job.attempts[0].end.clone().unwrap();
    assert_eq!(end.reason, Some(FailureReason::MissingDependencyFailure));
    assert!(end.message.contains("\"build\" expired"), "{}", end.message);
    let log = std::fs::read_to_string(PipelineRecord::log_path(dir.path(), 1, test, 1)).unwrap();
    assert!(log.contains("missing dependency"), "{log}");
    // Nothing else is pending: a second call changes nothing.
    assert!(
        fail_expired_dependencies(&mut all, dir.path(), t0())
            .await
            .is_empty()
    );
}

#[test]
fn the_latest_success_is_kept_per_repository_not_per_project_name() {
    // Two repositories whose projects are both named `demo`, each with one
    // successful pipeline of main: each is its repository's latest.
    let mut a = record(1, "main", BUILD_TEST);
    run_all(&mut a, t0(), pass);
    let mut b = record(2, "main", BUILD_TEST);
    b.repository = "/src/other/demo".into();
    run_all(&mut b, t0(), pass);
    assert_eq!(a.project, b.project);
    let all = map(vec![a, b]);
    assert!(artifacts_due(&due(&all, t0() + 2 * DAY, &policy(true), &none())).is_empty());
    // Records stored before `repository` existed fall back to the name: of
    // two such, only the newer is kept.
    let mut all = all;
    for rec in all.values_mut() {
        rec.repository.clear();
    }
    assert_eq!(
        artifacts_due(&due(&all, t0() + 2 * DAY, &policy(true), &none())),
        [(1, "build")]
    );
}

#[test]
fn a_log_still_being_collected_is_not_due() {
    let yaml = "build:\n  script: [x]\n  retry: 1\n";
    let mut rec = record(1, "main", yaml);
    rec.state.advance(t0());
    rec.state.started(0, "t1", t0()).unwrap();
    assert!(
        rec.state
            .finished(0, JobEnd::script_failure(1), t0())
            .unwrap()
    );
    rec.state.started(0, "t2", t0()).unwrap();
    rec.state.finished(0, JobEnd::success(), t0()).unwrap();
    let all = map(vec![rec]);
    let p = Policy {
        logs: Some(DAY),
        ..policy(false)
    };
    let logs = |collecting: &Collecting| {
        due(&all, t0() + 2 * DAY, &p, collecting)
            .into_iter()
            .filter_map(|d| match d {
                Due::Logs { from, to, .. } => Some((from, to)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The second attempt's log is still being collected (a runner that
    // restarted resumes it): only the first goes.
    let collecting = Collecting::default();
    let guard = collecting.start("t2").unwrap();
    assert_eq!(logs(&collecting), [(1, 1)]);
    // The first being collected holds back the second too (the expired
    // logs are a prefix of the attempts).
    let first = collecting.start("t1").unwrap();
    assert!(logs(&collecting).is_empty());
    drop((guard, first));
    assert_eq!(logs(&collecting), [(1, 2)]);
}

#[tokio::test]
async fn the_sweep_leaves_a_log_being_collected_and_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::new(dir.path().join("files"), 1 << 20).unwrap();
    let mut rec = record(1, "main", "build:\n  script: [x]\n");
    run_all(&mut rec, t0(), pass);
    let log = PipelineRecord::log_path(dir.path(), 1, 0, 1);
    let pos = crate::exec::collect::position_path(&log);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, b"log\n").unwrap();
    std::fs::write(&pos, b"{}").unwrap();
    let mut all = map(vec![rec]);
    let p = Policy {
        logs: Some(DAY),
        ..policy(false)
    };
    let collecting = Collecting::default();
    let guard = collecting.start("task-0").unwrap();
    let (report, changed) = sweep(
        &mut all,
        &files,
        dir.path(),
        &p,
        t0() + 2 * DAY,
        &collecting,
    )
    .await;
    assert_eq!(report, SweepReport::default());
    assert!(changed.is_empty());
    assert!(log.exists() && pos.exists(), "still being collected");
    assert!(!all[&1].expired.log_expired(0, 1));
    // Once the collection has ended, the next sweep deletes both.
    drop(guard);
    let (report, changed) = sweep(
        &mut all,
        &files,
        dir.path(),
        &p,
        t0() + 2 * DAY,
        &collecting,
    )
    .await;
    assert_eq!(report.logs, 1);
    assert_eq!(changed, [1]);
    assert!(!log.exists() && !pos.exists());
}

fn sources_due(due: &[Due]) -> Vec<u64> {
    due.iter()
        .filter_map(|d| match d {
            Due::Source { pipeline } => Some(*pipeline),
            _ => None,
        })
        .collect()
}

/// Millisecond timestamp of `at`.
fn ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_source_expires_after_its_finished_pipeline_unless_a_job_may_still_run() {
    let p = Policy {
        sources: Some(7 * DAY),
        ..policy(false)
    };
    // Every job finished (the manual job was played and passed).
    let yaml = "build:\n  script: [x]\n";
    let mut done = record(1, "main", yaml);
    run_all(&mut done, t0(), pass);
    done.finished_ms = Some(ms(t0() + DAY));
    // A manual job not played yet keeps the source: playing it needs it.
    let mut manual = record(2, "main", BUILD_TEST);
    run_all(&mut manual, t0(), pass);
    manual.finished_ms = Some(ms(t0()));
    assert_eq!(manual.status(), PipelineStatus::Success);
    // A pending or running job keeps it too.
    let mut running = record(3, "main", yaml);
    running.state.advance(t0());
    running.state.started(0, "t", t0()).unwrap();
    // A failed pipeline finished: its source goes like the others.
    let mut failed = record(4, "main", yaml);
    run_all(&mut failed, t0(), |_| JobEnd::script_failure(1));
    failed.finished_ms = Some(ms(t0()));
    let mut all = map(vec![done, manual, running, failed]);
    assert_eq!(sources_due(&due(&all, t0() + 7 * DAY, &p, &none())), [4]);
    assert_eq!(sources_due(&due(&all, t0() + 8 * DAY, &p, &none())), [1, 4]);
    assert!(sources_due(&due(&all, t0() + 8 * DAY, &policy(false), &none())).is_empty());
    // Once marked, it is not due again.
    all.get_mut(&4).unwrap().expired.source = true;
    assert_eq!(sources_due(&due(&all, t0() + 8 * DAY, &p, &none())), [1]);
    // The default keeps sources 7 days.
    assert_eq!(Policy::default().sources, Some(7 * DAY));
}

#[tokio::test]
async fn the_sweep_deletes_an_expired_source_and_a_retry_then_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::new(dir.path().join("files"), 1 << 20).unwrap();
    let mut rec = record(1, "main", "build:\n  script: [x]\n");
    run_all(&mut rec, t0(), |_| JobEnd::script_failure(1));
    rec.finished_ms = Some(ms(t0()));
    std::fs::write(files.source(1), b"tar.gz").unwrap();
    std::fs::write(files.source(2), b"another pipeline's").unwrap();
    let mut all = map(vec![rec]);
    let p = Policy {
        sources: Some(DAY),
        ..policy(false)
    };
    let (report, changed) = sweep(&mut all, &files, dir.path(), &p, t0() + DAY, &none()).await;
    assert_eq!(report.sources, 1, "{report:?}");
    assert_eq!(changed, [1]);
    assert!(!files.source(1).exists());
    assert!(files.source(2).exists());
    assert!(all[&1].expired.source);
    let (report, _) = sweep(&mut all, &files, dir.path(), &p, t0() + 2 * DAY, &none()).await;
    assert_eq!(report, SweepReport::default(), "once");

    // A retry of the failed job: it fails before it is launched.
    let rec = all.get_mut(&1).unwrap();
    rec.state.retry_job(0).unwrap();
    assert!(missing_dependency(rec, 0).is_some());
    let changed = fail_expired_dependencies(&mut all, dir.path(), t0() + 2 * DAY).await;
    assert_eq!(changed, [1]);
    let job = &all[&1].state.jobs()[0];
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts.len(), 2);
    let end = job.attempts[1].end.clone().unwrap();
    assert_eq!(end.reason, Some(FailureReason::MissingDependencyFailure));
    assert!(
        end.message.contains("the source of pipeline 1") && end.message.contains("expired"),
        "{}",
        end.message
    );
    let log = std::fs::read_to_string(PipelineRecord::log_path(dir.path(), 1, 0, 2)).unwrap();
    assert!(log.contains("source of pipeline 1"), "{log}");
}

#[test]
fn records_stored_before_source_expiry_still_read() {
    let old = serde_json::json!({"artifacts": {"0": 1}, "logs": {}});
    let expired: Expired = serde_json::from_value(old).unwrap();
    assert!(!expired.source);
    assert!(expired.artifacts_expired(0, 1));
}
