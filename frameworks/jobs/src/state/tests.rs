//! The state's behaviour, driven as the framework drives it: operations,
//! launches, updates and the clock, with the records written to a map
//! that stands for the store and read back.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_proto::TaskState;

use super::*;
use crate::job::{
    Command, ConcurrencyPolicy, HistoryLimits, MissedPolicy, Restart, RestartPolicy, RunSpec,
};
use crate::run::{RunStatus, Trigger};

mod schedules;

const T0: Timestamp = Timestamp::from_secs(1_796_660_700); // 2026-12-07T16:25:00Z

pub(super) fn spec() -> RunSpec {
    RunSpec {
        command: Command::Shell("true".into()),
        cpus_milli: 100,
        mem_mib: 32,
        disk_mib: 0,
        docker: None,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        artifacts: Vec::new(),
        constraints: Vec::new(),
        max_launch_delay: Duration::from_secs(3600),
        kill_grace: None,
        restart: Restart {
            policy: RestartPolicy::Never,
            active_deadline: None,
            backoff_limit: 0,
            backoff: Duration::from_secs(10),
            backoff_factor_milli: 2000,
            max_backoff: Duration::from_secs(360),
        },
        user: None,
        parallelism: 1,
        completions: 1,
    }
}

pub(super) fn job(id: &str) -> JobDef {
    JobDef {
        id: JobId::new(id).expect("valid id"),
        description: String::new(),
        labels: BTreeMap::new(),
        run: spec(),
        schedules: Vec::new(),
        dependencies: Vec::new(),
        history: HistoryLimits::default(),
    }
}

pub(super) fn schedule(id: &str, cron: &str) -> ScheduleDef {
    ScheduleDef {
        id: id.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        starting_deadline: Duration::from_secs(900),
        concurrency: ConcurrencyPolicy::Allow,
        enabled: true,
        missed: MissedPolicy::RunOnce,
    }
}

pub(super) fn id(s: &str) -> JobId {
    JobId::new(s).expect("valid id")
}

/// The store: the records written so far.
#[derive(Default)]
pub(super) struct Store(pub BTreeMap<String, Vec<u8>>);

impl Store {
    pub(super) fn write(&mut self, jobs: &mut Jobs) -> usize {
        let txns = jobs.take_writes();
        let n = txns.len();
        for txn in txns {
            for (k, v) in txn {
                match v {
                    Some(v) => self.0.insert(k, v),
                    None => self.0.remove(&k),
                };
            }
        }
        n
    }

