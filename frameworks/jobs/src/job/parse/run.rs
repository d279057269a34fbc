//! Reading Metronome's `run` (what one run of a job starts), with berth's
//! `parallelism`, `completions` and restart backoff.
//!
//! What berth refuses, each at its path and saying why: `gpus` other than
//! 0, `volumes`, `networks` and `ucr` (not supported by berth); Docker's
//! `forcePullImage` (no registry is assumed reachable), `privileged` and
//! `parameters`; an artifact's `cache` (berth's fetcher does not cache) and
//! URIs other than `http://` and `file:///`; `user` without `docker` (the
//! process containerizer cannot switch users); a secret that no `env`
//! variable references (berth hands secrets to tasks through `env` only,
//! so such a secret would do nothing); backoff settings with the `NEVER`
//! policy (no restarts happen).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_scheduler_core::error::quoted;
use regex::Regex;

use super::super::read::{Field, Report, sub};
use super::super::{
    Artifact, Command, ConstraintOp, Docker, EnvValue, PlacementConstraint, Restart, RestartPolicy,
    RunSpec, Secret,
};
use super::{MAX_ITEMS, MAX_NAME_BYTES, MAX_SECONDS, MAX_TEXT_BYTES, pick};

/// Largest `cpus`, in thousandths.
pub const MAX_CPUS_MILLI: u64 = 100_000_000;
/// Largest `mem` and `disk`, in MiB (1 PiB).
pub const MAX_MIB: u64 = 1 << 30;
/// Largest `parallelism`.
pub const MAX_PARALLELISM: u32 = 10_000;
/// Largest `completions`.
pub const MAX_COMPLETIONS: u32 = 100_000;
/// Largest `backoffLimit`.
pub const MAX_BACKOFF_LIMIT: u32 = 10_000;
/// Largest `backoffFactor`, in thousandths.
pub const MAX_BACKOFF_FACTOR_MILLI: u64 = 1_000_000;
/// Longest image name, artifact URI or secret source, in bytes.
pub const MAX_REF_BYTES: usize = 4096;

