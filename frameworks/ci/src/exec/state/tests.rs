use std::time::{Duration, SystemTime};

use super::*;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
}

fn job(name: &str, stage: usize) -> JobNode {
    JobNode {
        name: name.into(),
        stage,
        needs: None,
        when: When::OnSuccess,
        allow_failure: AllowFailure::no(),
        retry: RetryPolicy::default(),
    }
}

fn with(mut node: JobNode, f: impl FnOnce(&mut JobNode)) -> JobNode {
    f(&mut node);
    node
}

fn statuses(p: &Pipeline) -> Vec<(&str, JobStatus)> {
    p.nodes()
        .iter()
        .zip(p.jobs())
        .map(|(n, j)| (n.name.as_str(), j.status))
        .collect()
}

fn status_of(p: &Pipeline, name: &str) -> JobStatus {
    let i = p.find(name).expect("job exists");
    p.jobs()[i].status
}

/// Launches every pending job and ends it as `end_of` says, until nothing
/// is pending; returns the order in which jobs ran.
fn run_all(p: &mut Pipeline, mut end_of: impl FnMut(&str) -> JobEnd) -> Vec<String> {
    let mut order = Vec::new();
    p.advance(t0());
    loop {
        let pending = p.pending();
        if pending.is_empty() {
            break;
        }
        for i in pending {
            let name = p.nodes()[i].name.clone();
            p.started(i, format!("task-{name}"), t0()).expect("start");
            let end = end_of(&name);
            p.finished(i, end, t0()).expect("finish");
            order.push(name);
        }
        p.advance(t0());
    }
    order
}

#[test]
fn stages_run_in_order_and_the_pipeline_passes() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        job("test-a", 1),
        job("test-b", 1),
        job("deploy", 2),
    ])
    .unwrap();
    assert_eq!(p.status(), PipelineStatus::Running);
    p.advance(t0());
    assert_eq!(p.pending(), vec![0], "only the first stage is ready");
    p.started(0, "t0", t0()).unwrap();
    assert!(!p.advance(t0()), "nothing moves while build runs");
    assert!(p.pending().is_empty());
    p.finished(0, JobEnd::success(), t0()).unwrap();
    p.advance(t0());
    assert_eq!(p.pending(), vec![1, 2]);
    p.started(1, "t1", t0()).unwrap();
    p.finished(1, JobEnd::success(), t0()).unwrap();
    p.advance(t0());
    assert_eq!(
        p.pending(),
        vec![2],
        "deploy waits for the whole test stage"
    );
    p.started(2, "t2", t0()).unwrap();
    p.finished(2, JobEnd::success(), t0()).unwrap();
    p.advance(t0());
    assert_eq!(p.pending(), vec![3]);
    p.started(3, "t3", t0()).unwrap();
    p.finished(3, JobEnd::success(), t0()).unwrap();
    p.advance(t0());
    assert_eq!(p.status(), PipelineStatus::Success);
    assert!(!p.has_warnings());
}

#[test]
fn a_failure_skips_later_stages_but_runs_on_failure_and_always_jobs() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        job("test", 1),
        with(job("notify", 2), |n| n.when = When::OnFailure),
        with(job("cleanup", 2), |n| n.when = When::Always),
        job("deploy", 2),
    ])
    .unwrap();
    let order = run_all(&mut p, |name| {
        if name == "build" {
            JobEnd::script_failure(2)
        } else {
            JobEnd::success()
        }
    });
    assert_eq!(order, ["build", "notify", "cleanup"]);
    assert_eq!(
        statuses(&p),
        [
            ("build", JobStatus::Failed),
            ("test", JobStatus::Skipped),
            ("notify", JobStatus::Success),
            ("cleanup", JobStatus::Success),
            ("deploy", JobStatus::Skipped),
        ]
    );
    assert_eq!(p.status(), PipelineStatus::Failed);
}

#[test]
fn on_failure_jobs_are_skipped_when_everything_passed() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        with(job("notify", 1), |n| n.when = When::OnFailure),
    ])
    .unwrap();
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["build"]);
    assert_eq!(status_of(&p, "notify"), JobStatus::Skipped);
    assert_eq!(p.status(), PipelineStatus::Success);
}

#[test]
fn allowed_failures_let_the_pipeline_pass_with_warnings() {
    let mut p = Pipeline::new(vec![
        with(job("lint", 0), |n| n.allow_failure = AllowFailure::yes()),
        job("test", 1),
    ])
    .unwrap();
    let order = run_all(&mut p, |name| {
        if name == "lint" {
            JobEnd::script_failure(1)
        } else {
            JobEnd::success()
        }
    });
    assert_eq!(order, ["lint", "test"]);
    assert_eq!(p.status(), PipelineStatus::Success);
    assert!(p.has_warnings());
}

