//! Unit tests of the CI framework's pure decisions: records in, intent and
//! changes out; no cluster, no clock.

use std::time::{Duration, SystemTime};

use berth_sdk::proto as pb;
use berth_sdk::runtime::{Constraint, Prior};
use berth_sdk::{AgentId, TaskId};

use super::*;
use crate::exec::record::task_id;
use crate::exec::runner::tests::record;

const PIPELINE: &str = "build:\n  tags: [docker]\n  script: [make]\ntest:\n  script: [make test]\n";

fn defaults() -> TaskDefaults<'static> {
    TaskDefaults {
        base_url: "http://ci.test:7000",
        cpus: 1.0,
        mem: 256.0,
        kill_grace: Duration::from_secs(10),
        timeout: Duration::from_secs(3600),
    }
}

fn pipelines(rec: PipelineRecord) -> BTreeMap<u64, PipelineRecord> {
    BTreeMap::from([(rec.id, rec)])
}

/// [`PIPELINE`] with its first job launched as `ci-1-0-1`.
fn build_started() -> BTreeMap<u64, PipelineRecord> {
    let mut rec = record(PIPELINE);
    rec.state.started(0, "ci-1-0-1", at(0)).unwrap();
    pipelines(rec)
}

fn status(task: &str, state: pb::TaskState) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: task.into(),
        state: state as i32,
        ..Default::default()
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn task_ids_round_trip() {
    assert_eq!(parse_task_id(&task_id(12, 3, 2)), Some((12, 3, 2)));
    assert_eq!(parse_task_id("ci-1-2"), None);
    assert_eq!(parse_task_id("ci-1-2-3-4"), None);
    assert_eq!(parse_task_id("run-1-2-3"), None);
    assert_eq!(parse_task_id("ci-a-2-3"), None);
}

#[test]
fn pending_jobs_are_wanted_in_order_with_their_tags_as_constraints() {
    let all = pipelines(record(PIPELINE));
    let intent = intent(&all, &defaults());
    let ids: Vec<&str> = intent
        .tasks
        .iter()
        .map(|w| w.task.task_id.as_str())
        .collect();
    assert_eq!(ids, ["ci-1-0-1", "ci-1-1-1"]);
    assert!(intent.tasks.iter().all(|w| w.prior == Prior::New));
    assert_eq!(
        intent.tasks[0].constraints,
        vec![Constraint::Tag("docker".into())]
    );
    assert!(intent.tasks[1].constraints.is_empty());
    assert!(intent.stop.is_empty());
}

#[test]
fn running_jobs_are_followed_and_canceled_or_timed_out_ones_stopped() {
    let mut rec = record(PIPELINE);
    rec.state.started(0, "ci-1-0-1", at(0)).unwrap();
    rec.agents[0] = "agent-a".into();
    // Stored under another id than the attempt number would give (an
    // older record): the stored id is the one followed.
    rec.state.started(1, "ci-1-1-7", at(0)).unwrap();
    let all = pipelines(rec.clone());
    let intent = intent(&all, &defaults());
    assert_eq!(intent.tasks.len(), 2);
    let build = &intent.tasks[0];
    assert_eq!(build.prior, Prior::Launched);
    assert_eq!(
        (build.task.task_id.as_str(), build.task.agent_id.as_str()),
        ("ci-1-0-1", "agent-a")
    );
    assert_eq!(intent.tasks[1].task.task_id, "ci-1-1-7");
    assert!(intent.stop.is_empty());

    // Past its time limit: to stop, no longer wanted.
    rec.kill_reasons[0] = Some(FailureReason::JobExecutionTimeout);
    let intent = super::intent(&pipelines(rec.clone()), &defaults());
    assert_eq!(
        intent.stop,
        vec![(
            TaskId::new("ci-1-0-1").unwrap(),
            Some(AgentId::new("agent-a").unwrap())
        )]
    );
    assert!(!intent.wants("ci-1-0-1"));

    // Canceled: both to stop.
    rec.state.cancel();
    let intent = super::intent(&pipelines(rec), &defaults());
    assert!(intent.tasks.is_empty());
    let stopped: Vec<&str> = intent.stop.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(intent.stop[1].1, None, "no agent recorded");
    assert_eq!(stopped, ["ci-1-0-1", "ci-1-1-7"]);
}