/// `run` at `f`.
pub(super) fn run_spec(r: &mut Report, f: &Field<'_>) -> Option<RunSpec> {
    let before = r.count();
    let mut o = f.fields(r)?;
    let path = o.path().to_owned();
    let cmd_field = o.take("cmd");
    let args_field = o.take("args");
    let command_given = cmd_field.is_some() || args_field.is_some();
    let cmd = cmd_field.and_then(|f| f.text(r, MAX_TEXT_BYTES));
    let args = args_field.and_then(|f| args(r, &f));
    let args_path = sub(&path, "args");
    let cpus_milli = o
        .take("cpus")
        .and_then(|f| f.milli(r, 1, MAX_CPUS_MILLI))
        .unwrap_or(1000);
    let mem_mib = o
        .take("mem")
        .and_then(|f| f.uint(r, 1, MAX_MIB))
        .unwrap_or(128);
    let disk_mib = o
        .take("disk")
        .and_then(|f| f.uint(r, 0, MAX_MIB))
        .unwrap_or(0);
    if let Some(f) = o.take("gpus")
        && let Some(g) = f.uint(r, 0, u64::MAX)
        && g != 0
    {
        f.bad(r, format!("{g} GPUs: GPUs are not supported by berth"));
    }
    let docker_field = o.take("docker");
    let docker_given = docker_field.is_some();
    let docker = docker_field.and_then(|f| docker(r, &f));
    let secrets_field = o.take("secrets");
    // The names given, valid or not: an env reference to a secret whose
    // definition has a problem is not refused a second time.
    let secret_names: BTreeSet<&str> = secrets_field
        .as_ref()
        .and_then(|f| f.value.as_object())
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let secrets = secrets_field
        .and_then(|f| secrets(r, &f))
        .unwrap_or_default();
    let env = o
        .take("env")
        .and_then(|f| env(r, &f, &secret_names))
        .unwrap_or_default();
    unreferenced_secrets(r, &path, &secrets, &env);
    let artifacts = o
        .take("artifacts")
        .and_then(|f| artifacts(r, &f))
        .unwrap_or_default();
    let constraints = o
        .take("placement")
        .and_then(|f| placement(r, &f))
        .unwrap_or_default();
    let max_launch_delay = o
        .take("maxLaunchDelay")
        .and_then(|f| f.uint(r, 1, MAX_SECONDS))
        .map_or(Duration::from_secs(3600), Duration::from_secs);
    let kill_grace = o
        .take("taskKillGracePeriodSeconds")
        .and_then(|f| f.uint(r, 0, MAX_SECONDS))
        .map(Duration::from_secs);
    let restart = o
        .take("restart")
        .and_then(|f| restart(r, &f))
        .unwrap_or_else(|| never(None));
    let user = o.take("user").and_then(|f| {
        let u = f.text(r, MAX_NAME_BYTES)?;
        if !docker_given {
            f.bad(
                r,
                "applies to Docker tasks only: berth's process containerizer cannot switch \
                 users; remove it or add run.docker",
            );
        }
        Some(u)
    });
    for key in ["volumes", "networks"] {
        if let Some(f) = o.take(key)
            && let Some(items) = f.items(r, usize::MAX)
            && !items.is_empty()
        {
            f.bad(r, format!("{key} are not supported by berth"));
        }
    }
    if let Some(f) = o.take("ucr")
        && let Some(u) = f.fields(r)
        && !u.is_empty()
    {
        f.bad(
            r,
            "the Mesos containerizer (ucr) is not supported by berth; use docker",
        );
    }
    let parallelism = o.take("parallelism");
    let parallelism_path = sub(&path, "parallelism");
    let parallelism = parallelism.and_then(|f| f.u32(r, 1, MAX_PARALLELISM));
    let completions = match o.take("completions") {
        Some(f) => f.u32(r, 1, MAX_COMPLETIONS),
        None => Some(1),
    };
    if let (Some(p), Some(completions)) = (parallelism, completions)
        && p > completions
    {
        r.at(
            &parallelism_path,
            format!(
                "{p} is more than completions ({completions}): a run has no more tasks \
                 than completions"
            ),
        );
    }
    o.close(r);

    let command = match (cmd, args) {
        (Some(_), Some(_)) => {
            r.at(&args_path, "give either cmd or args, not both");
            None
        }
        (Some(c), None) => Some(Command::Shell(c)),
        (None, Some(a)) => Some(Command::Args(a)),
        (None, None) if docker_given => Some(Command::Image),
        (None, None) if command_given => None,
        (None, None) => {
            r.at(
                &path,
                "a run needs cmd or args (or docker.image to run the image's own command)",
            );
            None
        }
    };
    if r.count() != before {
        return None;
    }
    Some(RunSpec {
        command: command?,
        cpus_milli,
        mem_mib,
        disk_mib,
        docker,
        env,
        secrets,
        artifacts,
        constraints,
        max_launch_delay,
        kill_grace,
        restart,
        user,
        parallelism: parallelism.unwrap_or(1),
        completions: completions?,
    })
}

/// `args`: strings; an empty array is the same as none.
fn args(r: &mut Report, f: &Field<'_>) -> Option<Vec<String>> {
    let before = r.count();
    let out: Vec<String> = f
        .items(r, MAX_ITEMS)?
        .iter()
        .filter_map(|item| item.bounded(r, MAX_TEXT_BYTES))
        .collect();
    (r.count() == before && !out.is_empty()).then_some(out)
}

/// `docker`: an image; berth's refusals for the rest.
fn docker(r: &mut Report, f: &Field<'_>) -> Option<Docker> {
    let before = r.count();
    let mut o = f.fields(r)?;
    let image = o.require(r, "image").and_then(|f| f.text(r, MAX_REF_BYTES));
    if let Some(f) = o.take("forcePullImage")
        && f.boolean(r) == Some(true)
    {
        f.bad(
            r,
            "berth does not pull images: no registry is assumed reachable, and an agent \
             runs the image it has; remove it or set false",
        );
    }
    if let Some(f) = o.take("privileged")
        && f.boolean(r) == Some(true)
    {
        f.bad(r, "privileged containers are not supported by berth");
    }
    if let Some(f) = o.take("parameters")
        && let Some(items) = f.items(r, usize::MAX)
        && !items.is_empty()
    {
        f.bad(r, "Docker parameters are not supported by berth");
    }
    o.close(r);
    (r.count() == before).then_some(Docker {
        image: image?,
        force_pull: false,
    })
}

/// `secrets`: `{name: {"source": path}}`.
fn secrets(r: &mut Report, f: &Field<'_>) -> Option<BTreeMap<String, Secret>> {
    let before = r.count();
    let mut out = BTreeMap::new();
    for (name, entry) in f.entries(r)? {
        let Some(mut o) = entry.fields(r) else {
            continue;
        };
        let source = o
            .require(r, "source")
            .and_then(|f| f.text(r, MAX_REF_BYTES));
        o.close(r);
        if let Some(source) = source {
            out.insert(name.to_owned(), Secret { source });
        }
    }
    (r.count() == before).then_some(out)
}