#[test]
fn allow_failure_exit_codes_allow_only_those_codes() {
    let allowed = |codes: Vec<i32>| AllowFailure {
        any: false,
        exit_codes: codes,
    };
    for (code, passes) in [(137, true), (1, false)] {
        let mut p = Pipeline::new(vec![
            with(job("flaky", 0), |n| {
                n.allow_failure = allowed(vec![137, 255])
            }),
            job("next", 1),
        ])
        .unwrap();
        run_all(&mut p, |name| {
            if name == "flaky" {
                JobEnd::script_failure(code)
            } else {
                JobEnd::success()
            }
        });
        let expected = if passes {
            PipelineStatus::Success
        } else {
            PipelineStatus::Failed
        };
        assert_eq!(p.status(), expected, "exit code {code}");
        assert_eq!(
            status_of(&p, "next"),
            if passes {
                JobStatus::Success
            } else {
                JobStatus::Skipped
            }
        );
    }
    // Exit codes never cover failures that are not the script's.
    let mut p = Pipeline::new(vec![with(job("flaky", 0), |n| {
        n.allow_failure = allowed(vec![137]);
    })])
    .unwrap();
    run_all(&mut p, |_| {
        JobEnd::failure(FailureReason::RunnerSystemFailure, "agent lost")
    });
    assert_eq!(p.status(), PipelineStatus::Failed);
}

#[test]
fn needs_start_jobs_before_their_stage_and_ignore_other_jobs() {
    // build-a -> test-a runs as soon as build-a passes, even though build-b
    // (same stage as build-a) is still running.
    let mut p = Pipeline::new(vec![
        job("build-a", 0),
        job("build-b", 0),
        with(job("test-a", 1), |n| n.needs = Some(vec![0])),
        with(job("lint", 1), |n| n.needs = Some(vec![])),
        job("deploy", 2),
    ])
    .unwrap();
    p.advance(t0());
    assert_eq!(p.pending(), vec![0, 1, 3], "needs: [] starts at once");
    for i in [0, 1, 3] {
        p.started(i, format!("t{i}"), t0()).unwrap();
    }
    p.finished(0, JobEnd::success(), t0()).unwrap();
    p.advance(t0());
    assert_eq!(p.pending(), vec![2], "test-a needs only build-a");
    // A failure outside test-a's needs does not skip it.
    p.finished(1, JobEnd::script_failure(1), t0()).unwrap();
    p.advance(t0());
    assert_eq!(status_of(&p, "test-a"), JobStatus::Pending);
    p.started(2, "t2", t0()).unwrap();
    p.finished(2, JobEnd::success(), t0()).unwrap();
    p.finished(3, JobEnd::success(), t0()).unwrap();
    p.advance(t0());
    // deploy has no needs: it follows the stages, where build-b failed.
    assert_eq!(status_of(&p, "deploy"), JobStatus::Skipped);
    assert_eq!(p.status(), PipelineStatus::Failed);
}

#[test]
fn a_failure_propagates_through_skipped_needs() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        with(job("test", 1), |n| n.needs = Some(vec![0])),
        with(job("deploy", 2), |n| n.needs = Some(vec![1])),
        with(job("report", 2), |n| {
            n.needs = Some(vec![1]);
            n.when = When::OnFailure;
        }),
    ])
    .unwrap();
    let order = run_all(&mut p, |name| {
        if name == "build" {
            JobEnd::script_failure(1)
        } else {
            JobEnd::success()
        }
    });
    assert_eq!(order, ["build", "report"]);
    assert_eq!(status_of(&p, "test"), JobStatus::Skipped);
    assert_eq!(status_of(&p, "deploy"), JobStatus::Skipped);
}

#[test]
fn needs_are_checked_for_range_and_cycles() {
    let err = Pipeline::new(vec![with(job("a", 0), |n| n.needs = Some(vec![3]))]).unwrap_err();
    assert_eq!(
        err,
        StateError::BadNeed {
            job: "a".into(),
            need: 3
        }
    );
    let err = Pipeline::new(vec![with(job("a", 0), |n| n.needs = Some(vec![0]))]).unwrap_err();
    assert!(matches!(err, StateError::BadNeed { .. }));
    let err = Pipeline::new(vec![
        with(job("a", 0), |n| n.needs = Some(vec![1])),
        job("b", 1),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "job \"a\" needs job \"b\" of a later stage"
    );
    let err = Pipeline::new(vec![
        with(job("a", 0), |n| n.needs = Some(vec![2])),
        with(job("b", 0), |n| n.needs = Some(vec![0])),
        with(job("c", 0), |n| n.needs = Some(vec![1])),
        job("d", 0),
    ])
    .unwrap_err();
    assert!(matches!(err, StateError::Cycle(_)), "{err}");
    // A diamond is fine.
    Pipeline::new(vec![
        job("a", 0),
        with(job("b", 1), |n| n.needs = Some(vec![0])),
        with(job("c", 1), |n| n.needs = Some(vec![0])),
        with(job("d", 2), |n| n.needs = Some(vec![1, 2])),
    ])
    .unwrap();
}

#[test]
fn manual_jobs_wait_to_be_played_and_do_not_block_when_allowed_to_fail() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        with(job("deploy", 1), |n| {
            n.when = When::Manual;
            n.allow_failure = AllowFailure::yes();
        }),
        job("after", 2),
        with(job("smoke", 2), |n| n.needs = Some(vec![1])),
    ])
    .unwrap();
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(
        order,
        ["build", "after"],
        "after does not wait for the manual job"
    );
    assert_eq!(status_of(&p, "deploy"), JobStatus::Manual);
    assert_eq!(
        status_of(&p, "smoke"),
        JobStatus::Created,
        "it needs deploy"
    );
    assert_eq!(
        p.status(),
        PipelineStatus::Blocked,
        "smoke waits for deploy"
    );
    let err = p.play(0).unwrap_err();
    assert!(err.to_string().contains("not a manual job"), "{err}");
    p.play(1).unwrap();
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["deploy", "smoke"]);
    assert_eq!(p.status(), PipelineStatus::Success);
}

