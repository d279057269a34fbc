//! A definition back to Metronome's JSON: every default filled in, berth's
//! fields beside Metronome's, so that what a GET answers can be PUT again
//! and reads back to the same [`JobDef`]. A job's JSON leaves its
//! `schedules` out (Metronome shows them only when embedded; the API adds
//! them with [`ScheduleDef::to_json`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    Command, ConcurrencyPolicy, ConstraintOp, EnvValue, JobDef, MissedPolicy, Restart,
    RestartPolicy, RunSpec, ScheduleDef,
};

/// Thousandths as a JSON number: whole when they are.
fn thousandths(m: u64) -> Value {
    if m.is_multiple_of(1000) {
        json!(m / 1000)
    } else {
        json!(m as f64 / 1000.0)
    }
}

fn seconds(d: Duration) -> Value {
    json!(d.as_secs())
}

pub(super) fn job(def: &JobDef) -> Value {
    let dependencies: Vec<Value> = def
        .dependencies
        .iter()
        .map(|id| json!({ "id": id }))
        .collect();
    json!({
        "id": def.id,
        "description": def.description,
        "labels": def.labels,
        "run": run(&def.run),
        "dependencies": dependencies,
        "successfulRunsHistoryLimit": def.history.successful,
        "failedRunsHistoryLimit": def.history.failed,
        "runsHistoryMaxAgeSeconds": seconds(def.history.max_age),
    })
}

fn run(spec: &RunSpec) -> Value {
    let mut m = Map::new();
    match &spec.command {
        Command::Shell(cmd) => {
            m.insert("cmd".into(), json!(cmd));
        }
        Command::Args(args) => {
            m.insert("args".into(), json!(args));
        }
        Command::Image => {}
    }
    m.insert("cpus".into(), thousandths(spec.cpus_milli));
    m.insert("mem".into(), json!(spec.mem_mib));
    m.insert("disk".into(), json!(spec.disk_mib));
    if let Some(d) = &spec.docker {
        m.insert(
            "docker".into(),
            json!({ "image": d.image, "forcePullImage": d.force_pull }),
        );
    }
    m.insert("env".into(), env(&spec.env));
    let secrets: BTreeMap<&str, Value> = spec
        .secrets
        .iter()
        .map(|(name, s)| (name.as_str(), json!({ "source": s.source })))
        .collect();
    m.insert("secrets".into(), json!(secrets));
    let artifacts: Vec<Value> = spec
        .artifacts
        .iter()
        .map(|a| {
            json!({
                "uri": a.uri,
                "extract": a.extract,
                "executable": a.executable,
                "cache": false,
            })
        })
        .collect();
    m.insert("artifacts".into(), Value::Array(artifacts));
    let constraints: Vec<Value> = spec
        .constraints
        .iter()
        .map(|c| {
            let op = match c.operator {
                ConstraintOp::Eq => "EQ",
                ConstraintOp::Like => "LIKE",
                ConstraintOp::Unlike => "UNLIKE",
            };
            json!({ "attribute": c.attribute, "operator": op, "value": c.value })
        })
        .collect();
    m.insert("placement".into(), json!({ "constraints": constraints }));
    m.insert("maxLaunchDelay".into(), seconds(spec.max_launch_delay));
    if let Some(grace) = spec.kill_grace {
        m.insert("taskKillGracePeriodSeconds".into(), seconds(grace));
    }
    m.insert("restart".into(), restart(&spec.restart));
    if let Some(user) = &spec.user {
        m.insert("user".into(), json!(user));
    }
    m.insert("parallelism".into(), json!(spec.parallelism));
    m.insert("completions".into(), json!(spec.completions));
    Value::Object(m)
}

fn env(env: &BTreeMap<String, EnvValue>) -> Value {
    let entries: Map<String, Value> = env
        .iter()
        .map(|(k, v)| {
            let v = match v {
                EnvValue::Value(s) => json!(s),
                EnvValue::Secret(name) => json!({ "secret": name }),
            };
            (k.clone(), v)
        })
        .collect();
    Value::Object(entries)
}

/// `NEVER` shows the policy and the deadline only (the backoff does not
/// apply, and reading it back refuses it); `ON_FAILURE` shows the backoff.
fn restart(rs: &Restart) -> Value {
    let mut m = Map::new();
    let policy = match rs.policy {
        RestartPolicy::Never => "NEVER",
        RestartPolicy::OnFailure => "ON_FAILURE",
    };
    m.insert("policy".into(), json!(policy));
    if let Some(d) = rs.active_deadline {
        m.insert("activeDeadlineSeconds".into(), seconds(d));
    }
    if rs.policy == RestartPolicy::OnFailure {
        m.insert("backoffLimit".into(), json!(rs.backoff_limit));
        m.insert("backoffSeconds".into(), seconds(rs.backoff));
        m.insert(
            "backoffFactor".into(),
            thousandths(u64::from(rs.backoff_factor_milli)),
        );
        m.insert("maxBackoffSeconds".into(), seconds(rs.max_backoff));
    }
    Value::Object(m)
}

pub(super) fn schedule(s: &ScheduleDef) -> Value {
    let concurrency = match s.concurrency {
        ConcurrencyPolicy::Allow => "ALLOW",
        ConcurrencyPolicy::Forbid => "FORBID",
        ConcurrencyPolicy::Replace => "REPLACE",
    };
    let mut m = Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("cron".into(), json!(s.cron));
    m.insert("timezone".into(), json!(s.timezone));
    m.insert(
        "startingDeadlineSeconds".into(),
        seconds(s.starting_deadline),
    );
    m.insert("concurrencyPolicy".into(), json!(concurrency));
    m.insert("enabled".into(), json!(s.enabled));
    let missed = match s.missed {
        MissedPolicy::Skip => "SKIP",
        MissedPolicy::RunOnce => "RUN_ONCE",
        MissedPolicy::RunAll { max } => {
            m.insert("maxMissedRuns".into(), json!(max));
            "RUN_ALL"
        }
    };
    m.insert("missedRunPolicy".into(), json!(missed));
    Value::Object(m)
}
