//! `trigger:` — a job that starts a child pipeline from files of the same
//! commit (GitLab's parent-child pipelines). Multi-project pipelines
//! (`trigger: project`, or `trigger: some/project`) and child files that
//! are not `local` (`artifact`, `project`, `remote`, `template`) are
//! refused: berth runs one repository's commit.

use super::{Ctx, bool_value, expect_map, scalar, unknown_key};
use crate::diag::cut;
use crate::model::Trigger;
use crate::yaml::Node;

/// The keys of `trigger:` berth supports.
const TRIGGER_KEYS: &[&str] = &["include", "strategy", "forward"];

/// Parses a job's `trigger:`. Errors are reported in `cx`; `None` then.
pub(super) fn parse_trigger(cx: &mut Ctx, node: &Node) -> Option<Trigger> {
    if let Some(project) = node.as_str() {
        cx.error(
            node.pos,
            format!(
                "`trigger: {}` starts a pipeline of another project (a multi-project pipeline), which berth does not support; use `trigger: include: <file>` for a child pipeline of this commit",
                cut(project)
            ),
        );
        return None;
    }
    let map = expect_map(cx, node, "`trigger`")?;
    let mut trigger = Trigger {
        include: Vec::new(),
        depend: false,
        forward_yaml_variables: true,
        forward_pipeline_variables: false,
    };
    let mut ok = true;
    let mut has_include = false;
    for (k, v) in map {
        match k.name.as_str() {
            "include" => {
                has_include = true;
                match parse_include(cx, v) {
                    Some(files) => trigger.include = files,
                    None => ok = false,
                }
            }
            "strategy" => match scalar(cx, v, "`trigger:strategy`").as_deref() {
                Some("depend") => trigger.depend = true,
                Some(other) => {
                    cx.error(
                        v.pos,
                        format!("`trigger:strategy` must be `depend`, not `{}`", cut(other)),
                    );
                    ok = false;
                }
                None => ok = false,
            },
            "forward" => {
                let Some(forward) = expect_map(cx, v, "`trigger:forward`") else {
                    ok = false;
                    continue;
                };
                for (fk, fv) in forward {
                    match fk.name.as_str() {
                        "yaml_variables" => {
                            trigger.forward_yaml_variables =
                                bool_value(cx, fv, "trigger:forward:yaml_variables")
                                    .unwrap_or(true);
                        }
                        "pipeline_variables" => {
                            trigger.forward_pipeline_variables =
                                bool_value(cx, fv, "trigger:forward:pipeline_variables")
                                    .unwrap_or(false);
                        }
                        _ => {
                            unknown_key(
                                cx,
                                fk,
                                &["yaml_variables", "pipeline_variables"],
                                "`trigger:forward`",
                            );
                            ok = false;
                        }
                    }
                }
            }
            "project" | "branch" => {
                cx.error(
                    k.pos,
                    format!(
                        "`trigger:{}` starts a pipeline of another project (a multi-project pipeline), which berth does not support; only child pipelines (`trigger:include`) are",
                        k.name
                    ),
                );
                ok = false;
            }
            _ => {
                unknown_key(cx, k, TRIGGER_KEYS, "`trigger`");
                ok = false;
            }
        }
    }
    if !has_include && ok {
        cx.error(
            node.pos,
            "`trigger` needs `include`: the file(s) of this commit that define the child pipeline",
        );
        return None;
    }
    ok.then_some(trigger)
}

/// `trigger:include`: a path, or a list of paths or `local:` entries.
fn parse_include(cx: &mut Ctx, node: &Node) -> Option<Vec<String>> {
    let items: Vec<&Node> = match node.as_seq() {
        Some(items) => items.iter().collect(),
        None => vec![node],
    };
    if items.is_empty() {
        cx.error(node.pos, "`trigger:include` names no file");
        return None;
    }
    let mut files = Vec::new();
    let mut ok = true;
    for item in items {
        match include_entry(cx, item) {
            Some(path) => files.push(path),
            None => ok = false,
        }
    }
    ok.then_some(files)
}

/// One entry of `trigger:include`: `path` or `{local: path}`.
fn include_entry(cx: &mut Ctx, node: &Node) -> Option<String> {
    let path = if let Some(path) = node.as_str() {
        path.to_string()
    } else {
        let map = expect_map(cx, node, "an entry of `trigger:include`")?;
        let mut path = None;
        for (k, v) in map {
            match k.name.as_str() {
                "local" => path = scalar(cx, v, "`trigger:include:local`"),
                "artifact" | "job" => {
                    cx.error(
                        k.pos,
                        "`trigger:include:artifact` (a child pipeline from a file another job made) is not supported; commit the file and use `local`",
                    );
                    return None;
                }
                "project" | "file" | "ref" => {
                    cx.error(
                        k.pos,
                        format!(
                            "`trigger:include:{}` (a file of another project) is not supported; only `local` files of this commit are",
                            k.name
                        ),
                    );
                    return None;
                }
                "template" | "remote" | "component" => {
                    cx.error(
                        k.pos,
                        format!(
                            "`trigger:include:{}` is not supported; only `local` files of this commit are",
                            k.name
                        ),
                    );
                    return None;
                }
                _ => {
                    unknown_key(cx, k, &["local"], "an entry of `trigger:include`");
                    return None;
                }
            }
        }
        match path {
            Some(p) => p,
            None => {
                cx.error(node.pos, "an entry of `trigger:include` needs `local`");
                return None;
            }
        }
    };
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() || trimmed.split('/').any(|part| part == "..") {
        cx.error(
            node.pos,
            format!(
                "`trigger:include` path `{}` must name a file inside the repository",
                cut(&path)
            ),
        );
        return None;
    }
    if path.starts_with("http://") || path.starts_with("https://") {
        cx.error(
            node.pos,
            format!(
                "`trigger:include` `{}` is a remote file, which berth does not support; only files of this commit are",
                cut(&path)
            ),
        );
        return None;
    }
    Some(trimmed.to_string())
}