#[test]
fn a_manual_job_that_may_not_fail_blocks_the_pipeline() {
    let mut p = Pipeline::new(vec![
        with(job("approve", 0), |n| n.when = When::Manual),
        job("deploy", 1),
    ])
    .unwrap();
    run_all(&mut p, |_| JobEnd::success());
    assert_eq!(status_of(&p, "approve"), JobStatus::Manual);
    assert_eq!(status_of(&p, "deploy"), JobStatus::Created);
    assert_eq!(p.status(), PipelineStatus::Blocked);
    p.play(0).unwrap();
    assert_eq!(p.status(), PipelineStatus::Running);
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["approve", "deploy"]);
    assert_eq!(p.status(), PipelineStatus::Success);

    // With nothing after it, an unplayed blocking manual job leaves the
    // pipeline blocked.
    let mut p = Pipeline::new(vec![
        job("build", 0),
        with(job("approve", 1), |n| n.when = When::Manual),
    ])
    .unwrap();
    run_all(&mut p, |_| JobEnd::success());
    assert_eq!(p.status(), PipelineStatus::Blocked);
}

#[test]
fn delayed_jobs_start_when_their_time_comes() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        with(job("rollout", 1), |n| {
            n.when = When::Delayed(Duration::from_secs(30));
        }),
    ])
    .unwrap();
    run_all(&mut p, |_| JobEnd::success());
    assert_eq!(status_of(&p, "rollout"), JobStatus::Scheduled);
    assert_eq!(p.next_wakeup(), Some(t0() + Duration::from_secs(30)));
    p.advance(t0() + Duration::from_secs(29));
    assert!(p.pending().is_empty());
    assert!(p.advance(t0() + Duration::from_secs(30)));
    assert_eq!(p.pending(), vec![1]);
    assert_eq!(p.next_wakeup(), None);
}

#[test]
fn retries_cover_only_the_listed_reasons_and_stop_at_max() {
    let infra_only = RetryPolicy {
        max: 2,
        when: vec![FailureReason::RunnerSystemFailure],
        exit_codes: vec![],
    };
    let mut p = Pipeline::new(vec![with(job("test", 0), |n| n.retry = infra_only)]).unwrap();
    p.advance(t0());
    p.started(0, "a1", t0()).unwrap();
    let lost = || JobEnd::failure(FailureReason::RunnerSystemFailure, "agent lost");
    assert!(p.finished(0, lost(), t0()).unwrap(), "first retry");
    p.started(0, "a2", t0()).unwrap();
    assert!(p.finished(0, lost(), t0()).unwrap(), "second retry");
    p.started(0, "a3", t0()).unwrap();
    assert!(!p.finished(0, lost(), t0()).unwrap(), "max is 2");
    assert_eq!(p.jobs()[0].status, JobStatus::Failed);
    assert_eq!(p.jobs()[0].attempts.len(), 3);
    let tasks: Vec<&str> = p.jobs()[0]
        .attempts
        .iter()
        .map(|a| a.task_id.as_str())
        .collect();
    assert_eq!(tasks, ["a1", "a2", "a3"]);

    // A script failure is not retried by an infrastructure-only policy.
    let infra_only = RetryPolicy {
        max: 2,
        when: vec![FailureReason::RunnerSystemFailure],
        exit_codes: vec![],
    };
    let mut p = Pipeline::new(vec![with(job("test", 0), |n| n.retry = infra_only)]).unwrap();
    p.advance(t0());
    p.started(0, "a1", t0()).unwrap();
    assert!(!p.finished(0, JobEnd::script_failure(1), t0()).unwrap());
    assert_eq!(p.status(), PipelineStatus::Failed);

    // An empty `when` retries everything; success after a retry passes.
    let mut p = Pipeline::new(vec![with(job("test", 0), |n| {
        n.retry = RetryPolicy {
            max: 1,
            when: vec![],
            exit_codes: vec![],
        };
    })])
    .unwrap();
    p.advance(t0());
    p.started(0, "a1", t0()).unwrap();
    assert!(p.finished(0, JobEnd::script_failure(1), t0()).unwrap());
    p.started(0, "a2", t0()).unwrap();
    assert!(!p.finished(0, JobEnd::success(), t0()).unwrap());
    assert_eq!(p.status(), PipelineStatus::Success);
}

