//! Reading and validating a job definition: Metronome's JobSpec (v1) with
//! berth's additions, every problem collected with its JSON path.
//!
//! The top level is `id`, `description`, `labels`, `run` (see
//! [`run`](self::run)), and berth's `schedules` (inline, each read by
//! [`schedule`]), `dependencies` (`[{"id": "parent"}]`),
//! `successfulRunsHistoryLimit`, `failedRunsHistoryLimit` and
//! `runsHistoryMaxAgeSeconds`.
//!
//! Unknown fields are refused with their path, as Metronome's JSON schema
//! refuses additional properties. Ignored on input, since they are what
//! Metronome's answers add and a client may send an answer back: the
//! top-level `activeRuns`, `history` and `historySummary` (GET
//! `/v1/jobs/{id}?embed=…`), and a schedule's `nextRunAt`.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_scheduler_core::error::quoted;
use serde_json::Value;

use super::read::{Field, Fields, Report, sub};
use super::{ConcurrencyPolicy, HistoryLimits, JobDef, JobId, MissedPolicy, ScheduleDef};
use crate::error::Invalid;
use crate::schedule::{Cron, CronError};

pub mod run;

/// Largest seconds value accepted anywhere (about 100 years).
pub const MAX_SECONDS: u64 = 3_153_600_000;
/// Most items in a list (`args`, `artifacts`, constraints, dependencies).
pub const MAX_ITEMS: usize = 256;
/// Longest free text (`description`, `cmd`), in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest name (a user, an attribute, a secret's source), in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest cron expression or time zone, in bytes.
pub const MAX_CRON_BYTES: usize = 256;
/// Largest history limit (`successfulRunsHistoryLimit`…).
pub const MAX_HISTORY: u32 = 1000;
/// Shortest `runsHistoryMaxAgeSeconds`.
pub const MIN_HISTORY_AGE_SECONDS: u64 = 60;
/// Most ticks `maxMissedRuns` may ask for.
pub const MAX_MISSED_RUNS: u32 = 100;

/// Reads a whole definition.
pub(super) fn job(v: &Value) -> Result<JobDef, Invalid> {
    let mut r = Report::default();
    let Some(mut o) = Fields::of(&mut r, v, "") else {
        return r.finish(None);
    };
    let id = o.require(&mut r, "id").and_then(|f| job_id(&mut r, &f));
    let description = o
        .take("description")
        .and_then(|f| f.bounded(&mut r, MAX_TEXT_BYTES))
        .unwrap_or_default();
    let labels = o
        .take("labels")
        .and_then(|f| f.string_map(&mut r))
        .unwrap_or_default();
    let run = o
        .require(&mut r, "run")
        .and_then(|f| run::run_spec(&mut r, &f));
    let schedules = o
        .take("schedules")
        .and_then(|f| schedules(&mut r, &f))
        .unwrap_or_default();
    let dependencies = o
        .take("dependencies")
        .and_then(|f| dependencies(&mut r, &f, id.as_ref()))
        .unwrap_or_default();
    let history = history(&mut r, &mut o);
    for read_only in ["activeRuns", "history", "historySummary"] {
        o.skip(read_only);
    }
    o.close(&mut r);

    let def = match (id, run) {
        (Some(id), Some(run)) => Some(JobDef {
            id,
            description,
            labels,
            run,
            schedules,
            dependencies,
            history,
        }),
        _ => None,
    };
    r.finish(def)
}

/// A job id at `f`.
pub(super) fn job_id(r: &mut Report, f: &Field<'_>) -> Option<JobId> {
    let s = f.string(r)?;
    match JobId::new(s) {
        Ok(id) => Some(id),
        Err(why) => {
            f.bad(r, format!("{} {why}", quoted(s)));
            None
        }
    }
}

/// A schedule's id: one segment of a job id's rule (no dots).
fn schedule_id(r: &mut Report, f: &Field<'_>) -> Option<String> {
    const RULE: &str = "a schedule id is lowercase letters, digits and hyphens, starting \
                        and ending with a letter or digit";
    let s = f.string(r)?;
    let problem = if s.contains('.') {
        Some(format!("must not contain dots: {RULE}"))
    } else {
        // One segment of a job id: the same rule, one function.
        JobId::new(s).err().map(|why| {
            if why.starts_with("must be lowercase") {
                format!("does not follow the rule: {RULE}")
            } else {
                why.to_owned()
            }
        })
    };
    match problem {
        None => Some(s.to_owned()),
        Some(why) => {
            f.bad(r, format!("{} {why}", quoted(s)));
            None
        }
    }
}

/// `schedules`: at most [`JobDef::MAX_SCHEDULES`], ids unique.
fn schedules(r: &mut Report, f: &Field<'_>) -> Option<Vec<ScheduleDef>> {
    let before = r.count();
    let mut out: Vec<ScheduleDef> = Vec::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in f.items(r, JobDef::MAX_SCHEDULES)?.iter().enumerate() {
        let Some(s) = schedule(r, item.value, &item.path) else {
            continue;
        };
        if let Some(first) = ids.get(&s.id) {
            r.at(
                &sub(&item.path, "id"),
                format!("{} is also the id of schedule {first}", quoted(&s.id)),
            );
            continue;
        }
        ids.insert(s.id.clone(), i);
        out.push(s);
    }
    (r.count() == before).then_some(out)
}

