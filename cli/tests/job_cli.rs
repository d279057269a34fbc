//! `berth job ...` against a fake job framework: a small HTTP server on
//! 127.0.0.1 that answers canned Metronome JSON and records each request.
//!
//! Covered: each command's method, path, query, content type and body;
//! what it prints and its exit code (a refused request 1 with the field
//! paths, an unreachable framework 2, a standby's 503 waited on); `run
//! --wait` following a run ACTIVE → FAILED with exit code 3 (exit 3),
//! SUCCESS (0), MISSED (1), and a run that is gone (2); `--timeout`; a
//! framework restarting while `--wait` follows a run.
//!
//! Not covered here: the streaming of a run's task output from its agent
//! (`run --wait` without `--no-logs`, `berth job logs`), which needs a
//! cluster; only that masters that cannot be reached do not change the
//! run's exit code. The end-to-end test with a real cluster covers it.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Req {
    method: String,
    /// Path and query.
    uri: String,
    content_type: String,
    body: String,
}

type Replies = HashMap<String, VecDeque<(u16, String)>>;

/// The fake job framework.
struct Fake {
    url: String,
    requests: Arc<Mutex<Vec<Req>>>,
    replies: Arc<Mutex<Replies>>,
    _runtime: tokio::runtime::Runtime,
}

impl Fake {
    fn start() -> Fake {
        Fake::start_on("127.0.0.1:0")
    }

    /// A fake on `address` (`host:port`).
    fn start_on(address: &str) -> Fake {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let requests: Arc<Mutex<Vec<Req>>> = Arc::default();
        let replies: Arc<Mutex<Replies>> = Arc::default();
        let (recorded, canned) = (requests.clone(), replies.clone());
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (recorded, canned) = (recorded.clone(), canned.clone());
            async move {
                let uri = uri
                    .path_and_query()
                    .map_or_else(|| uri.path().to_owned(), ToString::to_string);
                recorded.lock().unwrap().push(Req {
                    method: method.to_string(),
                    uri: uri.clone(),
                    content_type: headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let mut canned = canned.lock().unwrap();
                let (status, body) = match canned.get_mut(&format!("{method} {uri}")) {
                    // The last reply stays.
                    Some(q) if q.len() > 1 => q.pop_front().unwrap(),
                    Some(q) => q.front().cloned().unwrap(),
                    None => (
                        404,
                        json!({"message": format!("no canned reply for {method} {uri}")})
                            .to_string(),
                    ),
                };
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    body,
                )
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Fake {
            url,
            requests,
            replies,
            _runtime: runtime,
        }
    }

    /// Answers `METHOD URI` with `status` and `body` (in turn when given
    /// several times; the last one stays).
    fn reply(&self, method: &str, uri: &str, status: u16, body: &Value) {
        self.replies
            .lock()
            .unwrap()
            .entry(format!("{method} {uri}"))
            .or_default()
            .push_back((status, body.to_string()));
    }

    fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests as `METHOD URI`.
    fn asked(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.uri))
            .collect()
    }

    /// `berth ARGS` against this fake (`BERTH_JOBS`), with `stdin`.
    fn berth_with(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BERTH)
            .args(args)
            .env("BERTH_JOBS", &self.url)
            .env_remove("BERTH_MASTER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().expect("berth ends")
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.berth_with(args, "")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("berth exited")
}

/// Asserts the exit code, showing stderr when it is another.
fn exits(o: &Output, want: i32) {
    assert_eq!(code(o), want, "stderr: {}", stderr(o));
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

const JOB: &str =
    r#"{"id": "backup", "run": {"cmd": "pg_dump", "cpus": 0.5, "mem": 128, "disk": 0}}"#;

fn job_json() -> Value {
    json!({"id": "backup", "run": {"cmd": "pg_dump", "cpus": 0.5, "mem": 128, "disk": 0},
           "schedules": [{"id": "nightly", "cron": "0 2 * * *", "timezone": "UTC",
                          "nextRunAt": "2026-12-08T02:00:00.000Z", "enabled": true}]})
}

fn run_json(status: &str, exit: Option<i32>) -> Value {
    json!({"id": "r1", "jobId": "backup", "status": status, "createdAt": "2026-12-07T10:00:00.000Z",
           "tasks": [{"id": "backup.r1.0.0", "status": "TASK_RUNNING", "agentId": "agent-1",
                      "index": 0, "attempt": 0}],
           "exitCode": exit, "reason": if status == "FAILED" { "task failed" } else { "" }})
}

#[test]
fn add_and_update_send_the_file_and_print_the_next_ticks() {
    let fake = Fake::start();
    let dir = tempfile::tempdir().unwrap();
    fake.reply("POST", "/v1/jobs", 201, &job_json());
    let json_file = file(&dir, "backup.json", JOB);
    let o = fake.berth(&["job", "add", &json_file]);
    exits(&o, 0);
    assert_eq!(
        stdout(&o),
        "job backup added\n  nightly: 0 2 * * * (UTC), next 2026-12-08 02:00:00Z\n"
    );
    let yaml = "id: backup\nrun:\n  cmd: pg_dump\n";
    let yaml_file = file(&dir, "backup.yaml", yaml);
    assert_eq!(code(&fake.berth(&["job", "add", &yaml_file])), 0);
    // YAML on stdin is told apart from JSON.
    assert_eq!(code(&fake.berth_with(&["job", "add", "-"], yaml)), 0);
    assert_eq!(code(&fake.berth_with(&["job", "add", "-"], JOB)), 0);
    let sent: Vec<(String, String, String)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.uri, r.content_type, r.body))
        .collect();
    let want = |ct: &str, body: &str| ("/v1/jobs".to_owned(), ct.to_owned(), body.to_owned());
    assert_eq!(
        sent,
        [
            want("application/json", JOB),
            want("application/yaml", yaml),
            want("application/yaml", yaml),
            want("application/json", JOB)
        ]
    );