#[test]
fn retry_exit_codes_retry_only_those_script_failures() {
    let policy = || RetryPolicy {
        max: 1,
        when: vec![],
        exit_codes: vec![137],
    };
    let mut p = Pipeline::new(vec![with(job("test", 0), |n| n.retry = policy())]).unwrap();
    p.advance(t0());
    p.started(0, "a1", t0()).unwrap();
    assert!(
        p.finished(0, JobEnd::script_failure(137), t0()).unwrap(),
        "137 is retried"
    );
    p.started(0, "a2", t0()).unwrap();
    assert!(
        !p.finished(0, JobEnd::script_failure(137), t0()).unwrap(),
        "max is 1"
    );

    for end in [
        JobEnd::script_failure(1),
        JobEnd::failure(FailureReason::RunnerSystemFailure, "agent lost"),
    ] {
        let mut p = Pipeline::new(vec![with(job("test", 0), |n| n.retry = policy())]).unwrap();
        p.advance(t0());
        p.started(0, "a1", t0()).unwrap();
        assert!(
            !p.finished(0, end.clone(), t0()).unwrap(),
            "{end:?} is not retried"
        );
    }

    // Reasons and exit codes together: either one retries.
    let both = RetryPolicy {
        max: 2,
        when: vec![FailureReason::RunnerSystemFailure],
        exit_codes: vec![137],
    };
    let mut p = Pipeline::new(vec![with(job("test", 0), |n| n.retry = both)]).unwrap();
    p.advance(t0());
    p.started(0, "a1", t0()).unwrap();
    assert!(p.finished(0, JobEnd::script_failure(137), t0()).unwrap());
    p.started(0, "a2", t0()).unwrap();
    let lost = JobEnd::failure(FailureReason::RunnerSystemFailure, "agent lost");
    assert!(p.finished(0, lost, t0()).unwrap());
    p.started(0, "a3", t0()).unwrap();
    assert!(
        !p.finished(0, JobEnd::script_failure(137), t0()).unwrap(),
        "max is 2"
    );
}

#[test]
fn cancel_stops_pending_jobs_and_running_ones_end_canceled_even_on_exit_zero() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        job("slow", 0),
        job("test", 1),
        with(job("cleanup", 2), |n| n.when = When::Always),
    ])
    .unwrap();
    p.advance(t0());
    p.started(0, "t0", t0()).unwrap();
    // `slow` is pending (no offer yet) when the cancel comes.
    let kill = p.cancel();
    assert_eq!(kill, vec![0]);
    assert_eq!(
        statuses(&p),
        [
            ("build", JobStatus::Canceling),
            ("slow", JobStatus::Canceled),
            ("test", JobStatus::Canceled),
            ("cleanup", JobStatus::Canceled),
        ]
    );
    assert_eq!(p.status(), PipelineStatus::Running, "build is still ending");
    assert!(
        p.pending().is_empty(),
        "nothing pending starts after a cancel"
    );
    assert!(!p.advance(t0()));
    // The task exits 0 after SIGTERM: still canceled, never success.
    p.finished(0, JobEnd::success(), t0()).unwrap();
    assert_eq!(status_of(&p, "build"), JobStatus::Canceled);
    assert_eq!(p.status(), PipelineStatus::Canceled);
    assert!(p.pending().is_empty());
    // Canceling twice changes nothing.
    assert!(p.cancel().is_empty());
    assert_eq!(p.status(), PipelineStatus::Canceled);
}

#[test]
fn canceling_a_finished_pipeline_changes_nothing() {
    let mut p = Pipeline::new(vec![job("build", 0)]).unwrap();
    run_all(&mut p, |_| JobEnd::success());
    assert_eq!(p.status(), PipelineStatus::Success);
    assert!(p.cancel().is_empty());
    assert_eq!(p.status(), PipelineStatus::Success);
    assert!(!p.is_canceled());
}

