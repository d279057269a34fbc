//! Each bad input gives one error, at the right path, saying why; nothing
//! else about the definition is refused alongside.

use serde_json::{Value, json};

use super::{minimal, problems};
use crate::job::{JobDef, ScheduleDef};

/// `base` with `value` at the JSON pointer `at` (objects created on the
/// way; a pointer through an array index replaces that item).
fn with(mut base: Value, at: &str, value: Value) -> Value {
    let mut here = &mut base;
    for key in at.trim_start_matches('/').split('/') {
        here = match here {
            Value::Array(items) => &mut items[key.parse::<usize>().expect("an index")],
            other => {
                if !other.is_object() {
                    *other = json!({});
                }
                other
                    .as_object_mut()
                    .expect("an object")
                    .entry(key)
                    .or_insert(Value::Null)
            }
        };
    }
    *here = value;
    base
}

/// A job with one valid schedule.
fn scheduled() -> Value {
    with(
        minimal(),
        "/schedules",
        json!([{"id": "s", "cron": "0 * * * *"}]),
    )
}

/// Asserts that `v` is refused with exactly one error, at `path`, whose
/// message contains `says`.
#[track_caller]
fn refused(v: &Value, path: &str, says: &str) {
    let got = problems(v);
    assert_eq!(got.len(), 1, "expected one error at {path}, got {got:#?}");
    let (p, message) = got[0].split_once(": ").expect("path: message");
    assert_eq!(p, path, "{got:?}");
    assert!(message.contains(says), "{path}: {message:?} lacks {says:?}");
}

/// Asserts that `base` with `value` at `at` is refused at `at` alone.
#[track_caller]
fn bad(base: Value, at: &str, value: Value, says: &str) {
    refused(&with(base, at, value), at, says);
}

#[test]
fn unknown_fields_at_every_level() {
    bad(minimal(), "/ownr", json!("x"), "unknown field \"ownr\"");
    bad(
        minimal(),
        "/run/comand",
        json!("x"),
        "unknown field \"comand\"",
    );
    bad(
        minimal(),
        "/run/maxLaunchDelaySeconds",
        json!(5),
        "did you mean \"maxLaunchDelay\"?",
    );
    refused(
        &with(
            minimal(),
            "/run/docker",
            json!({"image": "a", "forcePull": false}),
        ),
        "/run/docker/forcePull",
        "did you mean \"forcePullImage\"?",
    );
    refused(
        &with(
            minimal(),
            "/run/restart",
            json!({"policy": "NEVER", "retries": 3}),
        ),
        "/run/restart/retries",
        "unknown field",
    );
    refused(
        &with(
            minimal(),
            "/run/artifacts",
            json!([{"uri": "http://x/y", "mode": "0755"}]),
        ),
        "/run/artifacts/0/mode",
        "unknown field",
    );
    refused(
        &with(
            minimal(),
            "/run/placement",
            json!({"constraints": [{"attribute": "a", "operator": "EQ", "value": "b", "x": 1}]}),
        ),
        "/run/placement/constraints/0/x",
        "unknown field",
    );
    bad(
        scheduled(),
        "/schedules/0/timeZone",
        json!("UTC"),
        "did you mean \"timezone\"?",
    );
    refused(
        &with(
            minimal(),
            "/dependencies",
            json!([{"id": "b", "after": "success"}]),
        ),
        "/dependencies/0/after",
        "unknown field",
    );
}

#[test]
fn type_errors_name_the_type_expected() {
    bad(
        minimal(),
        "/description",
        json!(5),
        "expected a string, got a number",
    );
    bad(
        minimal(),
        "/labels/a",
        json!(true),
        "expected a string, got a boolean",
    );
    bad(
        minimal(),
        "/run",
        json!("true"),
        "expected an object, got a string",
    );
    bad(
        minimal(),
        "/run/mem",
        json!("1G"),
        "expected a whole number, got a string",
    );
    bad(
        minimal(),
        "/run/mem",
        json!(12.5),
        "12.5 is not a whole number",
    );
    bad(
        minimal(),
        "/run/env/A",
        json!(1),
        "expected a string or {\"secret\": name}",
    );
    bad(minimal(), "/run/args", json!("a b"), "expected an array");
    bad(minimal(), "/run/cmd", json!(""), "must not be empty");
    bad(
        scheduled(),
        "/schedules/0/enabled",
        json!("yes"),
        "expected a boolean",
    );
}

