//! The dependency graph of jobs (`dependencies: [{"id": "parent"}]`): a
//! job may be added or changed only if each of its parents exists and no
//! cycle goes through it, and removed only if no other job depends on it.
//!
//! Edges go from a job to its parents. [`check_dependencies`] walks them
//! from the changed job, depth first with an explicit stack (a chain of
//! any length is fine), visiting each job and edge at most once: linear in
//! the part of the graph reachable from it. A cycle not reachable from the
//! changed job is none of its business (the set had none before, since
//! every change is checked).

use std::collections::HashMap;

use berth_scheduler_core::error::quoted;

use super::{JobDef, JobId};
use crate::error::{FieldError, Invalid};

/// Checks `changed` against `jobs` (the other jobs; a job of the same id
/// in `jobs` is the old version `changed` replaces).
///
/// # Errors
/// [`Invalid`]: a parent that does not exist, at `/dependencies/<i>/id`;
/// a cycle, at `/dependencies`, named `a → b → a` (each job followed by
/// one of its parents).
pub fn check_dependencies<'a>(
    jobs: impl IntoIterator<Item = &'a JobDef>,
    changed: &JobDef,
) -> Result<(), Invalid> {
    let mut parents: HashMap<&JobId, &[JobId]> = jobs
        .into_iter()
        .map(|j| (&j.id, j.dependencies.as_slice()))
        .collect();
    parents.insert(&changed.id, &changed.dependencies);

    let errors: Vec<FieldError> = changed
        .dependencies
        .iter()
        .enumerate()
        .filter(|(_, p)| !parents.contains_key(p))
        .map(|(i, p)| FieldError {
            path: format!("/dependencies/{i}/id"),
            message: format!("job {} does not exist", quoted(p.as_str())),
        })
        .collect();
    if !errors.is_empty() {
        return Err(Invalid { errors });
    }
    match cycle_from(&parents, &changed.id) {
        None => Ok(()),
        Some(cycle) => Err(Invalid {
            errors: vec![FieldError {
                path: "/dependencies".into(),
                message: format!(
                    "the dependencies make a cycle: {}; a job cannot wait for itself",
                    show_cycle(&cycle)
                ),
            }],
        }),
    }
}

/// `a → b → a`; a long cycle shows its first and last jobs and how many
/// are between (a message stays short however long the chain).
fn show_cycle(cycle: &[&JobId]) -> String {
    const ENDS: usize = 8;
    let name = |id: &&JobId| id.as_str().to_owned();
    if cycle.len() <= 2 * ENDS + 1 {
        return cycle.iter().map(name).collect::<Vec<_>>().join(" → ");
    }
    let head: Vec<String> = cycle[..ENDS].iter().map(name).collect();
    let tail: Vec<String> = cycle[cycle.len() - ENDS..].iter().map(name).collect();
    format!(
        "{} → … ({} more) → {}",
        head.join(" → "),
        cycle.len() - 2 * ENDS,
        tail.join(" → ")
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// On the current path.
    Open,
    /// Fully explored: no cycle through it.
    Done,
}

/// The first cycle reachable from `start`, as the path around it (its first
/// job repeated at the end), starting at `start` when it is on the cycle.
fn cycle_from<'a>(
    parents: &HashMap<&'a JobId, &'a [JobId]>,
    start: &'a JobId,
) -> Option<Vec<&'a JobId>> {
    let mut marks: HashMap<&JobId, Mark> = HashMap::new();
    // The current path: each job with the index of the next parent to try.
    let mut path: Vec<(&JobId, usize)> = vec![(start, 0)];
    marks.insert(start, Mark::Open);
    while let Some((job, next)) = path.last_mut() {
        let edges = parents.get(*job).copied().unwrap_or(&[]);
        let Some(parent) = edges.get(*next) else {
            marks.insert(*job, Mark::Done);
            path.pop();
            continue;
        };
        *next += 1;
        // Parents that are not jobs (checked for the changed job; another
        // job's stale edge) lead nowhere.
        let Some((parent, _)) = parents.get_key_value(parent) else {
            continue;
        };
        match marks.get(*parent) {
            Some(Mark::Done) => {}
            Some(Mark::Open) => {
                let from = path.iter().position(|(j, _)| j == parent).unwrap_or(0);
                let mut cycle: Vec<&JobId> = path[from..].iter().map(|(j, _)| *j).collect();
                cycle.push(parent);
                return Some(cycle);
            }
            None => {
                marks.insert(parent, Mark::Open);
                path.push((parent, 0));
            }
        }
    }
    None
}