    pub(super) fn load(&self) -> Jobs {
        Jobs::load(self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .expect("the records load")
    }
}

pub(super) fn update(
    jobs: &mut Jobs,
    task: &str,
    state: TaskState,
    code: Option<i32>,
    at: Timestamp,
) {
    let u = TaskUpdate {
        task_id: task.into(),
        state,
        message: String::new(),
        agent_id: "agent-1".into(),
        exit_code: code,
    };
    jobs.update(&u, at);
}

fn start(jobs: &mut Jobs, j: &str, at: Timestamp) -> Run {
    match jobs.apply(&Op::StartRun(id(j)), at, 7) {
        Ok(Outcome::Run(r)) => *r,
        other => panic!("a run starts: {other:?}"),
    }
}

fn wanted_ids(jobs: &Jobs, at: Timestamp) -> Vec<String> {
    jobs.wanted(at)
        .into_iter()
        .map(|w| w.task.task_id)
        .collect()
}

fn env_of(jobs: &Jobs, task: &str, at: Timestamp, key: &str) -> Option<String> {
    jobs.wanted(at)
        .into_iter()
        .find(|w| w.task.task_id == task)
        .and_then(|w| w.task.command.and_then(|c| c.env.get(key).cloned()))
}

#[test]
fn a_run_by_hand_launches_runs_and_succeeds_once() {
    let mut jobs = Jobs::default();
    jobs.apply(&Op::Create(job("hello")), T0, 1)
        .expect("created");
    let run = start(&mut jobs, "hello", T0);
    assert_eq!(run.status, RunStatus::Initial);
    assert_eq!(run.trigger, Trigger::Manual);
    let task = run.tasks[0].task_id.clone();
    assert_eq!(task, format!("hello.{}.0.0", run.id));
    assert_eq!(wanted_ids(&jobs, T0), vec![task.clone()]);
    assert_eq!(
        env_of(&jobs, &task, T0, "BERTH_JOB_INDEX").as_deref(),
        Some("0")
    );
    assert_eq!(
        env_of(&jobs, &task, T0, "BERTH_JOB_RUN_ID"),
        Some(run.id.to_string())
    );
    jobs.launching(std::slice::from_ref(&task), T0);
    let w = jobs.wanted(T0);
    assert!(w[0].launched && !w[0].seen, "{w:?}");
    update(
        &mut jobs,
        &task,
        TaskState::TaskRunning,
        None,
        T0.plus(Duration::from_secs(1)),
    );
    assert_eq!(
        jobs.run(&id("hello"), &run.id).map(|r| r.status),
        Some(RunStatus::Active)
    );
    update(
        &mut jobs,
        &task,
        TaskState::TaskFinished,
        Some(0),
        T0.plus(Duration::from_secs(3)),
    );
    // The same update again changes nothing.
    update(
        &mut jobs,
        &task,
        TaskState::TaskFinished,
        Some(0),
        T0.plus(Duration::from_secs(4)),
    );
    let st = jobs.status(&id("hello"), T0).expect("the job");
    assert!(st.active.is_empty());
    assert_eq!(st.history.len(), 1);
    let done = &st.history[0];
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(done.exit_code(), Some(0));
    assert_eq!(done.duration(), Some(Duration::from_secs(2)));
    assert_eq!(st.success_count, 1);
    assert!(wanted_ids(&jobs, T0).is_empty());
}

#[test]
fn a_parallel_array_runs_each_index_once_with_at_most_parallelism_at_a_time() {
    let mut jobs = Jobs::default();
    let mut def = job("array");
    def.run.completions = 5;
    def.run.parallelism = 2;
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    let run = start(&mut jobs, "array", T0);
    let mut seen_indices = Vec::new();
    for _ in 0..10 {
        let wanted = jobs.wanted(T0);
        if wanted.is_empty() {
            break;
        }
        assert!(wanted.len() <= 2, "at most parallelism tasks: {wanted:?}");
        let first = &wanted[0].task;
        let index = first
            .command
            .as_ref()
            .and_then(|c| c.env.get("BERTH_JOB_INDEX").cloned());
        seen_indices.push(index.expect("an index"));
        update(
            &mut jobs,
            &first.task_id,
            TaskState::TaskFinished,
            Some(0),
            T0,
        );
    }
    seen_indices.sort();
    assert_eq!(seen_indices, ["0", "1", "2", "3", "4"]);
    let done = jobs.run(&id("array"), &run.id).expect("kept");
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(done.tasks.len(), 5);
}

#[test]
fn failed_tasks_restart_with_backoff_until_the_backoff_limit() {
    let mut jobs = Jobs::default();
    let mut def = job("flaky");
    def.run.restart.policy = RestartPolicy::OnFailure;
    def.run.restart.backoff_limit = 2;
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    let run = start(&mut jobs, "flaky", T0);
    let first = run.tasks[0].task_id.clone();
    update(&mut jobs, &first, TaskState::TaskFailed, Some(3), T0);
    // The first restart waits 10 s, the second 20 s.
    assert!(wanted_ids(&jobs, T0.plus(Duration::from_secs(9))).is_empty());
    let second = wanted_ids(&jobs, T0.plus(Duration::from_secs(10)));
    assert_eq!(second, vec![format!("flaky.{}.0.1", run.id)]);
    assert_eq!(jobs.next_wakeup(), Some(T0.plus(Duration::from_secs(10))));
    let t1 = T0.plus(Duration::from_secs(10));
    update(&mut jobs, &second[0], TaskState::TaskFailed, Some(3), t1);
    assert!(wanted_ids(&jobs, t1.plus(Duration::from_secs(19))).is_empty());
    let third = wanted_ids(&jobs, t1.plus(Duration::from_secs(20)));
    assert_eq!(third.len(), 1);
    update(
        &mut jobs,
        &third[0],
        TaskState::TaskFailed,
        Some(4),
        t1.plus(Duration::from_secs(20)),
    );
    let done = jobs.run(&id("flaky"), &run.id).expect("kept");
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.exit_code(), Some(4));
    assert!(
        done.reason.contains("backoffLimit 2 reached"),
        "{}",
        done.reason
    );
    assert!(done.reason.contains("exit code 4"), "{}", done.reason);
    assert_eq!(
        jobs.status(&id("flaky"), T0).map(|s| s.failure_count),
        Some(1)
    );
}

