//! The gRPC API through a generated tonic client over loopback, against
//! the test backend, on the same port as the HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_proto::jobs::v1 as pb;
use pb::jobs_client::JobsClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::transport::Channel;

use crate::api::tests::backend::{T0, TestBackend};

struct Server {
    b: Arc<TestBackend>,
    addr: SocketAddr,
    client: JobsClient<Channel>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Serves the HTTP and gRPC APIs of a backend seeded as the HTTP
    /// tests' on one loopback port.
    async fn start() -> Server {
        let b = Arc::new(TestBackend::seeded());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = crate::api::router(b.clone()).merge(super::router(b.clone()));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let client = JobsClient::connect(format!("http://{addr}")).await.unwrap();
        Server {
            b,
            addr,
            client,
            task,
        }
    }

    fn c(&self) -> JobsClient<Channel> {
        self.client.clone()
    }
}

fn json_def(text: &str) -> Option<pb::Definition> {
    Some(pb::Definition {
        text: text.into(),
        format: pb::DefinitionFormat::Json as i32,
    })
}

#[tokio::test]
async fn jobs_and_runs_are_typed_messages() {
    let s = Server::start().await;
    let list = s
        .c()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = list.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["adhoc", "nightly.backup"]);
    let j = &list.jobs[1];
    assert_eq!(j.schedules[0].id, "nightly");
    assert_eq!(j.schedules[0].cron, "0 3 * * *");
    assert_eq!(j.schedules[0].next_run_at_ms, Some(T0.millis()));
    let h = j.history.as_ref().unwrap();
    assert_eq!((h.success_count, h.failure_count), (1, 1));
    assert_eq!(
        (h.last_success_at_ms, h.last_failure_at_ms),
        (Some(T0.millis()), None)
    );
    assert!(h.finished_runs.is_empty(), "only with include_history");

    let one = s
        .c()
        .get_job(pb::GetJobRequest {
            job_id: "nightly.backup".into(),
            include_history: true,
        })
        .await
        .unwrap()
        .into_inner();
    let finished = one.history.unwrap().finished_runs;
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[1].exit_code, Some(0));
    let r = &finished[0];
    assert_eq!(r.id, "r-failed");
    assert_eq!(r.status, pb::RunStatus::Failed as i32);
    assert_eq!(r.reason, "task failed");
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.created_at_ms, T0.millis());
    assert_eq!(r.finished_at_ms, Some(T0.millis() + 60_000));
    assert_eq!(
        r.trigger.as_ref().unwrap().kind,
        Some(pb::trigger::Kind::Schedule(pb::ScheduleTick {
            schedule_id: "nightly".into(),
            tick_ms: T0.millis(),
        }))
    );
    let t = &r.tasks[0];
    assert_eq!(t.task_id, "nightly.backup.r-failed.0.0");
    assert_eq!((t.index, t.attempt, t.exit_code), (0, 0, Some(3)));
    assert_eq!(t.launched_at_ms, Some(T0.millis() + 1000));
    assert_eq!(t.state, "TASK_FINISHED");
    assert_eq!(one.active_runs[0].status, pb::RunStatus::Active as i32);
    assert_eq!(one.active_runs[0].exit_code, None);
}