#[test]
fn retrying_the_pipeline_reruns_failed_jobs_and_what_they_skipped_only() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        job("unit", 1),
        job("integration", 1),
        job("deploy", 2),
    ])
    .unwrap();
    let order = run_all(&mut p, |name| {
        if name == "integration" {
            JobEnd::script_failure(1)
        } else {
            JobEnd::success()
        }
    });
    assert_eq!(order, ["build", "unit", "integration"]);
    assert_eq!(p.status(), PipelineStatus::Failed);
    let retried = p.retry();
    assert_eq!(retried, vec![2]);
    assert_eq!(status_of(&p, "build"), JobStatus::Success, "kept");
    assert_eq!(status_of(&p, "unit"), JobStatus::Success, "kept");
    assert_eq!(status_of(&p, "deploy"), JobStatus::Created);
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["integration", "deploy"]);
    assert_eq!(p.status(), PipelineStatus::Success);
    let i = p.find("integration").unwrap();
    assert_eq!(p.jobs()[i].attempts.len(), 2);
}

#[test]
fn retrying_a_canceled_pipeline_runs_what_never_started() {
    let mut p = Pipeline::new(vec![job("build", 0), job("test", 1)]).unwrap();
    p.advance(t0());
    p.started(0, "t0", t0()).unwrap();
    p.cancel();
    p.finished(0, JobEnd::script_failure(143), t0()).unwrap();
    assert_eq!(p.status(), PipelineStatus::Canceled);
    assert_eq!(p.retry(), vec![0]);
    assert!(!p.is_canceled());
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["build", "test"]);
    assert_eq!(p.status(), PipelineStatus::Success);
}

#[test]
fn retrying_one_job_recreates_its_skipped_downstream() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        with(job("test", 1), |n| n.needs = Some(vec![0])),
        job("other", 0),
    ])
    .unwrap();
    run_all(&mut p, |name| {
        if name == "build" {
            JobEnd::script_failure(1)
        } else {
            JobEnd::success()
        }
    });
    assert_eq!(status_of(&p, "test"), JobStatus::Skipped);
    let err = p.retry_job(1).unwrap_err();
    assert!(err.to_string().contains("only a finished job"), "{err}");
    p.retry_job(0).unwrap();
    assert_eq!(status_of(&p, "test"), JobStatus::Created);
    assert_eq!(status_of(&p, "other"), JobStatus::Success);
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["build", "test"]);
    assert_eq!(p.status(), PipelineStatus::Success);
}

#[test]
fn retrying_one_job_follows_gitlab_rules() {
    let mut p = Pipeline::new(vec![
        job("build", 0),
        job("test", 1),
        with(job("notify", 2), |n| n.when = When::OnFailure),
        job("deploy", 2),
        with(job("approve", 2), |n| n.when = When::Manual),
    ])
    .unwrap();
    run_all(&mut p, |name| {
        if name == "test" {
            JobEnd::script_failure(1)
        } else {
            JobEnd::success()
        }
    });
    assert_eq!(status_of(&p, "deploy"), JobStatus::Skipped);
    assert_eq!(status_of(&p, "notify"), JobStatus::Success);
    assert_eq!(status_of(&p, "approve"), JobStatus::Skipped);
    assert_eq!(p.status(), PipelineStatus::Failed);

    // A skipped job never ran: refused, and nothing changes.
    let before = p.clone();
    let err = p.retry_job(3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "job \"deploy\" is skipped; only a finished job (success, failed or canceled) can be retried"
    );
    assert_eq!(p, before);
    assert_eq!(p.retry_job(9), Err(StateError::NoSuchJob(9)));
    assert_eq!(p, before);

    // The failed job runs again; what its failure skipped waits for it;
    // what passed (build, and notify, which ran because of the failure)
    // keeps its result.
    p.retry_job(1).unwrap();
    assert_eq!(p.status(), PipelineStatus::Running);
    assert_eq!(
        statuses(&p),
        [
            ("build", JobStatus::Success),
            ("test", JobStatus::Pending),
            ("notify", JobStatus::Success),
            ("deploy", JobStatus::Created),
            ("approve", JobStatus::Created),
        ]
    );
    assert_eq!(
        p.jobs()[1].attempts.len(),
        1,
        "the new attempt starts later"
    );
    // Pending, then running: not retryable until it has ended.
    let before = p.clone();
    let err = p.retry_job(1).unwrap_err();
    assert!(err.to_string().contains("is pending"), "{err}");
    assert_eq!(p, before);
    p.started(1, "test-2", t0()).unwrap();
    let before = p.clone();
    let err = p.retry_job(1).unwrap_err();
    assert!(err.to_string().contains("is running"), "{err}");
    assert_eq!(p, before);
    p.finished(1, JobEnd::success(), t0()).unwrap();
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["deploy"]);
    assert_eq!(status_of(&p, "approve"), JobStatus::Manual);
    assert_eq!(p.status(), PipelineStatus::Blocked);
    assert_eq!(p.jobs()[1].attempts.len(), 2);
    assert_eq!(p.jobs()[0].attempts.len(), 1, "build did not run again");

    // A job that passed can be retried too; its downstream that ran stays.
    p.retry_job(0).unwrap();
    assert_eq!(status_of(&p, "deploy"), JobStatus::Success);
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["build"]);
    assert_eq!(p.jobs()[0].attempts.len(), 2);

    // A canceled job: retried, the pipeline is no longer canceled, and the
    // jobs canceled before they started wait for it.
    let mut p = Pipeline::new(vec![job("build", 0), job("test", 1)]).unwrap();
    p.advance(t0());
    p.started(0, "b1", t0()).unwrap();
    p.cancel();
    p.finished(0, JobEnd::script_failure(143), t0()).unwrap();
    assert_eq!(p.status(), PipelineStatus::Canceled);
    p.retry_job(0).unwrap();
    assert!(!p.is_canceled());
    assert_eq!(status_of(&p, "test"), JobStatus::Created);
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["build", "test"]);
    assert_eq!(p.status(), PipelineStatus::Success);
}

