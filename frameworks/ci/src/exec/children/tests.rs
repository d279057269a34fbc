//! The trigger jobs' steps: create, adopt, depend or not, cancel.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::*;
use crate::exec::record::{ChildLink, ParentLink};
use crate::exec::runner::tests::record;
use crate::exec::state::{JobEnd, JobStatus};

const PARENT: &str = "build:\n  stage: build\n  script: [x]\nkid:\n  stage: test\n  trigger:\n    include: child.yml\n    strategy: depend\nfree:\n  stage: test\n  trigger: {include: child.yml}\n";
const CHILD: &str = "unit:\n  script: [x]\n";

fn t() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

/// The parent (pipeline 1) with `build` passed: `kid` (1) and `free` (2)
/// are pending.
fn parent() -> PipelineRecord {
    let mut rec = record(PARENT);
    rec.state.started(0, "ci-1-0-1", t()).unwrap();
    rec.state.finished(0, JobEnd::success(), t()).unwrap();
    rec.state.advance(t());
    rec
}

/// Child pipeline `id` of job `job`'s attempt `attempt` of pipeline 1.
fn child(id: u64, job: usize, attempt: usize) -> PipelineRecord {
    let mut rec = record(CHILD);
    rec.id = id;
    rec.family.parent = Some(ParentLink {
        pipeline: 1,
        job,
        attempt,
    });
    rec
}

fn all(recs: Vec<PipelineRecord>) -> BTreeMap<u64, PipelineRecord> {
    recs.into_iter().map(|r| (r.id, r)).collect()
}

/// Starts trigger job `job` of the parent with child `id` (as the runner
/// does).
fn start(parent: &mut PipelineRecord, job: usize, id: u64) {
    let attempt = parent.state.job(job).unwrap().attempts.len() + 1;
    parent.state.started(job, "", t()).unwrap();
    parent.family.children.push(ChildLink {
        job,
        attempt,
        pipeline: id,
    });
}

fn end_child(child: &mut PipelineRecord, end: JobEnd) {
    child.state.started(0, "ci-2-0-1", t()).unwrap();
    child.state.finished(0, end, t()).unwrap();
    child.state.advance(t());
}

#[test]
fn pending_trigger_jobs_create_their_children_and_nothing_else_does() {
    let pipelines = all(vec![parent()]);
    assert_eq!(
        steps(&pipelines, &Assignment::default()),
        [
            ChildStep::Create {
                pipeline: 1,
                job: 1,
                attempt: 1
            },
            ChildStep::Create {
                pipeline: 1,
                job: 2,
                attempt: 1
            },
        ]
    );
    // Before `build` passed, nothing is pending.
    let early = all(vec![record(PARENT)]);
    assert!(steps(&early, &Assignment::default()).is_empty());
}

#[test]
fn a_child_stored_before_a_restart_is_adopted_not_made_again() {
    let pipelines = all(vec![parent(), child(2, 1, 1)]);
    let got = steps(&pipelines, &Assignment::default());
    assert_eq!(
        got[0],
        ChildStep::Adopt {
            pipeline: 1,
            job: 1,
            attempt: 1,
            child: 2
        }
    );
    // The other job's child does not exist yet.
    assert_eq!(
        got[1],
        ChildStep::Create {
            pipeline: 1,
            job: 2,
            attempt: 1
        }
    );
}

#[test]
fn without_depend_the_job_succeeds_once_its_child_exists() {
    let mut p = parent();
    start(&mut p, 2, 3);
    let pipelines = all(vec![p, child(3, 2, 1)]);
    let got = steps(&pipelines, &Assignment::default());
    assert!(got.contains(&ChildStep::Finish {
        pipeline: 1,
        job: 2,
        end: TriggerEnd::Success
    }));
}

#[test]
fn with_depend_the_job_waits_and_takes_the_childs_result() {
    let mut p = parent();
    start(&mut p, 1, 2);
    start(&mut p, 2, 3);
    let finished = |pipelines: &BTreeMap<u64, PipelineRecord>| -> Vec<ChildStep> {
        steps(pipelines, &Assignment::default())
            .into_iter()
            .filter(|s| matches!(s, ChildStep::Finish { job: 1, .. }))
            .collect()
    };
    // Running child: the depend job waits.
    let mut c = child(2, 1, 1);
    c.state.started(0, "ci-2-0-1", t()).unwrap();
    let pipelines = all(vec![p.clone(), c, child(3, 2, 1)]);
    assert!(finished(&pipelines).is_empty());

    let mut passed = child(2, 1, 1);
    end_child(&mut passed, JobEnd::success());
    let pipelines = all(vec![p.clone(), passed, child(3, 2, 1)]);
    assert_eq!(
        finished(&pipelines),
        [ChildStep::Finish {
            pipeline: 1,
            job: 1,
            end: TriggerEnd::Success
        }]
    );

    let mut failed = child(2, 1, 1);
    end_child(&mut failed, JobEnd::script_failure(1));
    let pipelines = all(vec![p.clone(), failed, child(3, 2, 1)]);
    assert_eq!(
        finished(&pipelines),
        [ChildStep::Finish {
            pipeline: 1,
            job: 1,
            end: TriggerEnd::Failed("child pipeline #2 failed".into())
        }]
    );

    let mut canceled = child(2, 1, 1);
    canceled.state.cancel();
    let pipelines = all(vec![p, canceled, child(3, 2, 1)]);
    assert_eq!(
        finished(&pipelines),
        [ChildStep::Finish {
            pipeline: 1,
            job: 1,
            end: TriggerEnd::Canceled
        }]
    );
}

#[test]
fn a_canceled_trigger_job_cancels_its_child_and_ends_canceled() {
    let mut p = parent();
    start(&mut p, 1, 2);
    p.state.cancel();
    assert_eq!(p.state.job(1).unwrap().status, JobStatus::Canceling);
    let mut c = child(2, 1, 1);
    c.state.started(0, "ci-2-0-1", t()).unwrap();
    let pipelines = all(vec![p, c]);
    assert_eq!(
        steps(&pipelines, &Assignment::default()),
        [
            ChildStep::CancelChild { child: 2 },
            ChildStep::Finish {
                pipeline: 1,
                job: 1,
                end: TriggerEnd::Canceled
            }
        ]
    );
}

#[test]
fn a_retried_trigger_job_makes_a_new_child_and_a_lost_child_fails_the_job() {
    let mut p = parent();
    start(&mut p, 1, 2);
    p.state
        .finished(
            1,
            JobEnd::failure(
                crate::exec::state::FailureReason::UnknownFailure,
                "child failed",
            ),
            t(),
        )
        .unwrap();
    p.state.retry_job(1).unwrap();
    let mut old = child(2, 1, 1);
    end_child(&mut old, JobEnd::script_failure(1));
    let pipelines = all(vec![p.clone(), old]);
    assert!(
        steps(&pipelines, &Assignment::default()).contains(&ChildStep::Create {
            pipeline: 1,
            job: 1,
            attempt: 2
        })
    );
    // Running, but its child's record is gone.
    let mut q = parent();
    start(&mut q, 1, 9);
    let pipelines = all(vec![q]);
    assert!(
        steps(&pipelines, &Assignment::default()).contains(&ChildStep::Finish {
            pipeline: 1,
            job: 1,
            end: TriggerEnd::Failed("its child pipeline is gone".into())
        })
    );
}