#[test]
fn required_fields() {
    refused(&json!({"run": {"cmd": "x"}}), "/id", "is required");
    refused(&json!({"id": "a"}), "/run", "is required");
    refused(
        &json!({"id": "a", "run": {}}),
        "/run",
        "a run needs cmd or args",
    );
    refused(
        &with(minimal(), "/run/docker", json!({})),
        "/run/docker/image",
        "is required",
    );
    bad(
        minimal(),
        "/run/docker/image",
        json!(""),
        "must not be empty",
    );
    bad(scheduled(), "/schedules/0/cron", Value::Null, "is required");
    bad(scheduled(), "/schedules/0/id", Value::Null, "is required");
    refused(
        &with(
            minimal(),
            "/run/placement/constraints",
            json!([{"attribute": "a", "operator": "EQ"}]),
        ),
        "/run/placement/constraints/0/value",
        "is required",
    );
    refused(
        &with(minimal(), "/run/artifacts", json!([{}])),
        "/run/artifacts/0/uri",
        "is required",
    );
    refused(
        &with(minimal(), "/run/secrets/s", json!({})),
        "/run/secrets/s/source",
        "is required",
    );
}

#[test]
fn ids() {
    bad(
        minimal(),
        "/id",
        json!("Nightly"),
        "\"Nightly\" must be lowercase",
    );
    bad(minimal(), "/id", json!("a..b"), "must be lowercase");
    bad(
        minimal(),
        "/id",
        json!("x".repeat(129)),
        "longer than 128 bytes",
    );
    bad(
        scheduled(),
        "/schedules/0/id",
        json!("every.hour"),
        "must not contain dots",
    );
    bad(
        scheduled(),
        "/schedules/0/id",
        json!("-s"),
        "\"-s\" does not follow the rule: a schedule id is lowercase letters",
    );
}

#[test]
fn command_and_resources() {
    bad(
        minimal(),
        "/run/args",
        json!(["echo"]),
        "give either cmd or args, not both",
    );
    bad(
        minimal(),
        "/run/cpus",
        json!(0),
        "0 is out of range: must be between 0.001 and",
    );
    bad(minimal(), "/run/cpus", json!(-1), "is negative");
    bad(minimal(), "/run/mem", json!(0), "out of range");
    bad(minimal(), "/run/disk", json!(-1), "is negative");
    bad(minimal(), "/run/gpus", json!(2), "not supported by berth");
    bad(
        minimal(),
        "/run/maxLaunchDelay",
        json!(0),
        "must be between 1 and",
    );
    bad(
        minimal(),
        "/run/taskKillGracePeriodSeconds",
        json!(-1),
        "is negative",
    );
    // gpus 0 is no GPU at all.
    assert!(JobDef::from_value(&with(minimal(), "/run/gpus", json!(0))).is_ok());
}

#[test]
fn docker_settings_berth_does_not_have() {
    let docker = |extra: Value| {
        let mut d = json!({"image": "alpine"});
        d.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        with(minimal(), "/run/docker", d)
    };
    refused(
        &docker(json!({"forcePullImage": true})),
        "/run/docker/forcePullImage",
        "no registry is assumed reachable",
    );
    refused(
        &docker(json!({"privileged": true})),
        "/run/docker/privileged",
        "not supported by berth",
    );
    refused(
        &docker(json!({"parameters": [{"key": "cap-add", "value": "ALL"}]})),
        "/run/docker/parameters",
        "not supported by berth",
    );
    // Their off values are fine.
    assert!(
        JobDef::from_value(&docker(
            json!({"forcePullImage": false, "privileged": false, "parameters": []})
        ))
        .is_ok()
    );
    bad(
        minimal(),
        "/run/user",
        json!("nobody"),
        "cannot switch users",
    );
    assert!(JobDef::from_value(&with(docker(json!({})), "/run/user", json!("nobody"))).is_ok());
    for key in ["volumes", "networks"] {
        refused(
            &with(minimal(), &format!("/run/{key}"), json!([{"mode": "host"}])),
            &format!("/run/{key}"),
            "not supported by berth",
        );
        assert!(JobDef::from_value(&with(minimal(), &format!("/run/{key}"), json!([]))).is_ok());
    }
    bad(
        minimal(),
        "/run/ucr",
        json!({"image": {"id": "alpine"}}),
        "not supported by berth",
    );
}