/// `env`: string values, or `{"secret": name}` naming a key of `secrets`.
fn env(
    r: &mut Report,
    f: &Field<'_>,
    secrets: &BTreeSet<&str>,
) -> Option<BTreeMap<String, EnvValue>> {
    let before = r.count();
    let mut out = BTreeMap::new();
    for (name, entry) in f.entries(r)? {
        if name.contains(['=', '\0']) {
            entry.bad(
                r,
                format!(
                    "the variable name {} must not contain '=' or NUL",
                    quoted(name)
                ),
            );
            continue;
        }
        let value = if entry.value.is_object() {
            let Some(mut o) = entry.fields(r) else {
                continue;
            };
            let secret = o.require(r, "secret").and_then(|s| {
                let key = s.text(r, MAX_NAME_BYTES)?;
                if !secrets.contains(key.as_str()) {
                    s.bad(
                        r,
                        format!("no secret {} is defined in run.secrets", quoted(&key)),
                    );
                    return None;
                }
                Some(EnvValue::Secret(key))
            });
            o.close(r);
            secret
        } else if entry.value.is_string() {
            entry
                .bounded(r, super::super::read::MAX_ENTRY_BYTES)
                .map(EnvValue::Value)
        } else {
            entry.bad(
                r,
                format!(
                    "expected a string or {{\"secret\": name}}, got {}",
                    super::super::read::type_name(entry.value)
                ),
            );
            None
        };
        if let Some(v) = value {
            out.insert(name.to_owned(), v);
        }
    }
    (r.count() == before).then_some(out)
}

/// Refuses secrets no `env` variable references.
fn unreferenced_secrets(
    r: &mut Report,
    run_path: &str,
    secrets: &BTreeMap<String, Secret>,
    env: &BTreeMap<String, EnvValue>,
) {
    for name in secrets.keys() {
        let used = env
            .values()
            .any(|v| matches!(v, EnvValue::Secret(s) if s == name));
        if !used {
            r.at(
                &sub(&sub(run_path, "secrets"), name),
                format!(
                    "the secret {} is not referenced by any env variable (berth gives \
                     secrets to tasks through env only); reference it as \
                     {{\"secret\": {}}} or remove it",
                    quoted(name),
                    quoted(name)
                ),
            );
        }
    }
}

/// `artifacts`: `http://` or `file:///` URIs.
fn artifacts(r: &mut Report, f: &Field<'_>) -> Option<Vec<Artifact>> {
    let before = r.count();
    let mut out = Vec::new();
    for item in f.items(r, MAX_ITEMS)? {
        let Some(mut o) = item.fields(r) else {
            continue;
        };
        let uri = o.require(r, "uri").and_then(|f| {
            let uri = f.text(r, MAX_REF_BYTES)?;
            let rest = uri
                .strip_prefix("http://")
                .or_else(|| uri.strip_prefix("file:///"));
            if rest.is_none_or(str::is_empty) {
                f.bad(
                    r,
                    format!(
                        "{}: berth's fetcher takes http:// and file:/// URIs only",
                        quoted(&uri)
                    ),
                );
                return None;
            }
            Some(uri)
        });
        let extract = o.take("extract").and_then(|f| f.boolean(r)).unwrap_or(true);
        let executable = o
            .take("executable")
            .and_then(|f| f.boolean(r))
            .unwrap_or(false);
        if let Some(f) = o.take("cache")
            && f.boolean(r) == Some(true)
        {
            f.bad(
                r,
                "berth does not cache fetched artifacts (each run fetches afresh); remove it \
                 or set false",
            );
        }
        o.close(r);
        if let Some(uri) = uri {
            out.push(Artifact {
                uri,
                extract,
                executable,
            });
        }
    }
    (r.count() == before).then_some(out)
}

/// `placement`: `{"constraints": [...]}`.
fn placement(r: &mut Report, f: &Field<'_>) -> Option<Vec<PlacementConstraint>> {
    let before = r.count();
    let mut o = f.fields(r)?;
    let mut out = Vec::new();
    if let Some(list) = o.take("constraints")
        && let Some(items) = list.items(r, MAX_ITEMS)
    {
        out.extend(items.iter().filter_map(|item| constraint(r, item)));
    }
    o.close(r);
    (r.count() == before).then_some(out)
}

