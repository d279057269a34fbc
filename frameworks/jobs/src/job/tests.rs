//! Tests of job definitions: a full Metronome job and its YAML twin, the
//! defaults, rendering and reading back, syntax errors. The refusals are in
//! `tests/refusals.rs`, the round-trip property in `tests/roundtrip.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

mod refusals;
mod roundtrip;

/// A typical job as Metronome's docs show one, with berth's schedule
/// inline.
fn full_json() -> Value {
    json!({
        "id": "prod.nightly-backup",
        "description": "Backs the database up every night",
        "labels": {"owner": "ops", "tier": "db"},
        "run": {
            "cmd": "backup.sh --full",
            "cpus": 1.5,
            "mem": 512,
            "disk": 1024,
            "docker": {"image": "registry.local/backup:2.1"},
            "env": {
                "TARGET": "s3://bucket/db",
                "DB_PASSWORD": {"secret": "dbpass"}
            },
            "secrets": {"dbpass": {"source": "/db/password"}},
            "artifacts": [
                {"uri": "http://files.local/tools.tgz"},
                {"uri": "file:///opt/backup/extra.sh", "extract": false, "executable": true, "cache": false}
            ],
            "placement": {"constraints": [
                {"attribute": "rack", "operator": "EQ", "value": "rack-2"},
                {"attribute": "hostname", "operator": "LIKE", "value": "db-[0-9]+"},
                {"attribute": "zone", "operator": "IS", "value": "west"}
            ]},
            "maxLaunchDelay": 600,
            "taskKillGracePeriodSeconds": 30,
            "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 7200},
            "user": "backup"
        },
        "schedules": [{
            "id": "nightly",
            "cron": "0 2 * * *",
            "timezone": "Europe/Berlin",
            "startingDeadlineSeconds": 600,
            "concurrencyPolicy": "FORBID",
            "enabled": true
        }]
    })
}

const FULL_YAML: &str = r#"
id: prod.nightly-backup
description: Backs the database up every night
labels:
  owner: ops
  tier: db
run:
  cmd: backup.sh --full
  cpus: 1.5
  mem: 512
  disk: 1024
  docker:
    image: registry.local/backup:2.1
  env:
    TARGET: s3://bucket/db
    DB_PASSWORD:
      secret: dbpass
  secrets:
    dbpass:
      source: /db/password
  artifacts:
    - uri: http://files.local/tools.tgz
    - uri: file:///opt/backup/extra.sh
      extract: false
      executable: true
      cache: false
  placement:
    constraints:
      - {attribute: rack, operator: EQ, value: rack-2}
      - {attribute: hostname, operator: LIKE, value: "db-[0-9]+"}
      - {attribute: zone, operator: IS, value: west}
  maxLaunchDelay: 600
  taskKillGracePeriodSeconds: 30
  restart:
    policy: ON_FAILURE
    activeDeadlineSeconds: 7200
  user: backup
schedules:
  - id: nightly
    cron: "0 2 * * *"
    timezone: Europe/Berlin
    startingDeadlineSeconds: 600
    concurrencyPolicy: FORBID
    enabled: true
"#;

