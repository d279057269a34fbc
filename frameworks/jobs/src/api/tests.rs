//! The HTTP API against the test backend ([`backend::TestBackend`]):
//! routing, status codes, embeds, bodies, error shapes, and that a refused
//! request changes nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;
use crate::state::Op;

pub(crate) mod backend;
mod bodies;
mod writes;

use backend::TestBackend;

pub(crate) struct Api {
    pub(crate) b: Arc<TestBackend>,
    router: axum::Router,
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

impl Api {
    pub(crate) fn new() -> Api {
        let b = Arc::new(TestBackend::default());
        Api {
            router: router(b.clone()),
            b,
        }
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        uri: &str,
        ct: Option<&str>,
        body: Body,
    ) -> Answer {
        let mut req = HttpRequest::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).to_string()))
        };
        Answer { status, body }
    }

    pub(crate) async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> Answer {
        let b = body.map_or(Body::empty(), |s| Body::from(s.to_string()));
        let ct = body.map(|_| "application/json");
        self.send(method, uri, ct, b).await
    }

    /// An API over [`TestBackend::seeded`].
    fn seeded() -> Api {
        let b = Arc::new(TestBackend::seeded());
        Api {
            router: router(b.clone()),
            b,
        }
    }
}

const T0_TEXT: &str = "2026-12-07T16:25:00.000+0000";

#[tokio::test]
async fn ping_and_info() {
    let api = Api::new();
    let p = api.call("GET", "/ping", None).await;
    assert_eq!((p.status, p.body), (StatusCode::OK, json!("pong")));
    let i = api.call("GET", "/v1/info", None).await;
    assert_eq!(i.status, StatusCode::OK);
    assert_eq!(i.body["frameworkId"], "fw-1");
    assert_eq!(i.body["address"], "127.0.0.1:8095");
    assert_eq!(i.body["name"], "berth-jobs");
    let n = api.call("GET", "/v1/nothing", None).await;
    assert_eq!(n.status, StatusCode::NOT_FOUND);
    assert_eq!(n.body["message"], "no such resource");
}

#[tokio::test]
async fn jobs_are_listed_with_the_embeds_asked_for() {
    let api = Api::seeded();
    let plain = api.call("GET", "/v1/jobs", None).await;
    assert_eq!(plain.status, StatusCode::OK);
    let list = plain.body.as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["adhoc", "nightly.backup"]);
    for key in ["activeRuns", "schedules", "history", "historySummary"] {
        assert!(list[1].get(key).is_none(), "{key} without embed");
    }

    // Repeated and comma-separated, as Metronome takes them.
    let all = api
        .call(
            "GET",
            "/v1/jobs?embed=activeRuns&embed=schedules,history&embed=historySummary",
            None,
        )
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let j = &all.body[1];
    assert_eq!(j["activeRuns"][0]["id"], "r-active");
    assert_eq!(j["activeRuns"][0]["status"], "ACTIVE");
    assert_eq!(j["schedules"][0]["id"], "nightly");
    assert_eq!(j["schedules"][0]["nextRunAt"], T0_TEXT);
    let h = &j["history"];
    assert_eq!(
        (h["successCount"].clone(), h["failureCount"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(h["lastSuccessAt"], T0_TEXT);
    assert_eq!(h["lastFailureAt"], Value::Null);
    assert_eq!(h["successfulFinishedRuns"][0]["id"], "r-ok");
    assert_eq!(h["successfulFinishedRuns"][0]["exitCode"], 0);
    let failed = &h["failedFinishedRuns"];
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["id"], "r-failed");
    assert_eq!(failed[0]["status"], "FAILED");
    assert_eq!(failed[0]["reason"], "task failed");
    assert_eq!(failed[0]["exitCode"], 3);
    assert_eq!(failed[0]["createdAt"], T0_TEXT);
    assert_eq!(failed[0]["finishedAt"], "2026-12-07T16:26:00.000+0000");
    assert_eq!(failed[0]["tasks"], json!(["nightly.backup.r-failed.0.0"]));
    let s = &j["historySummary"];
    assert_eq!(s["successCount"], 1);
    assert!(s.get("successfulFinishedRuns").is_none());
    // The other job embeds empty lists.
    assert_eq!(all.body[0]["activeRuns"], json!([]));

    let one = api
        .call("GET", "/v1/jobs/nightly.backup?embed=history", None)
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["id"], "nightly.backup");
    assert_eq!(one.body["history"]["failureCount"], 1);
    assert!(one.body.get("activeRuns").is_none());
}

