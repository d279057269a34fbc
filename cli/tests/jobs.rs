//! The job framework end to end in `berth dev`, through `berth job`: a
//! parallel job array followed to its end with its output, a failing job's
//! exit code and its log after it ended, a schedule that fires, a job run
//! after its parent, a secret masked in the output, a Docker job, and bad
//! definitions refused with their paths.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::BerthDev;
use serde_json::Value;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn dev() -> BerthDev {
    BerthDev::start(BERTH, "cpus:4;mem:4096;disk:1000", None)
}

/// `berth ARGS`: (exit code, stdout, stderr).
fn berth(dev: &BerthDev, args: &[&str]) -> (Option<i32>, String, String) {
    let out = dev.berth(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the definition");
    path.display().to_string()
}

/// `berth job show ID --json`, parsed.
fn show(dev: &BerthDev, id: &str) -> Value {
    let (code, out, err) = berth(dev, &["job", "show", id, "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Every finished run of a job as `show --json` lists them.
fn finished(job: &Value) -> Vec<Value> {
    let h = &job["history"];
    h["successfulFinishedRuns"]
        .as_array()
        .into_iter()
        .chain(h["failedFinishedRuns"].as_array())
        .flatten()
        .cloned()
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn jobs_run_by_hand_on_a_schedule_and_after_their_parents() {
    let dev = dev();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // A parallel job array, followed to its end with its tasks' output.
    let array = write(
        d,
        "array.yaml",
        "id: array\nrun:\n  cmd: echo \"index $BERTH_JOB_INDEX of $BERTH_JOB_COMPLETIONS\"\n  cpus: 0.1\n  mem: 32\n  completions: 3\n  parallelism: 2\n",
    );
    let (code, out, err) = berth(&dev, &["job", "add", &array]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = berth(&dev, &["job", "run", "array", "--wait", "--timeout", "60"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for i in 0..3 {
        assert!(
            out.contains(&format!("index {i} of 3")),
            "index {i}: {out}{err}"
        );
    }

    // A failing job: its exit code, its record, its log after it ended.
    let failing = write(
        d,
        "failing.json",
        r#"{"id": "failing", "run": {"cmd": "echo about to fail; exit 7", "cpus": 0.1, "mem": 32}}"#,
    );
    assert_eq!(berth(&dev, &["job", "add", &failing]).0, Some(0));
    let (code, out, err) = berth(
        &dev,
        &["job", "run", "failing", "--wait", "--timeout", "60"],
    );
    assert_eq!(code, Some(7), "{out}{err}");
    let job = show(&dev, "failing");
    let runs = finished(&job);
    assert_eq!(runs.len(), 1, "{job}");
    assert_eq!(runs[0]["status"], "FAILED");
    assert_eq!(runs[0]["exitCode"], 7);
    let run = runs[0]["id"].as_str().expect("a run id").to_owned();
    let (code, out, err) = berth(&dev, &["job", "runs", "failing"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&run) && out.contains("FAILED"), "{out}");
    let (code, out, err) = berth(&dev, &["job", "logs", "failing", &run]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("about to fail"),
        "the log after the run ended: {out}{err}"
    );

    // A schedule every 2 s fires, each tick one run, named after it.
    let ticking = write(
        d,
        "ticking.json",
        r#"{"id": "ticking", "run": {"cmd": "true", "cpus": 0.1, "mem": 32},
            "schedules": [{"id": "fast", "cron": "*/2 * * * * *", "timezone": "Europe/Berlin"}]}"#,
    );
    assert_eq!(berth(&dev, &["job", "add", &ticking]).0, Some(0));
    wait_until("two scheduled runs", Duration::from_secs(30), || {
        finished(&show(&dev, "ticking"))
            .iter()
            .filter(|r| r["status"] == "SUCCESS" && r["trigger"]["type"] == "schedule")
            .count()
            >= 2
    });
    let (code, out, err) = berth(&dev, &["job", "schedule", "remove", "ticking", "fast"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let runs = finished(&show(&dev, "ticking"));
    let ids: std::collections::BTreeSet<&str> =
        runs.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), runs.len(), "a run twice: {runs:?}");
    assert!(ids.iter().all(|id| id.ends_with("-fast")), "{ids:?}");

    // A job after its parent's success.
    let parent = write(
        d,
        "parent.json",
        r#"{"id": "parent", "run": {"cmd": "true", "cpus": 0.1, "mem": 32}}"#,
    );
    let child = write(
        d,
        "child.json",
        r#"{"id": "child", "run": {"cmd": "echo child ran", "cpus": 0.1, "mem": 32},
            "dependencies": [{"id": "parent"}]}"#,
    );
    assert_eq!(berth(&dev, &["job", "add", &parent]).0, Some(0));
    assert_eq!(berth(&dev, &["job", "add", &child]).0, Some(0));
    let (code, out, err) = berth(&dev, &["job", "run", "parent", "--wait", "--timeout", "60"]);
    assert_eq!(code, Some(0), "{out}{err}");
    wait_until("the child's run", Duration::from_secs(30), || {
        finished(&show(&dev, "child"))
            .iter()
            .any(|r| r["status"] == "SUCCESS" && r["trigger"]["type"] == "dependency")
    });
    // The parent cannot go while the child depends on it.
    let (code, out, err) = berth(&dev, &["job", "remove", "parent"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("child"), "{err}");

    // A secret reaches the task and is masked in its output.
    let value = write(d, "value", "hunter2-hunter2\n");
    let (code, out, err) = berth(
        &dev,
        &["job", "secret", "set", "db/password", "--from-file", &value],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, _) = berth(&dev, &["job", "secret", "list"]);
    assert_eq!((code, out.trim()), (Some(0), "db/password"));
    let secretive = write(
        d,
        "secretive.json",
        r#"{"id": "secretive", "run": {"cmd": "echo password=$DB_PASSWORD", "cpus": 0.1, "mem": 32,
            "env": {"DB_PASSWORD": {"secret": "db"}}, "secrets": {"db": {"source": "db/password"}}}}"#,
    );
    assert_eq!(berth(&dev, &["job", "add", &secretive]).0, Some(0));
    let (code, out, err) = berth(
        &dev,
        &["job", "run", "secretive", "--wait", "--timeout", "60"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("password=[MASKED]"), "{out}{err}");
    assert!(!out.contains("hunter2"), "{out}");
}

#[test]
fn bad_definitions_are_refused_with_their_paths_and_change_nothing() {
    let dev = dev();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for (name, text, path) in [
        (
            "cron.json",
            r#"{"id": "bad", "run": {"cmd": "true"}, "schedules": [{"id": "s", "cron": "61 * * * *"}]}"#,
            "/schedules/0/cron",
        ),
        (
            "zone.json",
            r#"{"id": "bad", "run": {"cmd": "true"}, "schedules": [{"id": "s", "cron": "* * * * *", "timezone": "Mars/Olympus"}]}"#,
            "/schedules/0/timezone",
        ),
        (
            "unknown.json",
            r#"{"id": "bad", "run": {"cmd": "true", "cpu": 1}}"#,
            "/run/cpu",
        ),
        (
            "array.json",
            r#"{"id": "bad", "run": {"cmd": "true", "parallelism": 3, "completions": 2}}"#,
            "/run/parallelism",
        ),
        (
            "deadline.json",
            r#"{"id": "bad", "run": {"cmd": "true"}, "schedules": [{"id": "s", "cron": "* * * * *", "startingDeadlineSeconds": -1}]}"#,
            "/schedules/0/startingDeadlineSeconds",
        ),
        (
            "parent.json",
            r#"{"id": "bad", "run": {"cmd": "true"}, "dependencies": [{"id": "nobody"}]}"#,
            "/dependencies/0/id",
        ),
    ] {
        let file = write(d, name, text);
        let (code, out, err) = berth(&dev, &["job", "add", &file]);
        assert_eq!(code, Some(1), "{name}: {out}{err}");
        assert!(err.contains(path), "{name}: no {path} in {err}");
    }
    // A cycle: a → b, then b → a is refused.
    let a = write(d, "a.json", r#"{"id": "a", "run": {"cmd": "true"}}"#);
    let b = write(
        d,
        "b.json",
        r#"{"id": "b", "run": {"cmd": "true"}, "dependencies": [{"id": "a"}]}"#,
    );
    let a2 = write(
        d,
        "a2.json",
        r#"{"id": "a", "run": {"cmd": "true"}, "dependencies": [{"id": "b"}]}"#,
    );
    assert_eq!(berth(&dev, &["job", "add", &a]).0, Some(0));
    assert_eq!(berth(&dev, &["job", "add", &b]).0, Some(0));
    let (code, out, err) = berth(&dev, &["job", "update", &a2]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("/dependencies"), "{err}");
    let (code, out, _) = berth(&dev, &["job", "list", "--json"]);
    assert_eq!(code, Some(0));
    let list: Value = serde_json::from_str(&out).expect("json");
    let ids: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, ["a", "b"], "nothing else was added");
    let a_now = show(&dev, "a");
    assert_eq!(a_now["dependencies"], serde_json::json!([]), "a unchanged");
}

#[test]
fn a_docker_job_runs_in_its_image() {
    if !berth_tests::docker_ready("a_docker_job_runs_in_its_image") {
        return;
    }
    let dev = dev();
    let dir = tempfile::tempdir().expect("tempdir");
    let job = write(
        dir.path(),
        "docker.json",
        &format!(
            r#"{{"id": "boxed", "run": {{"cmd": "echo from-the-image; cat /etc/hostname >/dev/null", "cpus": 0.1, "mem": 32,
                "docker": {{"image": "{}"}}}}}}"#,
            berth_tests::TEST_IMAGE
        ),
    );
    assert_eq!(berth(&dev, &["job", "add", &job]).0, Some(0));
    let (code, out, err) = berth(&dev, &["job", "run", "boxed", "--wait", "--timeout", "90"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("from-the-image"), "{out}{err}");
}