fn full_def() -> JobDef {
    let s = |v: &str| v.to_owned();
    JobDef {
        id: JobId::new("prod.nightly-backup").unwrap(),
        description: s("Backs the database up every night"),
        labels: BTreeMap::from([(s("owner"), s("ops")), (s("tier"), s("db"))]),
        run: RunSpec {
            command: Command::Shell(s("backup.sh --full")),
            cpus_milli: 1500,
            mem_mib: 512,
            disk_mib: 1024,
            docker: Some(Docker {
                image: s("registry.local/backup:2.1"),
                force_pull: false,
            }),
            env: BTreeMap::from([
                (s("TARGET"), EnvValue::Value(s("s3://bucket/db"))),
                (s("DB_PASSWORD"), EnvValue::Secret(s("dbpass"))),
            ]),
            secrets: BTreeMap::from([(
                s("dbpass"),
                Secret {
                    source: s("/db/password"),
                },
            )]),
            artifacts: vec![
                Artifact {
                    uri: s("http://files.local/tools.tgz"),
                    extract: true,
                    executable: false,
                },
                Artifact {
                    uri: s("file:///opt/backup/extra.sh"),
                    extract: false,
                    executable: true,
                },
            ],
            constraints: vec![
                PlacementConstraint {
                    attribute: s("rack"),
                    operator: ConstraintOp::Eq,
                    value: s("rack-2"),
                },
                PlacementConstraint {
                    attribute: s("hostname"),
                    operator: ConstraintOp::Like,
                    value: s("db-[0-9]+"),
                },
                PlacementConstraint {
                    attribute: s("zone"),
                    operator: ConstraintOp::Eq,
                    value: s("west"),
                },
            ],
            max_launch_delay: Duration::from_secs(600),
            kill_grace: Some(Duration::from_secs(30)),
            restart: Restart {
                policy: RestartPolicy::OnFailure,
                active_deadline: Some(Duration::from_secs(7200)),
                backoff_limit: 6,
                backoff: Duration::from_secs(10),
                backoff_factor_milli: 2000,
                max_backoff: Duration::from_secs(360),
            },
            user: Some(s("backup")),
            parallelism: 1,
            completions: 1,
        },
        schedules: vec![ScheduleDef {
            id: s("nightly"),
            cron: s("0 2 * * *"),
            timezone: s("Europe/Berlin"),
            starting_deadline: Duration::from_secs(600),
            concurrency: ConcurrencyPolicy::Forbid,
            enabled: true,
            missed: MissedPolicy::RunOnce,
        }],
        dependencies: vec![],
        history: HistoryLimits::default(),
    }
}

/// The smallest valid job.
fn minimal() -> Value {
    json!({"id": "a", "run": {"cmd": "true"}})
}