#[test]
fn a_failure_under_never_stops_the_other_tasks_and_fails_the_run() {
    let mut jobs = Jobs::default();
    let mut def = job("pair");
    def.run.completions = 2;
    def.run.parallelism = 2;
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    let run = start(&mut jobs, "pair", T0);
    let (a, b) = (run.tasks[0].task_id.clone(), run.tasks[1].task_id.clone());
    jobs.launching(&[a.clone(), b.clone()], T0);
    update(&mut jobs, &b, TaskState::TaskRunning, None, T0);
    update(&mut jobs, &a, TaskState::TaskFailed, Some(1), T0);
    assert!(
        wanted_ids(&jobs, T0).is_empty(),
        "a stopping run wants nothing"
    );
    assert_eq!(jobs.to_stop(), vec![(b.clone(), "agent-1".to_owned())]);
    assert_eq!(
        jobs.run(&id("pair"), &run.id).map(|r| r.status),
        Some(RunStatus::Active)
    );
    update(&mut jobs, &b, TaskState::TaskKilled, None, T0);
    let done = jobs.run(&id("pair"), &run.id).expect("kept");
    assert_eq!(done.status, RunStatus::Failed);
    assert!(
        done.reason.contains("restart policy NEVER"),
        "{}",
        done.reason
    );
    assert!(jobs.to_stop().is_empty());
}

#[test]
fn a_killed_run_fails_once_its_tasks_ended() {
    let mut jobs = Jobs::default();
    jobs.apply(&Op::Create(job("long")), T0, 1)
        .expect("created");
    let run = start(&mut jobs, "long", T0);
    let task = run.tasks[0].task_id.clone();
    jobs.launching(std::slice::from_ref(&task), T0);
    jobs.apply(&Op::KillRun(id("long"), run.id.clone()), T0, 1)
        .expect("killed");
    assert_eq!(jobs.to_stop().len(), 1);
    update(&mut jobs, &task, TaskState::TaskKilled, None, T0);
    let done = jobs.run(&id("long"), &run.id).expect("kept");
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.reason, "killed by a user");
    // Killing a finished run is refused.
    let again = jobs.apply(&Op::KillRun(id("long"), run.id.clone()), T0, 1);
    assert!(matches!(again, Err(OpError::Conflict(_))), "{again:?}");
}

#[test]
fn a_run_not_launched_by_its_max_launch_delay_fails_with_the_reason() {
    let mut jobs = Jobs::default();
    let mut def = job("big");
    def.run.max_launch_delay = Duration::from_secs(60);
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    let run = start(&mut jobs, "big", T0);
    jobs.advance(T0.plus(Duration::from_secs(60)));
    assert!(
        jobs.run(&id("big"), &run.id)
            .is_some_and(|r| !r.status.is_finished())
    );
    jobs.advance(T0.plus(Duration::from_secs(61)));
    let done = jobs.run(&id("big"), &run.id).expect("kept");
    assert_eq!(done.status, RunStatus::Failed);
    assert!(
        done.reason.contains("maxLaunchDelay (60 s)"),
        "{}",
        done.reason
    );
}

#[test]
fn a_task_whose_agent_stays_unreachable_is_given_up_and_restarted() {
    let mut jobs = Jobs::default();
    let mut def = job("far");
    def.run.restart.policy = RestartPolicy::OnFailure;
    def.run.restart.backoff_limit = 1;
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    let run = start(&mut jobs, "far", T0);
    let task = run.tasks[0].task_id.clone();
    jobs.launching(std::slice::from_ref(&task), T0);
    update(&mut jobs, &task, TaskState::TaskRunning, None, T0);
    update(&mut jobs, &task, TaskState::TaskUnreachable, None, T0);
    jobs.advance(T0.plus(Duration::from_secs(119)));
    assert_eq!(
        jobs.run(&id("far"), &run.id).map(|r| r.tasks.len()),
        Some(1)
    );
    jobs.advance(T0.plus(Duration::from_secs(120)));
    let r = jobs.run(&id("far"), &run.id).expect("active");
    assert_eq!(r.tasks.len(), 2, "a new attempt");
    assert_eq!(r.tasks[0].state, "TASK_LOST");
    // The given-up task is killed if its agent comes back.
    assert_eq!(jobs.to_stop(), vec![(task.clone(), "agent-1".to_owned())]);
    update(
        &mut jobs,
        &task,
        TaskState::TaskKilled,
        None,
        T0.plus(Duration::from_secs(130)),
    );
    assert!(jobs.to_stop().is_empty());
}