    fake.reply("PUT", "/v1/jobs/backup", 200, &job_json());
    let o = fake.berth(&["job", "update", &yaml_file, "--json"]);
    exits(&o, 0);
    let printed: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(printed, job_json());
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        (
            last.method.as_str(),
            last.uri.as_str(),
            last.content_type.as_str()
        ),
        ("PUT", "/v1/jobs/backup", "application/yaml")
    );
    assert_eq!(last.body, yaml);

    // A file without an id is refused before anything is sent.
    let n = fake.requests().len();
    let o = fake.berth(&["job", "update", &file(&dir, "x.json", r#"{"run": {}}"#)]);
    assert_eq!(code(&o), 2);
    assert_eq!(stderr(&o), "berth: /id: the job file has no id\n");
    let o = fake.berth(&["job", "add", "/nonexistent/job.json"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("cannot read /nonexistent/job.json"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fake.requests().len(), n);
}

#[test]
fn a_refused_request_prints_each_field_error_and_exits_1() {
    let fake = Fake::start();
    let dir = tempfile::tempdir().unwrap();
    fake.reply(
        "POST",
        "/v1/jobs",
        422,
        &json!({"message": "Object is not valid", "details": [
            {"path": "/run/cpus", "errors": ["must be greater than 0"]},
            {"path": "/schedules/0/cron", "errors": ["\"61 * * * *\" is not a cron expression"]}]}),
    );
    let o = fake.berth(&["job", "add", &file(&dir, "j.json", JOB)]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "berth: /run/cpus: must be greater than 0\nberth: /schedules/0/cron: \"61 * * * *\" is not a cron expression\n"
    );
    assert_eq!(stdout(&o), "");
    // An unknown job: Metronome's message alone.
    fake.reply(
        "GET",
        "/v1/jobs/nope?embed=activeRuns&embed=schedules&embed=history",
        404,
        &json!({"message": "Job 'nope' does not exist"}),
    );
    let o = fake.berth(&["job", "show", "nope"]);
    assert_eq!(
        (code(&o), stderr(&o).as_str()),
        (1, "berth: Job 'nope' does not exist\n")
    );
}

#[test]
fn an_unreachable_framework_and_bad_arguments_exit_2() {
    let port = berth_tests::free_port();
    let o = Command::new(BERTH)
        .args(["job", "list", "--jobs", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("cannot reach the job framework"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(BERTH)
        .args(["job", "list", "--jobs", "https://example.com"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--jobs must be an http:// URL"),
        "{}",
        stderr(&o)
    );
    for args in [
        &["job", "show", ""][..],
        &["job", "kill", "backup", "a/b"],
        &["job", "run", "backup", "--wait", "--timeout", "0"],
        &["job", "logs", "backup"],
        &["job", "schedule", "remove", "backup"],
    ] {
        let o = Command::new(BERTH).args(args).output().unwrap();
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_standby_is_waited_on() {
    let fake = Fake::start();
    let list = "/v1/jobs?embed=activeRuns&embed=schedules&embed=historySummary";
    fake.reply(
        "GET",
        list,
        503,
        &json!({"message": "this instance is a standby"}),
    );
    fake.reply(
        "GET",
        list,
        503,
        &json!({"message": "this instance is a standby"}),
    );
    fake.reply("GET", list, 200, &json!([]));
    let o = fake.berth(&["job", "list"]);
    exits(&o, 0);
    assert!(
        stderr(&o).contains("cannot answer now (this instance is a standby)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        stdout(&o),
        "ID  SCHEDULES  ACTIVE  LAST SUCCESS  LAST FAILURE\n"
    );
    assert_eq!(fake.asked().len(), 3);
}

#[test]
fn list_show_and_runs_read_the_embedded_state() {
    let fake = Fake::start();
    let mut job = job_json();
    job["activeRuns"] = json!([run_json("ACTIVE", None)]);
    job["historySummary"] = json!({"successCount": 1, "failureCount": 0,
        "lastSuccessAt": "2026-12-06T02:00:09.000Z", "lastFailureAt": null});
    fake.reply(
        "GET",
        "/v1/jobs?embed=activeRuns&embed=schedules&embed=historySummary",
        200,
        &json!([job]),
    );
    let o = fake.berth(&["job", "list"]);
    exits(&o, 0);
    assert_eq!(
        stdout(&o),
        "ID      SCHEDULES        ACTIVE  LAST SUCCESS          LAST FAILURE\n\
         backup  0 2 * * * (UTC)  1       2026-12-06 02:00:09Z  -\n"
    );
    let o = fake.berth(&["--json", "job", "list"]);
    let printed: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(printed[0]["id"], "backup");

    let history = json!({"successCount": 1, "failureCount": 1,
        "successfulFinishedRuns": [{"id": "r0", "createdAt": "2026-12-06T02:00:00.000Z",
                                    "finishedAt": "2026-12-06T02:00:09.000Z"}],
        "failedFinishedRuns": [{"id": "rf", "createdAt": "2026-12-05T02:00:00.000Z",
                                "finishedAt": "2026-12-05T02:01:00.000Z", "exitCode": 4,
                                "reason": "task failed", "trigger": "manual"}]});
    let mut shown = job.clone();
    shown["history"] = history.clone();
    fake.reply(
        "GET",
        "/v1/jobs/backup?embed=activeRuns&embed=schedules&embed=history",
        200,
        &shown,
    );
    let o = fake.berth(&["job", "show", "backup"]);
    exits(&o, 0);
    let text = stdout(&o);
    for want in [
        "job backup\n",
        "  runs:      sh -c \"pg_dump\"\n",
        "  resources: cpus 0.5, mem 128 MiB, disk 0 MiB\n",
        "schedules:\n  nightly: 0 2 * * * (UTC), next 2026-12-08 02:00:00Z\n",
        "active runs:\n  RUN",
        "history, newest first (1 succeeded, 1 failed in all):\n",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    let history_lines: Vec<&str> = text
        .split("history, newest first")
        .nth(1)
        .unwrap()
        .lines()
        .skip(2)
        .collect();
    assert!(history_lines[0].trim_start().starts_with("r0 "), "{text}");
    assert!(
        history_lines[1].contains("rf")
            && history_lines[1].contains("FAILED")
            && history_lines[1].contains("1m00s")
            && history_lines[1].contains(" 4 ")
            && history_lines[1].ends_with("task failed"),
        "{text}"
    );

    fake.reply(
        "GET",
        "/v1/jobs/backup/runs",
        200,
        &json!([run_json("ACTIVE", None)]),
    );
    fake.reply(
        "GET",
        "/v1/jobs/backup?embed=history",
        200,
        &json!({"id": "backup", "history": history}),
    );
    let o = fake.berth(&["job", "runs", "backup"]);
    exits(&o, 0);
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "RUN", "STATUS", "TRIGGER", "STARTED", "DURATION", "EXIT", "REASON"
        ]
    );
    let first: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(first, ["RUN", "r1", "r0", "rf"]);
    assert!(lines[1].contains("ACTIVE"), "{lines:?}");
    let o = fake.berth(&["job", "runs", "backup", "--json"]);
    let printed: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(printed["activeRuns"][0]["id"], "r1");
    assert_eq!(printed["history"]["failedFinishedRuns"][0]["id"], "rf");
}

#[test]
fn run_kill_remove_and_schedules_send_the_right_requests() {
    let fake = Fake::start();
    let dir = tempfile::tempdir().unwrap();
    fake.reply(
        "POST",
        "/v1/jobs/backup/runs",
        201,
        &run_json("INITIAL", None),
    );
    let o = fake.berth(&["job", "run", "backup"]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "r1\n"),
        "{}",
        stderr(&o)
    );
    fake.reply(
        "POST",
        "/v1/jobs/backup/runs/r1/actions/stop",
        200,
        &json!({}),
    );
    let o = fake.berth(&["job", "kill", "backup", "r1"]);
    exits(&o, 0);
    assert_eq!(stdout(&o), "run r1 of job backup is being stopped\n");
    fake.reply(
        "DELETE",
        "/v1/jobs/backup?stopCurrentJobRuns=false",
        200,
        &json!({}),
    );
    fake.reply(
        "DELETE",
        "/v1/jobs/backup?stopCurrentJobRuns=true",
        200,
        &json!({}),
    );
    assert_eq!(code(&fake.berth(&["job", "remove", "backup"])), 0);
    let o = fake.berth(&["job", "remove", "backup", "--stop-runs"]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "job backup removed\n"));

    let schedule = json!({"id": "hourly", "cron": "0 * * * *", "timezone": "Europe/Paris",
                          "nextRunAt": "2026-12-07T11:00:00.000Z", "enabled": true,
                          "concurrencyPolicy": "FORBID"});
    fake.reply("GET", "/v1/jobs/backup/schedules", 200, &json!([schedule]));
    fake.reply("POST", "/v1/jobs/backup/schedules", 201, &schedule);
    fake.reply("PUT", "/v1/jobs/backup/schedules/hourly", 200, &schedule);
    fake.reply(
        "DELETE",
        "/v1/jobs/backup/schedules/hourly",
        200,
        &json!({}),
    );
    let o = fake.berth(&["job", "schedule", "list", "backup"]);
    assert_eq!(
        stdout(&o),
        "SCHEDULE  CRON       TIMEZONE      NEXT                  ENABLED  CONCURRENCY\n\
         hourly    0 * * * *  Europe/Paris  2026-12-07 11:00:00Z  true     FORBID\n"
    );
    let sfile = file(
        &dir,
        "s.yaml",
        "id: hourly\ncron: '0 * * * *'\ntimezone: Europe/Paris\n",
    );
    let o = fake.berth(&["job", "schedule", "add", "backup", &sfile]);
    assert_eq!(
        stdout(&o),
        "schedule added: hourly: 0 * * * * (Europe/Paris), next 2026-12-07 11:00:00Z\n"
    );
    let o = fake.berth(&["job", "schedule", "replace", "backup", &sfile]);
    exits(&o, 0);
    let o = fake.berth(&["job", "schedule", "remove", "backup", "hourly"]);
    assert_eq!(stdout(&o), "schedule hourly of job backup removed\n");
    assert_eq!(
        fake.asked(),
        [
            "POST /v1/jobs/backup/runs",
            "POST /v1/jobs/backup/runs/r1/actions/stop",
            "DELETE /v1/jobs/backup?stopCurrentJobRuns=false",
            "DELETE /v1/jobs/backup?stopCurrentJobRuns=true",
            "GET /v1/jobs/backup/schedules",
            "POST /v1/jobs/backup/schedules",
            "PUT /v1/jobs/backup/schedules/hourly",
            "DELETE /v1/jobs/backup/schedules/hourly",
        ]
    );
    let sent = fake.requests();
    assert_eq!(sent[5].content_type, "application/yaml");
    assert!(sent[5].body.contains("cron: '0 * * * *'"));
    // Refused: exit 1.
    let o = fake.berth(&["job", "kill", "backup", "r9"]);
    exits(&o, 1);
}

/// A fake whose job `backup` starts run `r1`.
fn started() -> Fake {
    let fake = Fake::start();
    fake.reply(
        "POST",
        "/v1/jobs/backup/runs",
        201,
        &run_json("INITIAL", None),
    );
    fake
}

#[test]
fn run_wait_exits_with_the_runs_result() {
    let get = "/v1/jobs/backup/runs/r1";
    let fake = started();
    fake.reply("GET", get, 200, &run_json("STARTING", None));
    fake.reply("GET", get, 200, &run_json("ACTIVE", None));
    fake.reply("GET", get, 200, &run_json("ACTIVE", None));
    fake.reply("GET", get, 200, &run_json("FAILED", Some(3)));
    let o = fake.berth(&["job", "run", "backup", "--wait", "--no-logs"]);
    exits(&o, 3);
    let err = stderr(&o);
    for want in [
        "berth: run r1 of job backup started\n",
        "berth: run r1 is STARTING\n",
        "berth: run r1 is ACTIVE\n",
        "berth: run r1 FAILED: task failed (exit code 3)\n",
    ] {
        assert!(err.contains(want), "{want:?} in:\n{err}");
    }
    assert_eq!(err.matches("is ACTIVE").count(), 1, "said once: {err}");
    let gets = fake
        .asked()
        .iter()
        .filter(|r| *r == &format!("GET {get}"))
        .count();
    assert_eq!(gets, 4, "polled until FAILED");
    assert_eq!(fake.requests()[0].body, "{}");

    // A FAILED run without a code exits 1; SUCCESS 0; MISSED 1. Masters
    // that cannot be reached (for the output) change nothing.
    let master = format!("127.0.0.1:{}", berth_tests::free_port());
    for (status, exit, want) in [
        ("FAILED", None, 1),
        ("SUCCESS", Some(0), 0),
        ("MISSED", None, 1),
    ] {
        let fake = started();
        fake.reply("GET", get, 200, &run_json(status, exit));
        let o = fake.berth(&["job", "run", "backup", "--wait", "--master", &master]);
        assert_eq!(code(&o), want, "{status}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("following the run without its output"),
            "{}",
            stderr(&o)
        );
    }

    // The run gone, or the run refused: berth's own error, 2.
    let fake = started();
    fake.reply(
        "GET",
        get,
        404,
        &json!({"message": "Job run 'r1' does not exist"}),
    );
    let o = fake.berth(&["job", "run", "backup", "--wait", "--no-logs"]);
    exits(&o, 2);
    assert!(
        stderr(&o).ends_with("berth: Job run 'r1' does not exist\n"),
        "{}",
        stderr(&o)
    );
    let o = fake.berth(&["job", "run", "other", "--wait"]);
    exits(&o, 2);
    let o = fake.berth(&["job", "run", "other"]);
    assert_eq!(code(&o), 1, "without --wait a refusal is 1: {}", stderr(&o));

    // --timeout: exit 2, the run goes on.
    let fake = started();
    fake.reply("GET", get, 200, &run_json("ACTIVE", None));
    let o = fake.berth(&[
        "job",
        "run",
        "backup",
        "--wait",
        "--no-logs",
        "--timeout",
        "1",
    ]);
    exits(&o, 2);
    assert!(
        stderr(&o).contains(
            "run r1 is still ACTIVE after 1 s; it goes on (`berth job kill backup r1` stops it)"
        ),
        "{}",
        stderr(&o)
    );
    assert!(!fake.asked().iter().any(|r| r.contains("actions/stop")));
}

#[test]
fn logs_name_the_task_to_read() {
    let fake = Fake::start();
    fake.reply(
        "GET",
        "/v1/jobs/backup/runs/r1",
        200,
        &run_json("ACTIVE", None),
    );
    let o = fake.berth(&["job", "logs", "backup", "r1", "--task", "2"]);
    assert_eq!(code(&o), 2);
    assert_eq!(
        stderr(&o),
        "berth: run r1 has no task with index 2 (its indexes: 0)\n"
    );
    let o = fake.berth(&["job", "logs", "backup", "r1", "--json"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--json does not apply"),
        "{}",
        stderr(&o)
    );
    fake.reply(
        "GET",
        "/v1/jobs/backup/runs/r2",
        200,
        &json!({"id": "r2", "status": "INITIAL", "tasks": []}),
    );
    let o = fake.berth(&["job", "logs", "backup", "r2"]);
    assert!(
        stderr(&o).contains("run r2 has no tasks yet"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn run_wait_rides_out_a_framework_restart() {
    let address = format!("127.0.0.1:{}", berth_tests::free_port());
    let get = "/v1/jobs/backup/runs/r1";
    let before = Fake::start_on(&address);
    before.reply(
        "POST",
        "/v1/jobs/backup/runs",
        201,
        &run_json("INITIAL", None),
    );
    before.reply("GET", get, 200, &run_json("ACTIVE", None));
    let child = Command::new(BERTH)
        .args(["job", "run", "backup", "--wait", "--no-logs"])
        .env("BERTH_JOBS", &before.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while before.asked().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run was not polled"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The framework goes away, then comes back with the run failed.
    drop(before);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = Fake::start_on(&address);
    after.reply("GET", get, 200, &run_json("FAILED", Some(3)));
    let o = child.wait_with_output().unwrap();
    exits(&o, 3);
    assert!(
        stderr(&o).contains("cannot reach the job framework")
            && stderr(&o).contains("trying again for 60 s"),
        "{}",
        stderr(&o)
    );
    assert_eq!(after.asked(), [format!("GET {get}")]);
}