/// The problems of `v` as `path: message` lines.
fn problems(v: &Value) -> Vec<String> {
    match JobDef::from_value(v) {
        Ok(def) => panic!("accepted: {def:?}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_full_metronome_job_parses() {
    let def = JobDef::from_value(&full_json()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(def, full_def());
    let text = serde_json::to_string_pretty(&full_json()).unwrap();
    assert_eq!(JobDef::from_json(&text), Ok(full_def()));
}

#[test]
fn the_yaml_form_parses_the_same() {
    assert_eq!(JobDef::from_yaml(FULL_YAML), Ok(full_def()));
}

#[test]
fn absent_fields_take_metronomes_and_berths_defaults() {
    let def = JobDef::from_value(&minimal()).unwrap();
    assert_eq!(def.description, "");
    assert!(def.labels.is_empty() && def.schedules.is_empty() && def.dependencies.is_empty());
    assert_eq!(def.history, HistoryLimits::default());
    let run = def.run;
    assert_eq!(run.command, Command::Shell("true".into()));
    assert_eq!((run.cpus_milli, run.mem_mib, run.disk_mib), (1000, 128, 0));
    assert_eq!(run.max_launch_delay, Duration::from_secs(3600));
    assert_eq!(run.kill_grace, None);
    assert_eq!(run.restart.policy, RestartPolicy::Never);
    assert_eq!(run.restart.backoff_limit, 0);
    assert_eq!(run.restart.active_deadline, None);
    assert_eq!((run.parallelism, run.completions), (1, 1));
    assert_eq!(run.docker, None);
    assert_eq!(run.user, None);

    let on_failure = JobDef::from_value(&json!({
        "id": "a", "run": {"cmd": "true", "restart": {"policy": "ON_FAILURE"}}
    }))
    .unwrap();
    let rs = on_failure.run.restart;
    assert_eq!(rs.backoff_limit, 6);
    assert_eq!(rs.backoff, Duration::from_secs(10));
    assert_eq!(rs.backoff_factor_milli, 2000);
    assert_eq!(rs.max_backoff, Duration::from_secs(360));
}

#[test]
fn schedule_defaults_and_berths_missed_policy() {
    let s = ScheduleDef::from_value(&json!({"id": "s", "cron": "*/5 * * * *"}), "")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.timezone, "UTC");
    assert_eq!(s.starting_deadline, Duration::from_secs(900));
    assert_eq!(s.concurrency, ConcurrencyPolicy::Allow);
    assert!(s.enabled);
    assert_eq!(s.missed, MissedPolicy::RunOnce);
    let all = ScheduleDef::from_value(
        &json!({"id": "s", "cron": "* * * * *", "missedRunPolicy": "RUN_ALL"}),
        "",
    )
    .unwrap();
    assert_eq!(all.missed, MissedPolicy::RunAll { max: 10 });
    let skip = ScheduleDef::from_value(
        &json!({"id": "s", "cron": "* * * * *", "missedRunPolicy": "SKIP", "enabled": false,
                "concurrencyPolicy": "REPLACE"}),
        "",
    )
    .unwrap();
    assert_eq!(skip.missed, MissedPolicy::Skip);
    assert!(!skip.enabled);
    assert_eq!(skip.concurrency, ConcurrencyPolicy::Replace);
}

#[test]
fn commands_args_and_the_images_own() {
    let def =
        |run: Value| JobDef::from_value(&json!({"id": "a", "run": run})).map(|d| d.run.command);
    assert_eq!(
        def(json!({"args": ["echo", "hi"]})),
        Ok(Command::Args(vec!["echo".into(), "hi".into()]))
    );
    assert_eq!(
        def(json!({"docker": {"image": "alpine"}})),
        Ok(Command::Image)
    );
    // An empty `args` is none (Metronome's answers may carry one).
    assert_eq!(
        def(json!({"cmd": "true", "args": []})),
        Ok(Command::Shell("true".into()))
    );
}

#[test]
fn berths_fields_are_read() {
    let def = JobDef::from_value(&json!({
        "id": "child",
        "run": {"cmd": "true", "parallelism": 4, "completions": 10, "cpus": 0.25,
                "restart": {"policy": "ON_FAILURE", "backoffLimit": 2, "backoffSeconds": 5,
                            "backoffFactor": 1.5, "maxBackoffSeconds": 60}},
        "dependencies": [{"id": "parent-a"}, {"id": "parent.b"}],
        "successfulRunsHistoryLimit": 0,
        "failedRunsHistoryLimit": 1000,
        "runsHistoryMaxAgeSeconds": 60
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((def.run.parallelism, def.run.completions), (4, 10));
    assert_eq!(def.run.cpus_milli, 250);
    let rs = def.run.restart;
    assert_eq!(
        (
            rs.backoff_limit,
            rs.backoff,
            rs.backoff_factor_milli,
            rs.max_backoff
        ),
        (2, Duration::from_secs(5), 1500, Duration::from_secs(60))
    );
    let deps: Vec<&str> = def.dependencies.iter().map(JobId::as_str).collect();
    assert_eq!(deps, ["parent-a", "parent.b"]);
    assert_eq!(
        def.history,
        HistoryLimits {
            successful: 0,
            failed: 1000,
            max_age: Duration::from_secs(60)
        }
    );
}

#[test]
fn read_only_fields_of_metronomes_answers_are_accepted() {
    let mut v = minimal();
    v["activeRuns"] = json!([]);
    v["history"] = json!({"successCount": 1});
    v["historySummary"] = json!({"successCount": 1});
    assert!(JobDef::from_value(&v).is_ok());
    let s = json!({"id": "s", "cron": "* * * * *", "nextRunAt": "2026-12-08T02:00:00.000+0000"});
    assert!(ScheduleDef::from_value(&s, "").is_ok());
}

#[test]
fn renders_metronomes_jobspec_with_berths_fields_and_no_schedules() {
    let out = full_def().to_json();
    assert_eq!(out["id"], "prod.nightly-backup");
    assert_eq!(out.get("schedules"), None);
    let run = &out["run"];
    assert_eq!(run["cpus"], json!(1.5));
    assert_eq!(run["mem"], json!(512));
    assert_eq!(run["cmd"], "backup.sh --full");
    assert_eq!(run.get("args"), None);
    assert_eq!(
        run["docker"],
        json!({"image": "registry.local/backup:2.1", "forcePullImage": false})
    );
    assert_eq!(run["env"]["DB_PASSWORD"], json!({"secret": "dbpass"}));
    assert_eq!(run["placement"]["constraints"][2]["operator"], "EQ");
    assert_eq!(run["maxLaunchDelay"], json!(600));
    assert_eq!(
        run["restart"],
        json!({"policy": "ON_FAILURE", "activeDeadlineSeconds": 7200, "backoffLimit": 6,
               "backoffSeconds": 10, "backoffFactor": 2, "maxBackoffSeconds": 360})
    );
    assert_eq!(
        (run["parallelism"].clone(), run["completions"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(out["dependencies"], json!([]));
    assert_eq!(out["runsHistoryMaxAgeSeconds"], json!(604_800));

    assert_eq!(
        full_def().schedules[0].to_json(),
        json!({"id": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin",
               "startingDeadlineSeconds": 600, "concurrencyPolicy": "FORBID", "enabled": true,
               "missedRunPolicy": "RUN_ONCE"})
    );
    let mut all = full_def().schedules[0].clone();
    all.missed = MissedPolicy::RunAll { max: 3 };
    assert_eq!(all.to_json()["maxMissedRuns"], json!(3));
}

#[test]
fn what_is_rendered_reads_back_the_same() {
    let def = full_def();
    let mut out = def.to_json();
    out["schedules"] = def.schedules.iter().map(ScheduleDef::to_json).collect();
    assert_eq!(JobDef::from_value(&out), Ok(def.clone()));
    // Without the schedules, the same job but for them.
    let back = JobDef::from_value(&def.to_json()).unwrap();
    assert_eq!(
        back,
        JobDef {
            schedules: vec![],
            ..def
        }
    );
    let minimal = JobDef::from_value(&minimal()).unwrap();
    assert_eq!(JobDef::from_value(&minimal.to_json()), Ok(minimal));
}

#[test]
fn every_problem_is_reported_at_once() {
    let v = json!({
        "id": "Bad",
        "run": {"cmd": "true", "cpus": "one", "mem": 0, "gpus": 1},
        "extra": 1
    });
    assert_eq!(
        problems(&v),
        [
            "/id: \"Bad\" must be lowercase letters, digits and hyphens in dot-separated \
             segments, each starting and ending with a letter or digit (Metronome's rule)",
            "/run/cpus: expected a number, got a string",
            "/run/mem: 0 is out of range: must be between 1 and 1073741824",
            "/run/gpus: 1 GPUs: GPUs are not supported by berth",
            "/extra: unknown field \"extra\"",
        ]
    );
}

#[test]
fn syntax_errors_have_their_line_and_column() {
    let Err(ParseError::Syntax {
        format,
        line,
        column,
        message,
    }) = JobDef::from_json("{\n  \"id\": \"a\",\n  \"run\": {\"cmd\": }\n}")
    else {
        panic!("not a syntax error");
    };
    assert_eq!((format, line, column), ("JSON", 3, 18));
    assert!(message.contains("expected value"), "{message}");

    let dup = JobDef::from_json("{\"id\": \"a\", \"id\": \"b\", \"run\": {\"cmd\": \"x\"}}");
    assert!(
        matches!(&dup, Err(ParseError::Syntax { message, line: 1, .. }) if message.contains("the key \"id\" is given twice")),
        "{dup:?}"
    );

    let Err(ParseError::Syntax { format, line, .. }) =
        JobDef::from_yaml("id: a\nrun:\n  cmd: x\n   mem: 1\n")
    else {
        panic!("not a syntax error");
    };
    assert_eq!((format, line), ("YAML", 4));

    let dup = JobDef::from_yaml("id: a\nrun:\n  cmd: x\n  cmd: y\n");
    // yaml_serde places it at the mapping that holds the key twice.
    assert!(
        matches!(&dup, Err(ParseError::Syntax { message, line: 3, .. })
            if message.contains("the key \"cmd\" is given twice")),
        "{dup:?}"
    );
    let nan = JobDef::from_yaml("id: a\nrun:\n  cmd: x\n  cpus: .nan\n");
    assert!(
        matches!(&nan, Err(ParseError::Syntax { message, .. }) if message.contains("not a finite number")),
        "{nan:?}"
    );
    let tag = JobDef::from_yaml("id: a\nrun: !Run\n  cmd: x\n");
    assert!(
        matches!(&tag, Err(ParseError::Syntax { message, .. }) if message.contains("tags are not supported")),
        "{tag:?}"
    );
    // Valid syntax, invalid definition: the field errors.
    assert!(matches!(
        JobDef::from_yaml("id: a\n"),
        Err(ParseError::Invalid(e)) if e.errors[0].path == "/run"
    ));
}