#[tokio::test]
async fn runs_start_list_and_die() {
    let s = Server::start().await;
    let started = s
        .c()
        .start_run(pb::StartRunRequest {
            job_id: "adhoc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.job_id, "adhoc");
    assert_eq!(started.status, pb::RunStatus::Initial as i32);
    assert_eq!(
        started.trigger.unwrap().kind,
        Some(pb::trigger::Kind::Manual(pb::Manual {}))
    );
    let runs = s
        .c()
        .list_runs(pb::ListRunsRequest {
            job_id: "adhoc".into(),
            include_history: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runs.active.len(), 1);
    assert!(runs.finished.is_empty());
    let killed = s
        .c()
        .kill_run(pb::KillRunRequest {
            job_id: "adhoc".into(),
            run_id: started.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(killed.status, pb::RunStatus::Failed as i32);
    let got = s
        .c()
        .get_run(pb::GetRunRequest {
            job_id: "adhoc".into(),
            run_id: started.id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.reason, "killed");
    let e = s
        .c()
        .get_run(pb::GetRunRequest {
            job_id: "adhoc".into(),
            run_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "Run \"nope\" of job 'adhoc' does not exist");
}

#[tokio::test]
async fn refusals_map_to_codes_and_change_nothing() {
    let s = Server::start().await;
    let before = s.b.snapshot();
    let e = s
        .c()
        .get_job(pb::GetJobRequest {
            job_id: "missing".into(),
            include_history: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "Job 'missing' does not exist")
    );
    let e = s
        .c()
        .list_runs(pb::ListRunsRequest {
            job_id: "Bad Id".into(),
            include_history: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("invalid job id \"Bad Id\""),
        "{}",
        e.message()
    );

    // Active runs: the caller must pass stop_current_job_runs first.
    let e = s
        .c()
        .remove_job(pb::RemoveJobRequest {
            job_id: "nightly.backup".into(),
            stop_current_job_runs: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(s.b.snapshot(), before);

    // Definitions: syntax and validity are INVALID_ARGUMENT, before the
    // backend is asked.
    let ops = s.b.ops().len();
    let e = s
        .c()
        .create_job(pb::CreateJobRequest {
            definition: json_def("{\"id\": "),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("invalid JSON at line 1"),
        "{}",
        e.message()
    );
    let e = s
        .c()
        .update_job(pb::UpdateJobRequest {
            definition: json_def(r#"{"id": "Not Valid!"}"#),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with('/'), "paths first: {}", e.message());
    let e = s
        .c()
        .put_schedule(pb::PutScheduleRequest {
            job_id: "adhoc".into(),
            definition: Some(pb::Definition {
                text: "id: x\ncron: !tag 1\n".into(),
                format: pb::DefinitionFormat::Yaml as i32,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("invalid YAML at line 2, column 7: "),
        "{}",
        e.message()
    );
    let e = s
        .c()
        .create_job(pb::CreateJobRequest {
            definition: Some(pb::Definition {
                text: "{}".into(),
                format: 9,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "unknown definition format 9");
    let e = s
        .c()
        .create_job(pb::CreateJobRequest {
            definition: json_def(&" ".repeat(crate::api::MAX_BODY_BYTES + 1)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(s.b.ops().len(), ops);
    assert_eq!(s.b.snapshot(), before);

    s.b.down.store(true, Ordering::SeqCst);
    let e = s
        .c()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unavailable, "not the active instance")
    );
}

#[tokio::test]
async fn schedules_are_removed_and_http_shares_the_port() {
    let s = Server::start().await;
    s.c()
        .remove_schedule(pb::RemoveScheduleRequest {
            job_id: "nightly.backup".into(),
            schedule_id: "nightly".into(),
        })
        .await
        .unwrap();
    let e = s
        .c()
        .remove_schedule(pb::RemoveScheduleRequest {
            job_id: "nightly.backup".into(),
            schedule_id: "nightly".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(
        b"GET /v1/jobs/nightly.backup/schedules HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("[]"), "{answer}");
}

#[tokio::test]
async fn creations_conflict_and_schedules_are_put() {
    let s = Server::start().await;
    let job = r#"{"id": "etl", "run": {"cmd": "run-etl", "cpus": 0.5, "mem": 64}}"#;
    let created = s
        .c()
        .create_job(pb::CreateJobRequest {
            definition: json_def(job),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.id, "etl");
    let spec: serde_json::Value = serde_json::from_str(&created.definition_json).unwrap();
    assert_eq!(spec["run"]["cmd"], "run-etl");
    let e = s
        .c()
        .create_job(pb::CreateJobRequest {
            definition: json_def(job),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    let put = |cron: &str| pb::PutScheduleRequest {
        job_id: "etl".into(),
        definition: Some(pb::Definition {
            text: format!("id: hourly\ncron: '{cron}'\n"),
            format: pb::DefinitionFormat::Yaml as i32,
        }),
    };
    let first = s
        .c()
        .put_schedule(put("0 * * * *"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    assert_eq!(first.schedule.unwrap().next_run_at_ms, Some(T0.millis()));
    let second = s
        .c()
        .put_schedule(put("30 * * * *"))
        .await
        .unwrap()
        .into_inner();
    assert!(!second.created);
    assert_eq!(second.schedule.unwrap().cron, "30 * * * *");

    // UpdateJob without `schedules` keeps them.
    let updated = s
        .c()
        .update_job(pb::UpdateJobRequest {
            definition: json_def(job),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.schedules.len(), 1);
    assert_eq!(updated.schedules[0].cron, "30 * * * *");
}