#[test]
fn env_and_secrets() {
    refused(
        &with(minimal(), "/run/env/PASS", json!({"secret": "pw"})),
        "/run/env/PASS/secret",
        "no secret \"pw\" is defined in run.secrets",
    );
    let unused = with(minimal(), "/run/secrets/pw", json!({"source": "/p"}));
    refused(
        &unused,
        "/run/secrets/pw",
        "is not referenced by any env variable",
    );
    assert!(JobDef::from_value(&with(unused, "/run/env/PASS", json!({"secret": "pw"}))).is_ok());
    bad(
        minimal(),
        "/run/env/A=B",
        json!("x"),
        "must not contain '='",
    );
    // A secret with a problem is refused once, not again where it is used.
    let broken = with(minimal(), "/run/secrets/pw", json!({"source": 5}));
    refused(
        &with(broken, "/run/env/PASS", json!({"secret": "pw"})),
        "/run/secrets/pw/source",
        "expected a string",
    );
}

#[test]
fn artifacts() {
    let uri = |u: &str| with(minimal(), "/run/artifacts", json!([{"uri": u}]));
    refused(
        &uri("https://x/y.tgz"),
        "/run/artifacts/0/uri",
        "http:// and file:/// URIs only",
    );
    refused(
        &uri("file://relative"),
        "/run/artifacts/0/uri",
        "http:// and file:/// URIs only",
    );
    refused(
        &uri("http://"),
        "/run/artifacts/0/uri",
        "http:// and file:/// URIs only",
    );
    refused(
        &with(
            minimal(),
            "/run/artifacts",
            json!([{"uri": "http://x/y", "cache": true}]),
        ),
        "/run/artifacts/0/cache",
        "does not cache",
    );
}

#[test]
fn constraints() {
    let c = |op: &str, value: &str| {
        with(
            minimal(),
            "/run/placement/constraints",
            json!([{"attribute": "rack", "operator": op, "value": value}]),
        )
    };
    refused(
        &c("UNIQUE", "x"),
        "/run/placement/constraints/0/operator",
        "\"UNIQUE\" is not one of EQ, IS, LIKE, UNLIKE",
    );
    refused(
        &c("LIKE", "rack-[0-9"),
        "/run/placement/constraints/0/value",
        "not a valid regular expression",
    );
    refused(
        &c("UNLIKE", "(a"),
        "/run/placement/constraints/0/value",
        "not a valid regular expression",
    );
    // EQ's value is a value, not a pattern.
    assert!(JobDef::from_value(&c("EQ", "rack-[0-9")).is_ok());
}

#[test]
fn restart_policies_and_negative_deadlines() {
    let restart = |r: Value| with(minimal(), "/run/restart", r);
    refused(
        &restart(json!({"policy": "NEVER", "activeDeadlineSeconds": -5})),
        "/run/restart/activeDeadlineSeconds",
        "-5 is negative",
    );
    refused(
        &restart(json!({"policy": "ALWAYS"})),
        "/run/restart/policy",
        "is not one of NEVER, ON_FAILURE",
    );
    refused(
        &restart(json!({"backoffLimit": 3})),
        "/run/restart/backoffLimit",
        "set policy to ON_FAILURE",
    );
    assert!(JobDef::from_value(&restart(json!({"policy": "NEVER", "backoffLimit": 0}))).is_ok());
    refused(
        &restart(json!({"policy": "NEVER", "backoffSeconds": 5})),
        "/run/restart/backoffSeconds",
        "ON_FAILURE only",
    );
    let on_failure = |extra: Value| {
        let mut r = json!({"policy": "ON_FAILURE"});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        restart(r)
    };
    refused(
        &on_failure(json!({"backoffSeconds": 0})),
        "/run/restart/backoffSeconds",
        "out of range",
    );
    refused(
        &on_failure(json!({"backoffFactor": 0.5})),
        "/run/restart/backoffFactor",
        "must be between 1 and",
    );
    refused(
        &on_failure(json!({"backoffSeconds": 400})),
        "/run/restart/maxBackoffSeconds",
        "360 is less than backoffSeconds (400)",
    );
    refused(
        &on_failure(json!({"maxBackoffSeconds": 5})),
        "/run/restart/maxBackoffSeconds",
        "5 is less than backoffSeconds (10)",
    );
    refused(
        &on_failure(json!({"backoffLimit": -1})),
        "/run/restart/backoffLimit",
        "is negative",
    );
}