#[test]
fn a_job_waiting_for_its_resource_group_is_not_wanted() {
    let yaml = "deploy:\n  resource_group: prod\n  script: [deploy]\n";
    let first = record(yaml);
    let mut second = record(yaml);
    second.id = 2;
    let mut all = pipelines(first);
    all.insert(2, second);
    let intent = intent(&all, &defaults());
    let ids: Vec<&str> = intent
        .tasks
        .iter()
        .map(|w| w.task.task_id.as_str())
        .collect();
    assert_eq!(ids, ["ci-1-0-1"], "the older pipeline's job goes first");
}

#[test]
fn updates_record_the_agent_and_an_end_finishes_the_job() {
    let mut all = build_started();
    let mut running = status("ci-1-0-1", pb::TaskState::TaskRunning);
    running.agent_id = "agent-b".into();
    assert_eq!(
        on_update(&mut all, &running, at(1)),
        Updated::Attempt {
            pipeline: 1,
            job: 0,
            attempt: 1,
            follow_log: true,
            changed: false,
        }
    );
    assert_eq!(all[&1].agents[0], "agent-b");
    assert_eq!(all[&1].attempt_agents["ci-1-0-1"], "agent-b");
    let finished = status("ci-1-0-1", pb::TaskState::TaskFinished);
    assert!(matches!(
        on_update(&mut all, &finished, at(2)),
        Updated::Attempt { changed: true, .. }
    ));
    assert_eq!(all[&1].state.jobs()[0].status, JobStatus::Success);
    // Again (updates come at least once): nothing changes.
    assert!(matches!(
        on_update(&mut all, &finished, at(3)),
        Updated::Attempt { changed: false, .. }
    ));
    // Not a current attempt, or not ours at all.
    assert_eq!(
        on_update(
            &mut all,
            &status("ci-1-0-9", pb::TaskState::TaskFailed),
            at(3)
        ),
        Updated::Ignored
    );
    assert_eq!(
        on_update(&mut all, &status("other", pb::TaskState::TaskFailed), at(3)),
        Updated::Ignored
    );
}

#[test]
fn a_task_the_master_lost_fails_its_job_as_a_runner_system_failure() {
    for state in [pb::TaskState::TaskUnknown, pb::TaskState::TaskUnreachable] {
        let mut all = build_started();
        let mut gone = status("ci-1-0-1", state);
        gone.message = "the master does not know this task".into();
        assert!(matches!(
            on_update(&mut all, &gone, at(1)),
            Updated::Attempt { changed: true, .. }
        ));
        let job = &all[&1].state.jobs()[0];
        let end = job.attempts[0].end.as_ref().unwrap();
        assert_eq!(
            end.reason,
            Some(FailureReason::RunnerSystemFailure),
            "{state:?}"
        );
        assert_eq!(end.message, "the master does not know this task");
    }
}

#[test]
fn a_task_the_runtime_gave_up_on_fails_its_pending_job() {
    let mut all = pipelines(record(PIPELINE));
    let mut error = status("ci-1-1-1", pb::TaskState::TaskError);
    error.message = "task ci-1-1-1: mem must be positive".into();
    assert_eq!(
        on_update(&mut all, &error, at(1)),
        Updated::GivenUp {
            pipeline: 1,
            job: 1,
            message: "task ci-1-1-1: mem must be positive".into(),
        }
    );
    // About an attempt that is not the next one: ignored.
    assert_eq!(
        on_update(
            &mut all,
            &status("ci-1-1-2", pb::TaskState::TaskError),
            at(1)
        ),
        Updated::Ignored
    );
}