#[test]
fn retrying_the_pipeline_after_a_job_retried_alone_reruns_what_a_canceled_job_skipped() {
    // Found by the property test: a job retried alone in a canceled
    // pipeline passes, so a job needing it and a job canceled before it
    // started is skipped; retrying the pipeline recreates the canceled job,
    // and the skipped one must wait for it again.
    let mut p = Pipeline::new(vec![
        job("a", 0),
        job("b", 0),
        with(job("c", 0), |n| n.needs = Some(vec![0, 1])),
    ])
    .unwrap();
    p.cancel();
    p.retry_job(0).unwrap();
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["a"]);
    assert_eq!(status_of(&p, "c"), JobStatus::Skipped);
    assert_eq!(p.status(), PipelineStatus::Canceled);
    assert!(p.retry().is_empty(), "nothing had run and failed");
    assert_eq!(status_of(&p, "b"), JobStatus::Created);
    assert_eq!(status_of(&p, "c"), JobStatus::Created);
    let order = run_all(&mut p, |_| JobEnd::success());
    assert_eq!(order, ["b", "c"]);
    assert_eq!(p.status(), PipelineStatus::Success);
}

#[test]
fn reports_for_jobs_in_the_wrong_state_are_refused() {
    let mut p = Pipeline::new(vec![job("build", 0), job("test", 1)]).unwrap();
    p.advance(t0());
    let err = p.started(1, "x", t0()).unwrap_err();
    assert!(matches!(err, StateError::WrongState { .. }), "{err}");
    let err = p.finished(0, JobEnd::success(), t0()).unwrap_err();
    assert!(err.to_string().contains("cannot be finished"), "{err}");
    assert_eq!(p.started(7, "x", t0()), Err(StateError::NoSuchJob(7)));
    assert_eq!(p.play(7), Err(StateError::NoSuchJob(7)));
    // Nothing changed.
    assert_eq!(p.pending(), vec![0]);
    assert_eq!(status_of(&p, "test"), JobStatus::Created);
}

#[test]
fn failure_reasons_round_trip_through_their_gitlab_names() {
    for reason in FailureReason::ALL {
        assert_eq!(FailureReason::parse(reason.as_str()), Some(reason));
    }
    assert_eq!(FailureReason::parse("always"), None);
}

#[test]
fn the_state_survives_serialization() {
    let mut p = Pipeline::new(vec![job("build", 0), job("test", 1)]).unwrap();
    p.advance(t0());
    p.started(0, "t0", t0()).unwrap();
    let bytes = serde_json::to_vec(&p).unwrap();
    let back: Pipeline = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, p);
}

mod random {
    use proptest::prelude::*;

    use super::*;