#[test]
fn a_job_runs_after_all_its_parents_succeeded() {
    let mut jobs = Jobs::default();
    jobs.apply(&Op::Create(job("extract")), T0, 1).expect("a");
    jobs.apply(&Op::Create(job("load")), T0, 1).expect("b");
    let mut child = job("report");
    child.dependencies = vec![id("extract"), id("load")];
    jobs.apply(&Op::Create(child), T0, 1).expect("child");
    let a = start(&mut jobs, "extract", T0);
    update(
        &mut jobs,
        &a.tasks[0].task_id,
        TaskState::TaskFinished,
        Some(0),
        T0,
    );
    assert!(
        jobs.status(&id("report"), T0)
            .is_some_and(|s| s.active.is_empty())
    );
    let b = start(&mut jobs, "load", T0);
    update(
        &mut jobs,
        &b.tasks[0].task_id,
        TaskState::TaskFinished,
        Some(0),
        T0,
    );
    let st = jobs.status(&id("report"), T0).expect("child");
    assert_eq!(st.active.len(), 1);
    match &st.active[0].trigger {
        Trigger::Dependency { parents } => {
            let names: Vec<&str> = parents.iter().map(|(j, _)| j.as_str()).collect();
            assert_eq!(names, ["extract", "load"]);
        }
        other => panic!("triggered by its parents: {other:?}"),
    }
    // A failed parent run starts nothing.
    let c = start(&mut jobs, "extract", T0);
    update(
        &mut jobs,
        &c.tasks[0].task_id,
        TaskState::TaskFailed,
        Some(1),
        T0,
    );
    assert_eq!(
        jobs.status(&id("report"), T0).map(|s| s.active.len()),
        Some(1)
    );
}

#[test]
fn refused_operations_change_nothing() {
    let mut jobs = Jobs::default();
    let mut store = Store::default();
    jobs.apply(&Op::Create(job("busy")), T0, 1)
        .expect("created");
    start(&mut jobs, "busy", T0);
    store.write(&mut jobs);
    let before = jobs.statuses(T0);
    let refused = [
        jobs.apply(&Op::Create(job("busy")), T0, 1).map(|_| ()),
        jobs.apply(
            &Op::Remove {
                id: id("busy"),
                stop_runs: false,
            },
            T0,
            1,
        )
        .map(|_| ()),
        jobs.apply(&Op::StartRun(id("nope")), T0, 1).map(|_| ()),
        jobs.apply(&Op::RemoveSchedule(id("busy"), "none".into()), T0, 1)
            .map(|_| ()),
        jobs.apply(
            &Op::Update {
                def: job("nope"),
                keep_schedules: true,
            },
            T0,
            1,
        )
        .map(|_| ()),
    ];
    let statuses: Vec<u16> = refused
        .iter()
        .map(|r| r.as_ref().err().map_or(0, OpError::status))
        .collect();
    assert_eq!(statuses, [409, 409, 404, 404, 404]);
    assert_eq!(jobs.statuses(T0), before);
    assert_eq!(store.write(&mut jobs), 0, "nothing to write");
    // With stopCurrentJobRuns the job goes, and all its records with it.
    jobs.apply(
        &Op::Remove {
            id: id("busy"),
            stop_runs: true,
        },
        T0,
        1,
    )
    .expect("removed");
    store.write(&mut jobs);
    assert!(
        store.0.is_empty(),
        "{:?}",
        store.0.keys().collect::<Vec<_>>()
    );
}