/// One constraint; `IS` is `EQ`; `LIKE`/`UNLIKE` values are regular
/// expressions (anchored at both ends when used).
fn constraint(r: &mut Report, item: &Field<'_>) -> Option<PlacementConstraint> {
    let mut o = item.fields(r)?;
    let attribute = o
        .require(r, "attribute")
        .and_then(|f| f.text(r, MAX_NAME_BYTES));
    let operator = o.require(r, "operator").and_then(|f| {
        pick(
            r,
            &f,
            &[
                ("EQ", ConstraintOp::Eq),
                ("IS", ConstraintOp::Eq),
                ("LIKE", ConstraintOp::Like),
                ("UNLIKE", ConstraintOp::Unlike),
            ],
        )
    });
    let value = o.require(r, "value").and_then(|f| {
        let v = f.bounded(r, MAX_TEXT_BYTES)?;
        if matches!(operator, Some(ConstraintOp::Like | ConstraintOp::Unlike))
            && let Err(e) = Regex::new(&format!("^(?:{v})$"))
        {
            f.bad(
                r,
                format!(
                    "{} is not a valid regular expression: {}",
                    quoted(&v),
                    reason(&e.to_string())
                ),
            );
            return None;
        }
        Some(v)
    });
    o.close(r);
    Some(PlacementConstraint {
        attribute: attribute?,
        operator: operator?,
        value: value?,
    })
}

/// The last non-empty line of the regex crate's message (the reason; the
/// lines before repeat the pattern).
fn reason(message: &str) -> &str {
    message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
}

/// The restart block of the `NEVER` policy.
fn never(active_deadline: Option<Duration>) -> Restart {
    Restart {
        policy: RestartPolicy::Never,
        active_deadline,
        backoff_limit: 0,
        backoff: Duration::from_secs(10),
        backoff_factor_milli: 2000,
        max_backoff: Duration::from_secs(360),
    }
}

/// `restart`: the policy, the deadline, and berth's backoff (only with
/// `ON_FAILURE`).
fn restart(r: &mut Report, f: &Field<'_>) -> Option<Restart> {
    let before = r.count();
    let mut o = f.fields(r)?;
    let policy = o
        .take("policy")
        .and_then(|f| {
            pick(
                r,
                &f,
                &[
                    ("NEVER", RestartPolicy::Never),
                    ("ON_FAILURE", RestartPolicy::OnFailure),
                ],
            )
        })
        .unwrap_or(RestartPolicy::Never);
    let active_deadline = o
        .take("activeDeadlineSeconds")
        .and_then(|f| f.uint(r, 0, MAX_SECONDS))
        .map(Duration::from_secs);
    let limit = o.take("backoffLimit");
    let seconds = o.take("backoffSeconds");
    let factor = o.take("backoffFactor");
    let max = o.take("maxBackoffSeconds");
    o.close(r);
    let out = match policy {
        RestartPolicy::Never => {
            if let Some(f) = &limit
                && f.uint(r, 0, u64::from(MAX_BACKOFF_LIMIT))
                    .is_some_and(|n| n != 0)
            {
                f.bad(
                    r,
                    "restarts need restart.policy ON_FAILURE (with NEVER a failed task fails \
                     the run); set policy to ON_FAILURE, or backoffLimit to 0",
                );
            }
            for f in [&seconds, &factor, &max].into_iter().flatten() {
                f.bad(
                    r,
                    "applies with restart.policy ON_FAILURE only (NEVER restarts nothing); \
                     set policy to ON_FAILURE or remove it",
                );
            }
            never(active_deadline)
        }
        RestartPolicy::OnFailure => {
            let d = never(None);
            let backoff = seconds
                .and_then(|f| f.uint(r, 1, MAX_SECONDS))
                .map_or(d.backoff, Duration::from_secs);
            let max_path = max.as_ref().map(|f| f.path.clone());
            let max_backoff = max
                .and_then(|f| f.uint(r, 1, MAX_SECONDS))
                .map_or(d.max_backoff, Duration::from_secs);
            if max_backoff < backoff {
                r.at(
                    &max_path.unwrap_or_else(|| sub(f.path.as_str(), "maxBackoffSeconds")),
                    format!(
                        "{} is less than backoffSeconds ({})",
                        max_backoff.as_secs(),
                        backoff.as_secs()
                    ),
                );
            }
            Restart {
                policy,
                active_deadline,
                backoff_limit: limit
                    .and_then(|f| f.u32(r, 0, MAX_BACKOFF_LIMIT))
                    .unwrap_or(6),
                backoff,
                backoff_factor_milli: factor
                    .and_then(|f| f.milli(r, 1000, MAX_BACKOFF_FACTOR_MILLI))
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(d.backoff_factor_milli),
                max_backoff,
            }
        }
    };
    (r.count() == before).then_some(out)
}