#[test]
fn parallel_runs() {
    refused(
        &with(
            with(minimal(), "/run/parallelism", json!(3)),
            "/run/completions",
            json!(2),
        ),
        "/run/parallelism",
        "3 is more than completions (2)",
    );
    bad(
        minimal(),
        "/run/parallelism",
        json!(2),
        "more than completions (1)",
    );
    bad(minimal(), "/run/completions", json!(0), "out of range");
    // A bad completions is not compared with parallelism.
    bad(
        with(minimal(), "/run/parallelism", json!(3)),
        "/run/completions",
        json!(0),
        "out of range",
    );
    bad(minimal(), "/run/parallelism", json!(0), "out of range");
}

#[test]
fn schedules() {
    bad(scheduled(), "/schedules/0/cron", json!("61 * * * *"), "61");
    bad(
        scheduled(),
        "/schedules/0/timezone",
        json!("Mars/Olympus_Mons"),
        "Mars/Olympus_Mons",
    );
    bad(
        scheduled(),
        "/schedules/0/startingDeadlineSeconds",
        json!(-1),
        "-1 is negative",
    );
    bad(
        scheduled(),
        "/schedules/0/startingDeadlineSeconds",
        json!(0),
        "must be between 1 and",
    );
    bad(
        scheduled(),
        "/schedules/0/concurrencyPolicy",
        json!("QUEUE"),
        "is not one of ALLOW, FORBID, REPLACE",
    );
    bad(
        scheduled(),
        "/schedules/0/maxMissedRuns",
        json!(3),
        "RUN_ALL only",
    );
    let run_all = with(
        scheduled(),
        "/schedules/0/missedRunPolicy",
        json!("RUN_ALL"),
    );
    bad(
        run_all.clone(),
        "/schedules/0/maxMissedRuns",
        json!(101),
        "must be between 1 and 100",
    );
    bad(
        scheduled(),
        "/schedules/0/missedRunPolicy",
        json!("RUN_SOME"),
        "is not one of SKIP, RUN_ONCE, RUN_ALL",
    );
    let two = with(
        minimal(),
        "/schedules",
        json!([{"id": "s", "cron": "0 * * * *"}, {"id": "s", "cron": "5 * * * *"}]),
    );
    refused(
        &two,
        "/schedules/1/id",
        "\"s\" is also the id of schedule 0",
    );
    let many: Vec<Value> = (0..=JobDef::MAX_SCHEDULES)
        .map(|i| json!({"id": format!("s{i}"), "cron": "0 * * * *"}))
        .collect();
    bad(
        minimal(),
        "/schedules",
        json!(many),
        "at most 16 are accepted",
    );

    // A schedule posted alone: paths from its root.
    let alone = ScheduleDef::from_value(&json!({"id": "s", "cron": "bad"}), "");
    assert_eq!(alone.unwrap_err().errors[0].path, "/cron");
    let alone = ScheduleDef::from_value(&json!({"id": "s"}), "");
    assert_eq!(alone.unwrap_err().errors[0].path, "/cron");
}

#[test]
fn dependencies_and_history() {
    refused(
        &with(minimal(), "/dependencies", json!([{"id": "a"}])),
        "/dependencies/0/id",
        "a job cannot depend on itself",
    );
    refused(
        &with(
            minimal(),
            "/dependencies",
            json!([{"id": "b"}, {"id": "b"}]),
        ),
        "/dependencies/1/id",
        "\"b\" is given twice",
    );
    refused(
        &with(minimal(), "/dependencies", json!([{}])),
        "/dependencies/0/id",
        "is required",
    );
    refused(
        &with(minimal(), "/dependencies", json!(["b"])),
        "/dependencies/0",
        "expected an object",
    );
    bad(
        minimal(),
        "/successfulRunsHistoryLimit",
        json!(1001),
        "must be between 0 and 1000",
    );
    bad(
        minimal(),
        "/failedRunsHistoryLimit",
        json!(-1),
        "is negative",
    );
    bad(
        minimal(),
        "/runsHistoryMaxAgeSeconds",
        json!(59),
        "must be between 60 and",
    );
}