    fn arb_pipeline() -> impl Strategy<Value = Vec<JobNode>> {
        (1usize..8).prop_flat_map(|n| {
            proptest::collection::vec(
                (
                    0usize..3,
                    proptest::option::of(proptest::collection::vec(
                        any::<prop::sample::Index>(),
                        0..3,
                    )),
                    0u8..5,
                    any::<bool>(),
                ),
                n,
            )
            .prop_map(move |specs| {
                let stages: Vec<usize> = specs.iter().map(|s| s.0).collect();
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (stage, needs, when, allow))| JobNode {
                        name: format!("j{i}"),
                        stage,
                        // Needs only on earlier jobs: always acyclic.
                        needs: needs.map(|ns| {
                            let mut v: Vec<usize> = if i == 0 {
                                vec![]
                            } else {
                                ns.iter()
                                    .map(|x| x.index(i))
                                    .filter(|&j| stages[j] <= stage)
                                    .collect()
                            };
                            v.sort_unstable();
                            v.dedup();
                            v
                        }),
                        when: match when {
                            0 => When::OnSuccess,
                            1 => When::OnFailure,
                            2 => When::Always,
                            3 => When::Manual,
                            _ => When::Delayed(Duration::from_secs(5)),
                        },
                        allow_failure: if allow {
                            AllowFailure::yes()
                        } else {
                            AllowFailure::no()
                        },
                        retry: RetryPolicy::default(),
                    })
                    .collect()
            })
        })
    }

    proptest! {
        /// Whatever the jobs and outcomes, driving the pipeline (playing
        /// manual jobs, letting time pass) ends with every job finished,
        /// each job run at most once, and the status consistent with the
        /// jobs.
        #[test]
        fn every_pipeline_terminates_consistently(
            nodes in arb_pipeline(),
            fails in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let mut p = Pipeline::new(nodes).unwrap();
            let mut now = t0();
            for _ in 0..100 {
                p.advance(now);
                let pending = p.pending();
                if pending.is_empty() {
                    let manual: Vec<usize> = (0..p.jobs().len())
                        .filter(|&i| p.jobs()[i].status == JobStatus::Manual)
                        .collect();
                    if let Some(&i) = manual.first() {
                        p.play(i).unwrap();
                        continue;
                    }
                    if let Some(at) = p.next_wakeup() {
                        now = at;
                        continue;
                    }
                    break;
                }
                for i in pending {
                    p.started(i, format!("t{i}"), now).unwrap();
                    let end = if fails[i] { JobEnd::script_failure(1) } else { JobEnd::success() };
                    p.finished(i, end, now).unwrap();
                }
            }
            for (node, job) in p.nodes().iter().zip(p.jobs()) {
                prop_assert!(job.status.is_finished(), "{} is {}", node.name, job.status);
                prop_assert!(job.attempts.len() <= 1);
                if job.status == JobStatus::Skipped {
                    prop_assert!(job.attempts.is_empty());
                }
            }
            let failed = p.jobs().iter().any(|j| j.status == JobStatus::Failed && !j.failure_allowed);
            prop_assert_eq!(p.status() == PipelineStatus::Failed, failed);
            prop_assert!(p.status().is_finished());
        }
    }

    /// A user's or the executor's action on a pipeline.
    #[derive(Debug, Clone)]
    enum Op {
        Advance,
        /// Time passes (delayed jobs come due).
        Later,
        Start(prop::sample::Index),
        /// Ends a running job: 0 success, 1 script failure, 2 lost agent.
        Finish(prop::sample::Index, u8),
        Play(prop::sample::Index),
        Cancel,
        /// Any job, finished or not: refusals are checked too.
        RetryJob(prop::sample::Index),
        RetryPipeline,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Advance),
            1 => Just(Op::Later),
            3 => any::<prop::sample::Index>().prop_map(Op::Start),
            3 => (any::<prop::sample::Index>(), 0u8..3).prop_map(|(i, o)| Op::Finish(i, o)),
            1 => any::<prop::sample::Index>().prop_map(Op::Play),
            1 => Just(Op::Cancel),
            3 => any::<prop::sample::Index>().prop_map(Op::RetryJob),
            1 => Just(Op::RetryPipeline),
        ]
    }

    /// A job's upstream failed in a way that skips `on_success` jobs.
    fn upstream_failed(p: &Pipeline, i: usize) -> bool {
        p.upstream(i).into_iter().any(|j| {
            let job = &p.jobs()[j];
            match job.status {
                JobStatus::Failed => !job.failure_allowed,
                JobStatus::Canceled => true,
                JobStatus::Skipped => job.skipped_by_failure,
                _ => false,
            }
        })
    }

    /// What holds after every step, whatever happened before.
    fn check_invariants(before: &Pipeline, after: &Pipeline, op: &Op, touched: Option<usize>) {
        for (i, (b, a)) in before.jobs().iter().zip(after.jobs()).enumerate() {
            let name = &after.nodes()[i].name;
            // Attempts only grow, and ended attempts never change.
            assert!(
                a.attempts.len() >= b.attempts.len(),
                "{op:?}: {name} lost attempts"
            );
            for (k, old) in b.attempts.iter().enumerate() {
                if old.end.is_some() {
                    assert_eq!(&a.attempts[k], old, "{op:?}: {name} attempt {k} changed");
                } else {
                    assert_eq!(a.attempts[k].task_id, old.task_id, "{op:?}: {name}");
                }
            }
            // A running job is never reset: only its own end moves it.
            if matches!(b.status, JobStatus::Running | JobStatus::Canceling) && touched != Some(i) {
                assert!(
                    matches!(a.status, JobStatus::Running | JobStatus::Canceling),
                    "{op:?}: running {name} became {}",
                    a.status
                );
            }
            // Downstream of a success (or of nothing that failed) is never
            // skipped for a failure.
            if a.status == JobStatus::Skipped && a.skipped_by_failure {
                assert!(
                    upstream_failed(after, i),
                    "{op:?}: {name} is skipped though its upstream did not fail: {:?}",
                    statuses(after)
                );
            }
        }
    }

    /// Drives the pipeline to its end (everything passes, manual jobs are
    /// played, time passes); returns whether it got there.
    fn drive_to_end(p: &mut Pipeline, mut now: SystemTime) -> bool {
        for _ in 0..200 {
            for i in p.running() {
                p.finished(i, JobEnd::success(), now).unwrap();
            }
            p.advance(now);
            let pending = p.pending();
            if pending.is_empty() {
                let manual = (0..p.jobs().len()).find(|&i| p.jobs()[i].status == JobStatus::Manual);
                if let Some(i) = manual {
                    p.play(i).unwrap();
                    continue;
                }
                if let Some(at) = p.next_wakeup() {
                    now = at;
                    continue;
                }
                return p.running().is_empty();
            }
            for i in pending {
                p.started(i, format!("end-{i}"), now).unwrap();
            }
        }
        false
    }

    proptest! {
        /// Any interleaving of starts, ends (passing, failing, lost),
        /// plays, cancels, retries of single jobs (finished or not) and
        /// retries of the pipeline keeps GitLab's invariants: attempts only
        /// grow, a running job is never reset, a job downstream of a
        /// success is never skipped for a failure; a refused retry changes
        /// nothing, an accepted one makes that job pending and the pipeline
        /// running and leaves every other job that ran as it was; and the
        /// pipeline can still be driven to its end.
        #[test]
        fn retrying_single_jobs_keeps_the_invariants(
            nodes in arb_pipeline(),
            retries in proptest::collection::vec(0u8..3, 8),
            ops in proptest::collection::vec(arb_op(), 1..60),
        ) {
            let nodes: Vec<JobNode> = nodes
                .into_iter()
                .zip(retries)
                .map(|(mut n, max)| {
                    n.retry.max = max;
                    n
                })
                .collect();
            let mut p = Pipeline::new(nodes).unwrap();
            let mut now = t0();
            let mut launched = 0;
            for op in &ops {
                let before = p.clone();
                let mut touched = None;
                match op {
                    Op::Advance => {
                        p.advance(now);
                    }
                    Op::Later => {
                        now += Duration::from_secs(10);
                        p.advance(now);
                    }
                    Op::Start(ix) => {
                        let pending = p.pending();
                        if !pending.is_empty() {
                            let i = pending[ix.index(pending.len())];
                            launched += 1;
                            p.started(i, format!("t{launched}"), now).unwrap();
                        }
                    }
                    Op::Finish(ix, outcome) => {
                        let running = p.running();
                        if !running.is_empty() {
                            let i = running[ix.index(running.len())];
                            let end = match outcome {
                                0 => JobEnd::success(),
                                1 => JobEnd::script_failure(1),
                                _ => JobEnd::failure(FailureReason::RunnerSystemFailure, "lost"),
                            };
                            touched = Some(i);
                            p.finished(i, end, now).unwrap();
                        }
                    }
                    Op::Play(ix) => {
                        let manual: Vec<usize> = (0..p.jobs().len())
                            .filter(|&i| p.jobs()[i].status == JobStatus::Manual)
                            .collect();
                        if !manual.is_empty() {
                            p.play(manual[ix.index(manual.len())]).unwrap();
                        }
                    }
                    Op::Cancel => {
                        p.cancel();
                    }
                    Op::RetryJob(ix) => {
                        let i = ix.index(p.jobs().len());
                        let was = before.jobs()[i].status;
                        let retryable = matches!(
                            was,
                            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
                        );
                        match p.retry_job(i) {
                            Err(e) => {
                                prop_assert!(!retryable, "{was} refused: {e}");
                                prop_assert!(
                                    matches!(e, StateError::NotFinished { .. }),
                                    "{e}"
                                );
                                prop_assert_eq!(&p, &before, "a refused retry changed something");
                            }
                            Ok(()) => {
                                prop_assert!(retryable, "{} retried", was);
                                prop_assert_eq!(p.jobs()[i].status, JobStatus::Pending);
                                prop_assert_eq!(p.status(), PipelineStatus::Running);
                                prop_assert!(!p.is_canceled());
                                for (j, (b, a)) in before.jobs().iter().zip(p.jobs()).enumerate() {
                                    let reset = b.status == JobStatus::Skipped
                                        || (b.status == JobStatus::Canceled && b.attempts.is_empty());
                                    if j != i && !reset {
                                        prop_assert_eq!(
                                            a.status, b.status,
                                            "{} changed", &p.nodes()[j].name
                                        );
                                    }
                                }
                            }
                        }
                    }
                    Op::RetryPipeline => {
                        p.retry();
                    }
                }
                check_invariants(&before, &p, op, touched);
            }
            prop_assert!(drive_to_end(&mut p, now), "stuck: {:?}", statuses(&p));
            for (node, job) in p.nodes().iter().zip(p.jobs()) {
                prop_assert!(
                    job.status.is_finished() || job.status == JobStatus::Manual
                        || job.status == JobStatus::Created,
                    "{} is {}", node.name, job.status
                );
            }
            prop_assert!(p.status().is_finished(), "{:?}", statuses(&p));
        }
    }
}
