//! The messages of `berth.jobs.v1` built from the backend's views, and
//! the gRPC status of its errors.

use berth_proto::jobs::v1 as pb;
use tonic::{Code, Status};

use crate::api::BackendError;
use crate::job::ScheduleDef;
use crate::run::{Run, RunStatus, RunTask, Trigger};
use crate::state::{JobStatus, OpError};
use crate::time::Timestamp;

/// Whether the refused operation created something (a job, a schedule):
/// its conflict is then `ALREADY_EXISTS` (the id exists), any other's
/// `FAILED_PRECONDITION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    /// A job's or a schedule's creation.
    Yes,
    /// Anything else.
    No,
}

/// The gRPC code of a refused operation (see the module docs of
/// [`super`]).
#[must_use]
pub fn op_code(e: &OpError, creation: Creation) -> Code {
    match (e, creation) {
        (OpError::Invalid(_), _) => Code::InvalidArgument,
        (OpError::NotFound(_), _) => Code::NotFound,
        (OpError::Conflict(_), Creation::Yes) => Code::AlreadyExists,
        (OpError::Conflict(_), Creation::No) => Code::FailedPrecondition,
    }
}

/// The gRPC status of a backend error, its message cut to what a trailer
/// carries. An invalid definition's message names every field by its
/// path (`/run/cpus: ...; /schedules/0/cron: ...`).
#[must_use]
pub fn status(e: BackendError, creation: Creation) -> Status {
    let s = match e {
        BackendError::Op(op) => Status::new(op_code(&op, creation), op.to_string()),
        BackendError::Unavailable(m) => Status::unavailable(m),
    };
    berth_proto::bounded_status(s)
}

/// A refused operation's status.
pub(super) fn op_status(e: OpError, creation: Creation) -> Status {
    status(BackendError::Op(e), creation)
}

fn ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::millis)
}

/// A job; its finished runs only with `history`.
pub(super) fn job(j: &JobStatus, history: bool) -> pb::Job {
    let mut spec = j.def.to_json();
    if let Some(m) = spec.as_object_mut() {
        m.remove("schedules");
    }
    pb::Job {
        id: j.def.id.to_string(),
        definition_json: spec.to_string(),
        schedules: j
            .def
            .schedules
            .iter()
            .map(|s| schedule(s, Some(j)))
            .collect(),
        active_runs: j.active.iter().map(run).collect(),
        history: Some(pb::History {
            success_count: j.success_count,
            failure_count: j.failure_count,
            last_success_at_ms: ms(j.last_success_at),
            last_failure_at_ms: ms(j.last_failure_at),
            finished_runs: if history {
                j.history.iter().map(run).collect()
            } else {
                Vec::new()
            },
        }),
    }
}

/// A schedule, with its next tick when its job is known.
pub(super) fn schedule(s: &ScheduleDef, job: Option<&JobStatus>) -> pb::Schedule {
    pb::Schedule {
        id: s.id.clone(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        enabled: s.enabled,
        next_run_at_ms: job.and_then(|j| ms(j.next_ticks.get(&s.id).copied().flatten())),
        definition_json: s.to_json().to_string(),
    }
}

fn run_status(s: RunStatus) -> pb::RunStatus {
    match s {
        RunStatus::Initial => pb::RunStatus::Initial,
        RunStatus::Starting => pb::RunStatus::Starting,
        RunStatus::Active => pb::RunStatus::Active,
        RunStatus::Success => pb::RunStatus::Success,
        RunStatus::Failed => pb::RunStatus::Failed,
        RunStatus::Missed => pb::RunStatus::Missed,
        RunStatus::Skipped => pb::RunStatus::Skipped,
    }
}

fn trigger(t: &Trigger) -> pb::Trigger {
    use pb::trigger::Kind;
    let kind = match t {
        Trigger::Schedule { schedule, tick } => Kind::Schedule(pb::ScheduleTick {
            schedule_id: schedule.clone(),
            tick_ms: tick.millis(),
        }),
        Trigger::Manual => Kind::Manual(pb::Manual {}),
        Trigger::Dependency { parents } => Kind::Dependency(pb::Dependency {
            parents: parents
                .iter()
                .map(|(j, r)| pb::ParentRun {
                    job_id: j.to_string(),
                    run_id: r.to_string(),
                })
                .collect(),
        }),
    };
    pb::Trigger { kind: Some(kind) }
}

/// A run.
pub(super) fn run(r: &Run) -> pb::Run {
    pb::Run {
        id: r.id.to_string(),
        job_id: r.job.to_string(),
        status: run_status(r.status) as i32,
        reason: r.reason.clone(),
        trigger: Some(trigger(&r.trigger)),
        created_at_ms: r.created_at.millis(),
        started_at_ms: ms(r.started_at),
        finished_at_ms: ms(r.finished_at),
        exit_code: r.exit_code(),
        tasks: r.tasks.iter().map(task).collect(),
    }
}

fn task(t: &RunTask) -> pb::RunTask {
    pb::RunTask {
        task_id: t.task_id.clone(),
        index: t.index,
        attempt: t.attempt,
        state: t.state.clone(),
        agent_id: t.agent_id.clone(),
        launched_at_ms: ms(t.launched_at),
        started_at_ms: ms(t.started_at),
        finished_at_ms: ms(t.finished_at),
        exit_code: t.exit_code,
        message: t.message.clone(),
    }
}