/// Whether `removed` may be removed: not while another job depends on it.
///
/// # Errors
/// A message naming the jobs that depend on it (the first ten, and how many
/// more).
pub fn check_removal<'a>(
    jobs: impl IntoIterator<Item = &'a JobDef>,
    removed: &JobId,
) -> Result<(), String> {
    const NAMED: usize = 10;
    let dependents: Vec<&JobId> = jobs
        .into_iter()
        .filter(|j| &j.id != removed && j.dependencies.contains(removed))
        .map(|j| &j.id)
        .collect();
    if dependents.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = dependents
        .iter()
        .take(NAMED)
        .map(|id| quoted(id.as_str()).to_string())
        .collect();
    if dependents.len() > NAMED {
        names.push(format!("and {} more", dependents.len() - NAMED));
    }
    Err(format!(
        "job {} is a dependency of {}; change or remove {} first",
        quoted(removed.as_str()),
        names.join(", "),
        if dependents.len() == 1 { "it" } else { "them" },
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;

    fn job(id: &str, parents: &[&str]) -> JobDef {
        let deps: Vec<_> = parents.iter().map(|p| json!({ "id": p })).collect();
        JobDef::from_value(&json!({
            "id": id,
            "run": {"cmd": "true"},
            "dependencies": deps,
        }))
        .expect("a valid job")
    }

    fn errors(r: Result<(), Invalid>) -> Vec<String> {
        r.err()
            .map(|e| e.errors.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn parents_must_exist() {
        let jobs = [job("a", &[]), job("b", &[])];
        assert_eq!(
            errors(check_dependencies(&jobs, &job("c", &["a", "b"]))),
            Vec::<String>::new()
        );
        assert_eq!(
            errors(check_dependencies(&jobs, &job("c", &["a", "x", "b", "y"]))),
            [
                "/dependencies/1/id: job \"x\" does not exist",
                "/dependencies/3/id: job \"y\" does not exist",
            ]
        );
    }

    #[test]
    fn a_cycle_is_named_from_the_changed_job() {
        let jobs = [job("a", &[]), job("b", &["a"]), job("c", &["b"])];
        assert_eq!(
            errors(check_dependencies(&jobs, &job("a", &["c"]))),
            [
                "/dependencies: the dependencies make a cycle: a → c → b → a; a job cannot wait for itself"
            ]
        );
        assert_eq!(
            errors(check_dependencies(&jobs, &job("a", &["b"]))),
            [
                "/dependencies: the dependencies make a cycle: a → b → a; a job cannot wait for itself"
            ]
        );
        // Diamonds are not cycles.
        let diamond = [job("top", &[]), job("l", &["top"]), job("r", &["top"])];
        assert!(check_dependencies(&diamond, &job("bottom", &["l", "r"])).is_ok());
    }

    #[test]
    fn the_changed_job_replaces_its_old_version() {
        // The stored `a` depends on `b`, which depends on `a`: the new `a`
        // depends on nothing, so there is no cycle any more.
        let jobs = [job("a", &["b"]), job("b", &["a"])];
        assert!(check_dependencies(&jobs, &job("a", &[])).is_ok());
        // And a new version that adds the edge back is refused.
        let jobs = [job("a", &[]), job("b", &["a"])];
        assert!(check_dependencies(&jobs, &job("a", &["b"])).is_err());
    }

    #[test]
    fn a_long_chain_is_checked_in_linear_time_and_named_briefly() {
        const N: usize = 100_000;
        let ids: Vec<String> = (0..N).map(|i| format!("j{i}")).collect();
        let mut jobs = vec![job(&ids[0], &[])];
        for i in 1..N {
            jobs.push(job(&ids[i], &[&ids[i - 1]]));
        }
        let started = Instant::now();
        assert!(check_dependencies(&jobs, &job("top", &[&ids[N - 1]])).is_ok());
        let cycle = errors(check_dependencies(&jobs, &job("j0", &[&ids[N - 1]])));
        assert!(
            started.elapsed().as_secs() < 10,
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(cycle.len(), 1);
        assert!(
            cycle[0].starts_with(
                "/dependencies: the dependencies make a cycle: j0 → j99999 → j99998 → "
            ),
            "{}",
            cycle[0]
        );
        assert!(cycle[0].contains("→ … (99985 more) → "), "{}", cycle[0]);
        assert!(cycle[0].contains("j2 → j1 → j0;"), "{}", cycle[0]);
        assert!(cycle[0].len() < 300, "{}", cycle[0]);
    }

    #[test]
    fn removal_is_refused_while_others_depend_on_it() {
        let jobs = [job("a", &[]), job("b", &["a"]), job("c", &["a", "b"])];
        assert_eq!(
            check_removal(&jobs, &job("a", &[]).id),
            Err("job \"a\" is a dependency of \"b\", \"c\"; change or remove them first".into())
        );
        assert_eq!(
            check_removal(&jobs, &job("b", &[]).id),
            Err("job \"b\" is a dependency of \"c\"; change or remove it first".into())
        );
        assert_eq!(check_removal(&jobs, &job("c", &[]).id), Ok(()));
        let many: Vec<JobDef> = (0..12).map(|i| job(&format!("d{i}"), &["a"])).collect();
        let msg = check_removal(&many, &job("a", &[]).id).unwrap_err();
        assert!(msg.contains("\"d9\", and 2 more;"), "{msg}");
    }
}
