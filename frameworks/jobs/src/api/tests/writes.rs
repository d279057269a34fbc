//! Writes with valid definitions (the definitions' parser): creation,
//! replacement keeping or replacing schedules, schedules added and
//! replaced, JSON and YAML alike.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::backend::id;
use crate::state::Op;

/// Metronome's job JSON as users write it.
const JOB: &str = r#"{
  "id": "prod.example.app",
  "description": "Example Application",
  "labels": { "owner": "zeus" },
  "run": {
    "cmd": "nuke --dry --master local",
    "cpus": 1.5,
    "mem": 32,
    "disk": 128,
    "env": { "MON": "test" },
    "maxLaunchDelay": 3600,
    "restart": { "activeDeadlineSeconds": 120, "policy": "NEVER" }
  }
}"#;

/// The same job in YAML.
const JOB_YAML: &str = "id: prod.example.app
description: Example Application
labels: {owner: zeus}
run:
  cmd: nuke --dry --master local
  cpus: 1.5
  mem: 32
  disk: 128
  env: {MON: test}
  maxLaunchDelay: 3600
  restart: {activeDeadlineSeconds: 120, policy: NEVER}
";

const SCHEDULE: &str = r#"{"id": "everyminute", "cron": "* * * * *", "concurrencyPolicy": "ALLOW",
  "enabled": true, "startingDeadlineSeconds": 60, "timezone": "America/Chicago"}"#;

fn with(base: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(base).unwrap();
    f(&mut v);
    v.to_string()
}

#[tokio::test]
async fn a_job_is_created_once_and_yaml_reads_as_json() {
    let api = Api::new();
    let a = api.call("POST", "/v1/jobs", Some(JOB)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["id"], "prod.example.app");
    assert_eq!(a.body["run"]["cmd"], "nuke --dry --master local");
    assert!(a.body.get("schedules").is_none(), "{}", a.body);
    let again = api.call("POST", "/v1/jobs", Some(JOB)).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["message"], "Job with this id already exists");

    let yaml = Api::new();
    let y = yaml
        .send(
            "POST",
            "/v1/jobs",
            Some("application/yaml"),
            Body::from(JOB_YAML),
        )
        .await;
    assert_eq!(y.status, StatusCode::CREATED, "{}", y.body);
    assert_eq!(y.body, a.body);
    assert_eq!(yaml.b.snapshot(), api.b.snapshot());
    // GET answers what POST did.
    let g = api.call("GET", "/v1/jobs/prod.example.app", None).await;
    assert_eq!(g.body, a.body);
}

#[tokio::test]
async fn put_without_schedules_keeps_them() {
    let api = Api::new();
    let with_schedule = with(JOB, |v| {
        v["schedules"] = json!([serde_json::from_str::<Value>(SCHEDULE).unwrap()])
    });
    let a = api.call("POST", "/v1/jobs", Some(&with_schedule)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["schedules"][0]["id"], "everyminute");

    // No id in the body: the path's; no schedules: kept.
    let body = with(JOB, |v| {
        v.as_object_mut().unwrap().remove("id");
        v["description"] = json!("changed");
    });
    let p = api
        .call("PUT", "/v1/jobs/prod.example.app", Some(&body))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["description"], "changed");
    assert!(matches!(
        api.b.ops().last(),
        Some(Op::Update {
            keep_schedules: true,
            ..
        })
    ));
    let s = api
        .call("GET", "/v1/jobs/prod.example.app/schedules", None)
        .await;
    assert_eq!(s.body[0]["id"], "everyminute");

    // `schedules: []` replaces them.
    let body = with(JOB, |v| v["schedules"] = json!([]));
    let p = api
        .call("PUT", "/v1/jobs/prod.example.app", Some(&body))
        .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(matches!(
        api.b.ops().last(),
        Some(Op::Update {
            keep_schedules: false,
            ..
        })
    ));
    let s = api
        .call("GET", "/v1/jobs/prod.example.app/schedules", None)
        .await;
    assert_eq!(s.body, json!([]));

    let missing = api.call("PUT", "/v1/jobs/other", Some(&body)).await;
    assert_eq!(
        missing.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "body id 'prod.example.app' is not the path's"
    );
    let body = with(JOB, |v| v["id"] = json!("other"));
    let missing = api.call("PUT", "/v1/jobs/other", Some(&body)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn schedules_are_added_and_replaced() {
    let api = Api::new();
    api.call("POST", "/v1/jobs", Some(JOB)).await;
    let a = api
        .call(
            "POST",
            "/v1/jobs/prod.example.app/schedules",
            Some(SCHEDULE),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["id"], "everyminute");
    assert_eq!(a.body["timezone"], "America/Chicago");
    assert_eq!(a.body["nextRunAt"], "2026-12-07T16:25:00.000+0000");
    let again = api
        .call(
            "POST",
            "/v1/jobs/prod.example.app/schedules",
            Some(SCHEDULE),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    // The path names the schedule; the body may leave its id out.
    let body = with(SCHEDULE, |v| {
        v.as_object_mut().unwrap().remove("id");
        v["cron"] = json!("*/5 * * * *");
    });
    let p = api
        .call(
            "PUT",
            "/v1/jobs/prod.example.app/schedules/everyminute",
            Some(&body),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["cron"], "*/5 * * * *");
    let g = api
        .call(
            "GET",
            "/v1/jobs/prod.example.app/schedules/everyminute",
            None,
        )
        .await;
    assert_eq!(g.body, p.body);
    let j = api.b.snapshot();
    assert_eq!(
        j[&id("prod.example.app")].def.schedules[0].cron,
        "*/5 * * * *"
    );
}