/// One schedule at `path`; `None` after recording its problems.
fn schedule(r: &mut Report, v: &Value, path: &str) -> Option<ScheduleDef> {
    let before = r.count();
    let mut o = Fields::of(r, v, path)?;
    let id = o.require(r, "id").and_then(|f| schedule_id(r, &f));
    let cron = o.require(r, "cron").and_then(|f| {
        let c = f.text(r, MAX_CRON_BYTES)?;
        Some((c, f.path))
    });
    let zone = match o.take("timezone") {
        Some(f) => f.text(r, MAX_CRON_BYTES).map(|z| (z, f.path)),
        None => Some(("UTC".to_owned(), sub(path, "timezone"))),
    };
    let starting_deadline = o
        .take("startingDeadlineSeconds")
        .and_then(|f| f.uint(r, 1, MAX_SECONDS))
        .map_or(Duration::from_secs(900), Duration::from_secs);
    let concurrency = o
        .take("concurrencyPolicy")
        .and_then(|f| {
            pick(
                r,
                &f,
                &[
                    ("ALLOW", ConcurrencyPolicy::Allow),
                    ("FORBID", ConcurrencyPolicy::Forbid),
                    ("REPLACE", ConcurrencyPolicy::Replace),
                ],
            )
        })
        .unwrap_or(ConcurrencyPolicy::Allow);
    let enabled = o.take("enabled").and_then(|f| f.boolean(r)).unwrap_or(true);
    let missed = missed_policy(r, &mut o);
    o.skip("nextRunAt");
    o.close(r);

    let (id, (cron, cron_path), (timezone, zone_path)) = (id?, cron?, zone?);
    match Cron::parse(&cron, &timezone) {
        Ok(_) => {}
        Err(CronError::Expression(why)) => r.at(&cron_path, why),
        Err(CronError::Zone(why)) => r.at(&zone_path, why),
    }
    (r.count() == before).then_some(ScheduleDef {
        id,
        cron,
        timezone,
        starting_deadline,
        concurrency,
        enabled,
        missed,
    })
}

/// `missedRunPolicy` and `maxMissedRuns` (only with `RUN_ALL`).
fn missed_policy(r: &mut Report, o: &mut Fields<'_>) -> MissedPolicy {
    #[derive(Clone, Copy)]
    enum Kind {
        Skip,
        Once,
        All,
    }
    let kind = o
        .take("missedRunPolicy")
        .and_then(|f| {
            pick(
                r,
                &f,
                &[
                    ("SKIP", Kind::Skip),
                    ("RUN_ONCE", Kind::Once),
                    ("RUN_ALL", Kind::All),
                ],
            )
        })
        .unwrap_or(Kind::Once);
    let max = o.take("maxMissedRuns");
    match kind {
        Kind::All => MissedPolicy::RunAll {
            max: max.and_then(|f| f.u32(r, 1, MAX_MISSED_RUNS)).unwrap_or(10),
        },
        Kind::Skip | Kind::Once => {
            if let Some(f) = max {
                f.bad(
                    r,
                    "applies with missedRunPolicy RUN_ALL only; set RUN_ALL or remove it",
                );
            }
            if matches!(kind, Kind::Skip) {
                MissedPolicy::Skip
            } else {
                MissedPolicy::RunOnce
            }
        }
    }
}

/// One of the named `choices` (exact spelling, as Metronome's enums).
pub(super) fn pick<T: Copy>(r: &mut Report, f: &Field<'_>, choices: &[(&str, T)]) -> Option<T> {
    let s = f.string(r)?;
    if let Some((_, t)) = choices.iter().find(|(name, _)| *name == s) {
        return Some(*t);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    f.bad(
        r,
        format!("{} is not one of {}", quoted(s), names.join(", ")),
    );
    None
}

/// `dependencies`: `[{"id": "parent"}]`, no duplicates, not the job itself.
fn dependencies(r: &mut Report, f: &Field<'_>, own: Option<&JobId>) -> Option<Vec<JobId>> {
    let before = r.count();
    let mut out: Vec<JobId> = Vec::new();
    for item in f.items(r, MAX_ITEMS)? {
        let Some(mut o) = item.fields(r) else {
            continue;
        };
        let id = o.require(r, "id").and_then(|idf| {
            let id = job_id(r, &idf)?;
            if own == Some(&id) {
                idf.bad(r, "a job cannot depend on itself");
                return None;
            }
            if out.contains(&id) {
                idf.bad(r, format!("{} is given twice", quoted(id.as_str())));
                return None;
            }
            Some(id)
        });
        o.close(r);
        out.extend(id);
    }
    (r.count() == before).then_some(out)
}

/// The history limits at the top level.
fn history(r: &mut Report, o: &mut Fields<'_>) -> HistoryLimits {
    let d = HistoryLimits::default();
    HistoryLimits {
        successful: o
            .take("successfulRunsHistoryLimit")
            .and_then(|f| f.u32(r, 0, MAX_HISTORY))
            .unwrap_or(d.successful),
        failed: o
            .take("failedRunsHistoryLimit")
            .and_then(|f| f.u32(r, 0, MAX_HISTORY))
            .unwrap_or(d.failed),
        max_age: o
            .take("runsHistoryMaxAgeSeconds")
            .and_then(|f| f.uint(r, MIN_HISTORY_AGE_SECONDS, MAX_SECONDS))
            .map_or(d.max_age, Duration::from_secs),
    }
}

/// Reads one schedule posted alone or inline (`path` is its prefix).
pub(super) fn schedule_at(v: &Value, path: &str) -> Result<ScheduleDef, Invalid> {
    let mut r = Report::default();
    let s = schedule(&mut r, v, path);
    r.finish(s)
}