#[test]
fn history_keeps_the_limits() {
    let mut jobs = Jobs::default();
    let mut store = Store::default();
    let mut def = job("often");
    def.history.successful = 2;
    def.history.max_age = Duration::from_secs(3600);
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    for i in 0..3u64 {
        let at = T0.plus(Duration::from_secs(i));
        let r = start(&mut jobs, "often", at);
        update(
            &mut jobs,
            &r.tasks[0].task_id,
            TaskState::TaskFinished,
            Some(0),
            at,
        );
    }
    store.write(&mut jobs);
    let st = jobs.status(&id("often"), T0).expect("job");
    assert_eq!(st.history.len(), 2);
    assert_eq!(st.success_count, 3);
    assert_eq!(store.0.keys().filter(|k| k.starts_with("hist/")).count(), 2);
    // Older than runsHistoryMaxAgeSeconds: dropped by the sweep.
    jobs.advance(T0.plus(Duration::from_secs(3603)));
    store.write(&mut jobs);
    assert_eq!(
        jobs.status(&id("often"), T0).map(|s| s.history.len()),
        Some(0)
    );
    assert_eq!(store.0.keys().filter(|k| k.starts_with("hist/")).count(), 0);
}

#[test]
fn the_stored_records_read_back_to_the_same_state() {
    let mut jobs = Jobs::default();
    let mut store = Store::default();
    jobs.apply(&Op::Create(job("a")), T0, 1).expect("a");
    let mut b = job("b");
    b.dependencies = vec![id("a")];
    jobs.apply(&Op::Create(b), T0, 1).expect("b");
    let r = start(&mut jobs, "a", T0);
    jobs.launching(std::slice::from_ref(&r.tasks[0].task_id), T0);
    update(
        &mut jobs,
        &r.tasks[0].task_id,
        TaskState::TaskRunning,
        None,
        T0,
    );
    let done = start(&mut jobs, "a", T0.plus(Duration::from_secs(1)));
    update(
        &mut jobs,
        &done.tasks[0].task_id,
        TaskState::TaskFinished,
        Some(0),
        T0,
    );
    jobs.set_secret("db/password", Some("s3cret-value".into()));
    store.write(&mut jobs);
    let back = store.load();
    assert_eq!(back.statuses(T0), jobs.statuses(T0));
    assert_eq!(back.secret_paths(), ["db/password"]);
    // A task the old instance launched is reconciled, not launched again.
    let w = back.wanted(T0);
    let running = w
        .iter()
        .find(|w| w.task.task_id == r.tasks[0].task_id)
        .expect("still wanted");
    assert!(running.seen && running.launched);
    // Its updates still reach its run.
    let mut back = back;
    update(
        &mut back,
        &r.tasks[0].task_id,
        TaskState::TaskFinished,
        Some(0),
        T0,
    );
    assert_eq!(
        back.run(&id("a"), &r.id).map(|r| r.status),
        Some(RunStatus::Success)
    );
}

#[test]
fn a_record_of_an_unknown_format_stops_the_load() {
    let records = vec![("job/x".to_owned(), br#"{"v": 2, "def": {}}"#.to_vec())];
    let err = Jobs::load(records).expect_err("refused");
    assert!(err.to_string().contains("format version 2"), "{err}");
    let records = vec![("meta/x".to_owned(), b"not json".to_vec())];
    assert!(Jobs::load(records).is_err());
}

#[test]
fn secrets_reach_the_environment_and_are_masked() {
    let mut jobs = Jobs::default();
    let mut def = job("secretive");
    def.run.secrets.insert(
        "pw".into(),
        crate::job::Secret {
            source: "db/password".into(),
        },
    );
    def.run.env.insert(
        "DB_PASSWORD".into(),
        crate::job::EnvValue::Secret("pw".into()),
    );
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    jobs.set_secret("db/password", Some("s3cret-value".into()));
    let r = start(&mut jobs, "secretive", T0);
    let w = jobs.wanted(T0);
    let task = &w[0].task;
    assert_eq!(task.task_id, r.tasks[0].task_id);
    let cmd = task.command.as_ref().expect("a command");
    assert_eq!(
        cmd.env.get("DB_PASSWORD").map(String::as_str),
        Some("s3cret-value")
    );
    assert_eq!(task.masked_values, ["s3cret-value"]);
}