#[tokio::test]
async fn unknown_embeds_and_parameters_are_refused() {
    let api = Api::seeded();
    for uri in [
        "/v1/jobs?embed=activeRuns,tasks",
        "/v1/jobs/adhoc?embed=everything",
    ] {
        let a = api.call("GET", uri, None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        let m = a.body["message"].as_str().unwrap();
        assert!(m.starts_with("Unknown embed option"), "{m}");
        assert!(
            m.contains("activeRuns, schedules, history, historySummary"),
            "{m}"
        );
    }
    let a = api.call("GET", "/v1/jobs?limit=3", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body["message"].as_str().unwrap().contains("\"limit\""),
        "{}",
        a.body
    );
    let a = api
        .call("DELETE", "/v1/jobs/adhoc?stopCurrentJobRuns=yes", None)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(api.b.ops().is_empty());
}

#[tokio::test]
async fn unknown_and_malformed_job_ids() {
    let api = Api::seeded();
    let a = api.call("GET", "/v1/jobs/missing", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body, json!({ "message": "Job 'missing' does not exist" }));
    for uri in [
        "/v1/jobs/missing/runs",
        "/v1/jobs/missing/schedules",
        "/v1/jobs/missing/schedules/x",
    ] {
        assert_eq!(
            api.call("GET", uri, None).await.status,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
    }
    let a = api.call("GET", "/v1/jobs/Not_Valid", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid job id \"Not_Valid\"")
    );
    // The backend's refusal passes through with its status and words.
    let a = api.call("POST", "/v1/jobs/missing/runs", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["message"], "Job 'missing' does not exist");
}

#[tokio::test]
async fn runs_start_show_and_stop() {
    let api = Api::seeded();
    let started = api.call("POST", "/v1/jobs/adhoc/runs", None).await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    assert_eq!(started.body["jobId"], "adhoc");
    assert_eq!(started.body["status"], "INITIAL");
    assert_eq!(started.body["trigger"], json!({ "type": "manual" }));
    assert_eq!(started.body["completedAt"], Value::Null);
    assert_eq!(started.body["exitCode"], Value::Null);
    let rid = started.body["id"].as_str().unwrap().to_owned();
    // `{}` is an empty body too.
    let second = api.call("POST", "/v1/jobs/adhoc/runs", Some("{}")).await;
    assert_eq!(second.status, StatusCode::CREATED);

    let list = api.call("GET", "/v1/jobs/adhoc/runs", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body.as_array().unwrap().len(), 2);
    assert_eq!(list.body[0]["id"], rid.as_str());

    let stopped = api
        .call(
            "POST",
            &format!("/v1/jobs/adhoc/runs/{rid}/actions/stop"),
            None,
        )
        .await;
    assert_eq!(stopped.status, StatusCode::OK);
    assert_eq!(stopped.body["status"], "FAILED");
    assert_eq!(stopped.body["reason"], "killed");
    // Found in the history after its end.
    let got = api
        .call("GET", &format!("/v1/jobs/adhoc/runs/{rid}"), None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["status"], "FAILED");
    let none = api.call("GET", "/v1/jobs/adhoc/runs/nope", None).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(
        none.body["message"],
        "Run \"nope\" of job 'adhoc' does not exist"
    );
}

#[tokio::test]
async fn a_run_renders_in_metronomes_shape_with_berths_fields() {
    let api = Api::seeded();
    let r = api
        .call("GET", "/v1/jobs/nightly.backup/runs/r-failed", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({
            "id": "r-failed",
            "jobId": "nightly.backup",
            "status": "FAILED",
            "createdAt": T0_TEXT,
            "completedAt": "2026-12-07T16:26:00.000+0000",
            "reason": "task failed",
            "trigger": { "type": "schedule", "scheduleId": "nightly", "tick": T0_TEXT },
            "exitCode": 3,
            "startedAt": "2026-12-07T16:25:02.000+0000",
            "finishedAt": "2026-12-07T16:26:00.000+0000",
            "completions": 1,
            "parallelism": 1,
            "tasks": [{
                "id": "nightly.backup.r-failed.0.0",
                "status": "TASK_FINISHED",
                "startedAt": "2026-12-07T16:25:01.000+0000",
                "completedAt": "2026-12-07T16:26:00.000+0000",
                "index": 0,
                "attempt": 0,
                "agentId": "agent-1",
                "exitCode": 3,
                "message": "",
                "runningAt": "2026-12-07T16:25:02.000+0000",
            }],
        })
    );
}

#[tokio::test]
async fn run_overrides_are_refused_and_start_nothing() {
    let api = Api::seeded();
    let before = api.b.snapshot();
    let a = api
        .call(
            "POST",
            "/v1/jobs/adhoc/runs",
            Some(r#"{"env": {"A": "1"}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.body["message"], "Object is not valid");
    assert_eq!(a.body["details"][0]["path"], "/");
    assert!(api.b.ops().is_empty());
    assert_eq!(api.b.snapshot(), before);
}

#[tokio::test]
async fn deleting_a_job_with_active_runs_needs_stop_current_job_runs() {
    let api = Api::seeded();
    let before = api.b.snapshot();
    let a = api.call("DELETE", "/v1/jobs/nightly.backup", None).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(
        a.body["message"],
        "There are active job runs. Override with stopCurrentJobRuns=true"
    );
    assert_eq!(api.b.snapshot(), before);
    let a = api
        .call(
            "DELETE",
            "/v1/jobs/nightly.backup?stopCurrentJobRuns=true",
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["id"], "nightly.backup");
    assert_eq!(
        api.b.ops().last(),
        Some(&Op::Remove {
            id: backend::id("nightly.backup"),
            stop_runs: true
        })
    );
    let gone = api.call("GET", "/v1/jobs/nightly.backup", None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = api.call("DELETE", "/v1/jobs/nightly.backup", None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn schedules_are_read_and_removed() {
    let api = Api::seeded();
    let list = api
        .call("GET", "/v1/jobs/nightly.backup/schedules", None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body[0]["id"], "nightly");
    assert_eq!(list.body[0]["nextRunAt"], T0_TEXT);
    let one = api
        .call("GET", "/v1/jobs/nightly.backup/schedules/nightly", None)
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body, list.body[0]);
    let none = api
        .call("GET", "/v1/jobs/nightly.backup/schedules/weekly", None)
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(
        none.body["message"],
        "Schedule \"weekly\" of job 'nightly.backup' does not exist"
    );
    let empty = api.call("GET", "/v1/jobs/adhoc/schedules", None).await;
    assert_eq!(empty.body, json!([]));

    let d = api
        .call("DELETE", "/v1/jobs/nightly.backup/schedules/nightly", None)
        .await;
    assert_eq!((d.status, d.body), (StatusCode::OK, Value::Null));
    let list = api
        .call("GET", "/v1/jobs/nightly.backup/schedules", None)
        .await;
    assert_eq!(list.body, json!([]));
    let d = api
        .call("DELETE", "/v1/jobs/nightly.backup/schedules/nightly", None)
        .await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unavailable_backend_is_503() {
    let api = Api::seeded();
    api.b.down.store(true, Ordering::SeqCst);
    for (method, uri) in [
        ("GET", "/v1/info"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/adhoc"),
        ("POST", "/v1/jobs/adhoc/runs"),
        ("DELETE", "/v1/jobs/adhoc"),
    ] {
        let a = api.call(method, uri, None).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}");
        assert_eq!(a.body["message"], "not the active instance");
    }
}

#[tokio::test]
async fn secrets_are_stored_listed_and_removed_by_path_never_shown() {
    let api = Api::new();
    let put = |path: &str, value: &str| {
        let uri = format!("/v1/secrets/{path}");
        let body = Body::from(value.to_owned());
        let api = &api;
        async move { api.send("PUT", &uri, Some("text/plain"), body).await }
    };
    let short = put("db/password", "short").await;
    assert_eq!(
        short.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        short.body
    );
    let bad_path = put("db/../x", "long enough value").await;
    assert_eq!(
        bad_path.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad_path.body
    );
    assert!(api.b.secrets.lock().unwrap().is_empty(), "nothing stored");
    let json_body = api
        .send(
            "PUT",
            "/v1/secrets/db/password",
            Some("application/json"),
            Body::from("\"x\""),
        )
        .await;
    assert_eq!(json_body.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        put("db/password", "s3cret-value").await.status,
        StatusCode::NO_CONTENT
    );
    let list = api.send("GET", "/v1/secrets", None, Body::empty()).await;
    assert_eq!(list.body, json!({"secrets": ["db/password"]}));
    let gone = api
        .send("DELETE", "/v1/secrets/db/password", None, Body::empty())
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let again = api
        .send("DELETE", "/v1/secrets/db/password", None, Body::empty())
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}
