//! The keywords of job reports and deployments that need more than a
//! type check: `coverage` (a regular expression, checked as the executor
//! will compile it) and `environment:on_stop` (the stop job must exist and
//! stop the same environment).

use super::{Ctx, JobSpec, scalar};
use crate::yaml::Node;

/// `coverage: /regex/`: the value, once it compiles.
pub(super) fn parse_coverage(cx: &mut Ctx, node: &Node) -> Option<String> {
    let value = scalar(cx, node, "`coverage`")?;
    match crate::reports::parse_coverage_regex(&value) {
        Ok(_) => Some(value),
        Err(why) => {
            cx.error(node.pos, why);
            None
        }
    }
}

/// Each `environment:on_stop` names a job of the file whose environment
/// has the same name and `action: stop`, as GitLab requires.
pub(super) fn check_on_stop(cx: &mut Ctx, jobs: &[JobSpec]) {
    for job in jobs {
        let Some(env) = &job.environment else {
            continue;
        };
        let Some(stop) = &env.on_stop else {
            continue;
        };
        let Some(target) = jobs.iter().find(|j| j.name == *stop) else {
            cx.error(
                job.pos,
                format!(
                    "the `environment:on_stop` of job `{}` names `{stop}`, which is not a job",
                    job.name
                ),
            );
            continue;
        };
        match &target.environment {
            Some(t) if t.action == "stop" && t.name == env.name => {}
            Some(t) if t.action != "stop" => cx.error(
                target.pos,
                format!(
                    "the job `{stop}` is the `on_stop` job of `{}` but its `environment:action` is `{}`, not `stop`",
                    job.name, t.action
                ),
            ),
            Some(t) => cx.error(
                target.pos,
                format!(
                    "the job `{stop}` is the `on_stop` job of `{}` (environment `{}`) but stops the environment `{}`",
                    job.name, env.name, t.name
                ),
            ),
            None => cx.error(
                target.pos,
                format!(
                    "the job `{stop}` is the `on_stop` job of `{}` but has no `environment` (it needs `name: {}` and `action: stop`)",
                    job.name, env.name
                ),
            ),
        }
    }
}
