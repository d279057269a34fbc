//! Property: any valid definition, rendered (with its schedules put back
//! inline) and read again, is the same definition; rendered as YAML too.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::string::string_regex;

use crate::job::{
    Artifact, Command, ConcurrencyPolicy, ConstraintOp, Docker, EnvValue, HistoryLimits, JobDef,
    JobId, MissedPolicy, PlacementConstraint, Restart, RestartPolicy, RunSpec, ScheduleDef, Secret,
};

fn name() -> impl Strategy<Value = String> {
    string_regex("[a-z][a-z0-9-]{0,6}[a-z0-9]").unwrap()
}

fn job_id() -> impl Strategy<Value = JobId> {
    prop::collection::vec(name(), 1..3).prop_map(|s| JobId::new(&s.join(".")).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    string_regex("[ -~]{0,12}").unwrap()
}

fn secs(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = Duration> {
    range.prop_map(Duration::from_secs)
}

fn restart() -> impl Strategy<Value = Restart> {
    (
        any::<bool>(),
        prop::option::of(secs(0..=86_400)),
        0u32..20,
        1u64..100,
        1000u32..5000,
        0u64..1000,
    )
        .prop_map(
            |(on_failure, active_deadline, limit, backoff, factor, extra)| {
                if on_failure {
                    Restart {
                        policy: RestartPolicy::OnFailure,
                        active_deadline,
                        backoff_limit: limit,
                        backoff: Duration::from_secs(backoff),
                        backoff_factor_milli: factor,
                        max_backoff: Duration::from_secs(backoff + extra),
                    }
                } else {
                    Restart {
                        policy: RestartPolicy::Never,
                        active_deadline,
                        backoff_limit: 0,
                        backoff: Duration::from_secs(10),
                        backoff_factor_milli: 2000,
                        max_backoff: Duration::from_secs(360),
                    }
                }
            },
        )
}

fn constraint() -> impl Strategy<Value = PlacementConstraint> {
    (
        name(),
        prop_oneof![
            Just(ConstraintOp::Eq),
            Just(ConstraintOp::Like),
            Just(ConstraintOp::Unlike)
        ],
        prop_oneof![name(), Just("rack-[0-9]+".to_owned()), Just(String::new())],
    )
        .prop_map(|(attribute, operator, value)| PlacementConstraint {
            attribute,
            operator,
            value,
        })
}

fn artifact() -> impl Strategy<Value = Artifact> {
    (
        prop_oneof![
            name().prop_map(|n| format!("http://files/{n}")),
            name().prop_map(|n| format!("file:///opt/{n}"))
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(uri, extract, executable)| Artifact {
            uri,
            extract,
            executable,
        })
}

fn run_spec() -> impl Strategy<Value = RunSpec> {
    let command = prop_oneof![
        text()
            .prop_filter("cmd is not empty", |t| !t.is_empty())
            .prop_map(Command::Shell),
        prop::collection::vec(text(), 1..4).prop_map(Command::Args),
        Just(Command::Image),
    ];
    let env = prop::collection::btree_map(string_regex("[A-Z_]{1,8}").unwrap(), text(), 0..4);
    let secrets = prop::collection::btree_map(name(), name(), 0..3);
    (
        (
            command,
            1u64..64_000,
            1u64..100_000,
            0u64..100_000,
            prop::option::of(name()),
        ),
        (env, secrets, prop::collection::vec(artifact(), 0..3)),
        (
            prop::collection::vec(constraint(), 0..3),
            secs(1..=86_400),
            prop::option::of(secs(0..=600)),
        ),
        (restart(), prop::option::of(name()), 1u32..50, 0u32..50),
    )
        .prop_map(
            |(
                (command, cpus_milli, mem_mib, disk_mib, image),
                (env, secret_names, artifacts),
                (constraints, max_launch_delay, kill_grace),
                (restart, user, completions, less),
            )| {
                // An image is needed for `Command::Image` and a user.
                let image = match (&command, &user) {
                    (Command::Image, _) | (_, Some(_)) => Some(image.unwrap_or("img".into())),
                    _ => image,
                };
                let mut env: BTreeMap<String, EnvValue> = env
                    .into_iter()
                    .map(|(k, v)| (k, EnvValue::Value(v)))
                    .collect();
                let mut secrets = BTreeMap::new();
                for (name, source) in secret_names {
                    env.insert(
                        format!("S_{}", name.to_uppercase()),
                        EnvValue::Secret(name.clone()),
                    );
                    secrets.insert(
                        name,
                        Secret {
                            source: format!("/{source}"),
                        },
                    );
                }
                RunSpec {
                    command,
                    cpus_milli,
                    mem_mib,
                    disk_mib,
                    docker: image.map(|image| Docker {
                        image,
                        force_pull: false,
                    }),
                    env,
                    secrets,
                    artifacts,
                    constraints,
                    max_launch_delay,
                    kill_grace,
                    restart,
                    user,
                    parallelism: completions.saturating_sub(less).max(1),
                    completions,
                }
            },
        )
}

fn schedule() -> impl Strategy<Value = ScheduleDef> {
    (
        name(),
        prop_oneof![
            Just("0 2 * * *"),
            Just("*/5 * * * *"),
            Just("30 0 9 * * 1-5")
        ],
        prop_oneof![Just("UTC"), Just("Europe/Berlin"), Just("America/New_York")],
        secs(1..=86_400),
        prop_oneof![
            Just(ConcurrencyPolicy::Allow),
            Just(ConcurrencyPolicy::Forbid),
            Just(ConcurrencyPolicy::Replace)
        ],
        any::<bool>(),
        prop_oneof![
            Just(MissedPolicy::Skip),
            Just(MissedPolicy::RunOnce),
            (1u32..=100).prop_map(|max| MissedPolicy::RunAll { max })
        ],
    )
        .prop_map(
            |(id, cron, timezone, starting_deadline, concurrency, enabled, missed)| ScheduleDef {
                id,
                cron: cron.into(),
                timezone: timezone.into(),
                starting_deadline,
                concurrency,
                enabled,
                missed,
            },
        )
}

fn job_def() -> impl Strategy<Value = JobDef> {
    (
        job_id(),
        text(),
        prop::collection::btree_map(name(), text(), 0..3),
        run_spec(),
        prop::collection::vec(schedule(), 0..3),
        prop::collection::btree_set(job_id(), 0..3),
        (0u32..=1000, 0u32..=1000, secs(60..=10_000_000)),
    )
        .prop_map(
            |(id, description, labels, run, schedules, deps, (successful, failed, max_age))| {
                let mut seen = std::collections::BTreeSet::new();
                let schedules = schedules
                    .into_iter()
                    .filter(|s| seen.insert(s.id.clone()))
                    .collect();
                JobDef {
                    dependencies: deps.into_iter().filter(|d| *d != id).collect(),
                    id,
                    description,
                    labels,
                    run,
                    schedules,
                    history: HistoryLimits {
                        successful,
                        failed,
                        max_age,
                    },
                }
            },
        )
}

/// The definition's full JSON: the job's with its schedules inline.
fn inline(def: &JobDef) -> serde_json::Value {
    let mut v = def.to_json();
    v["schedules"] = def.schedules.iter().map(ScheduleDef::to_json).collect();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rendered_definitions_read_back_the_same(def in job_def()) {
        let v = inline(&def);
        prop_assert_eq!(JobDef::from_value(&v), Ok(def.clone()));
        let text = serde_json::to_string(&v).unwrap();
        prop_assert_eq!(JobDef::from_json(&text), Ok(def.clone()));
        let yaml = yaml_serde::to_string(&v).unwrap();
        prop_assert_eq!(JobDef::from_yaml(&yaml), Ok(def));
    }
}