#[test]
fn a_time_limit_counts_from_the_start_of_the_attempt() {
    let mut rec = record("slow:\n  timeout: 1 minute\n  script: [sleep 600]\n");
    rec.state.started(0, "ci-1-0-1", at(1000)).unwrap();
    let all = pipelines(rec);
    let hour = Duration::from_secs(3600);
    assert_eq!(due(&all, at(1059), hour), vec![]);
    let timed_out = Due::TimedOut {
        pipeline: 1,
        job: 0,
        task: "ci-1-0-1".into(),
    };
    assert_eq!(due(&all, at(1060), hour), vec![timed_out.clone()]);
    // Long past (the framework was down): due at once.
    assert_eq!(due(&all, at(99_999), hour), vec![timed_out]);
    // A start in the future (the clock moved back) is not past anything.
    assert_eq!(due(&all, at(10), hour), vec![]);
    assert!(!timed_out_at(None));
    // Marked already: not due again.
    let mut all = all;
    all.get_mut(&1).unwrap().kill_reasons[0] = Some(FailureReason::JobExecutionTimeout);
    assert_eq!(due(&all, at(99_999), hour), vec![]);
}

fn timed_out_at(started: Option<SystemTime>) -> bool {
    timed_out(started, Duration::ZERO, at(5))
}

#[test]
fn a_delayed_job_is_due_when_its_time_comes() {
    let rec = record("later:\n  when: delayed\n  start_in: 30 seconds\n  script: [x]\n");
    let start = rec.state.next_wakeup().expect("a delayed job waits");
    let all = pipelines(rec);
    let before = start - Duration::from_secs(1);
    assert_eq!(due(&all, before, Duration::from_secs(60)), vec![]);
    assert_eq!(
        due(&all, start, Duration::from_secs(60)),
        vec![Due::Advance(1)]
    );
}

#[test]
fn task_ends_become_gitlab_failure_reasons() {
    let of = |state| status("ci-1-0-1", state);
    assert_eq!(
        job_end(&of(pb::TaskState::TaskFinished), None),
        JobEnd::success()
    );
    let mut failed = of(pb::TaskState::TaskFailed);
    failed.exit_code = Some(3);
    let end = job_end(&failed, None);
    assert_eq!(end.reason, Some(FailureReason::ScriptFailure));
    assert_eq!(end.exit_code, Some(3));
    failed.exit_code = None;
    failed.reason = pb::TaskReason::FetchFailed as i32;
    assert_eq!(
        job_end(&failed, None).reason,
        Some(FailureReason::MissingDependencyFailure)
    );
    failed.reason = pb::TaskReason::LaunchFailed as i32;
    assert_eq!(
        job_end(&failed, None).reason,
        Some(FailureReason::RunnerSystemFailure)
    );
    assert_eq!(
        job_end(&of(pb::TaskState::TaskLost), None).reason,
        Some(FailureReason::RunnerSystemFailure)
    );
    assert_eq!(
        job_end(&of(pb::TaskState::TaskError), None).reason,
        Some(FailureReason::SchedulerFailure)
    );
    assert_eq!(
        job_end(
            &of(pb::TaskState::TaskKilled),
            Some(FailureReason::JobExecutionTimeout)
        )
        .reason,
        Some(FailureReason::JobExecutionTimeout)
    );
    let mut finished = of(pb::TaskState::TaskFinished);
    finished.outputs.push(pb::OutputResult {
        name: "artifacts".into(),
        ok: false,
        error: "HTTP 500".into(),
        ..Default::default()
    });
    assert_eq!(
        job_end(&finished, None).reason,
        Some(FailureReason::DataIntegrityFailure)
    );
    finished.outputs[0].error = "no files matched".into();
    assert_eq!(job_end(&finished, None), JobEnd::success());
}
