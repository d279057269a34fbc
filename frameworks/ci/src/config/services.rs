//! `services:` (job, `default:` and the deprecated global keyword): the
//! service containers of a Docker job, as GitLab's Docker executor runs
//! them.
//!
//! An entry is an image name or a mapping with `name`, `alias`,
//! `entrypoint`, `command` and `variables`. `alias` holds one or several
//! host names, separated by commas or spaces. What berth cannot honour is
//! refused: `pull_policy` other than `if-not-present` (the agent pulls an
//! image only when it is missing), `docker:` (platform, user) and `ports`;
//! `kubernetes:` is warned about (a GitLab Docker runner ignores it too).
//! A job with services and no `image` is refused: it would run as a shell
//! process, which has no network to put services on.
//!
//! In a plan ([`plan_service`]) the image name is expanded, the host names
//! GitLab derives from it come first, then the aliases; the environment is
//! the job's variables, then the service's own (expanded against them).

use std::collections::BTreeMap;

use berth_proto::task::services::{MAX_ALIASES, MAX_SERVICES, is_alias};

use super::{Ctx, VarDef, expect_map, one_or_list, parse_variables, scalar, unknown_key};
use crate::diag::{Pos, cut};
use crate::model::Service;
use crate::vars::expand;
use crate::yaml::Node;

/// A `services:` entry as written (the image not expanded yet).
#[derive(Debug, Clone)]
pub(crate) struct ServiceSpec {
    pub(crate) name: String,
    pub(crate) aliases: Vec<String>,
    pub(crate) entrypoint: Option<Vec<String>>,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) variables: Vec<VarDef>,
}

/// The keys of a `services:` entry berth knows (some only to refuse).
const SERVICE_KEYS: &[&str] = &[
    "name",
    "alias",
    "entrypoint",
    "command",
    "variables",
    "pull_policy",
    "docker",
    "kubernetes",
    "ports",
];

/// Parses a `services:` list.
pub(super) fn parse_services(cx: &mut Ctx, node: &Node) -> Vec<ServiceSpec> {
    if node.is_null() {
        return Vec::new();
    }
    let Some(items) = node.as_seq() else {
        cx.error(
            node.pos,
            format!(
                "`services` must be a list of images or mappings with `name`, not {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    if items.len() > MAX_SERVICES {
        cx.error(
            node.pos,
            format!(
                "`services` lists {} services; at most {MAX_SERVICES} are allowed",
                items.len()
            ),
        );
        return Vec::new();
    }
    items.iter().filter_map(|i| parse_service(cx, i)).collect()
}

fn parse_service(cx: &mut Ctx, node: &Node) -> Option<ServiceSpec> {
    if let Some(name) = node.as_str() {
        return Some(ServiceSpec {
            name: name.to_string(),
            aliases: Vec::new(),
            entrypoint: None,
            command: None,
            variables: Vec::new(),
        });
    }
    let map = expect_map(cx, node, "a `services` entry")?;
    let mut spec = ServiceSpec {
        name: String::new(),
        aliases: Vec::new(),
        entrypoint: None,
        command: None,
        variables: Vec::new(),
    };
    let mut named = false;
    for (k, v) in map {
        match k.name.as_str() {
            "name" => {
                if let Some(n) = scalar(cx, v, "`services:name`") {
                    spec.name = n;
                    named = true;
                }
            }
            "alias" => spec.aliases = parse_alias(cx, v).unwrap_or_default(),
            "entrypoint" => spec.entrypoint = one_or_list(cx, v, "services:entrypoint"),
            "command" => spec.command = one_or_list(cx, v, "services:command"),
            "variables" => spec.variables = parse_variables(cx, v),
            "pull_policy" => pull_policy(cx, v),
            "docker" => cx.error(
                k.pos,
                "`services:docker` (platform, user) is not supported: berth runs a service \
                 with its image's platform and user",
            ),
            "ports" => cx.error(
                k.pos,
                "`services:ports` is not supported: the job reaches a service's ports \
                 directly on the job's network, by the service's name or alias",
            ),
            "kubernetes" => cx.warn(
                k.pos,
                "`services:kubernetes` is ignored: berth runs services as Docker containers \
                 (as a GitLab Docker runner does)",
            ),
            _ => unknown_key(cx, k, SERVICE_KEYS, "a `services` entry"),
        }
    }
    if !named {
        cx.error(node.pos, "a `services` entry needs a `name` (its image)");
        return None;
    }
    Some(spec)
}

/// `alias`: one string of host names separated by commas or spaces (as
/// GitLab allows), each checked.
fn parse_alias(cx: &mut Ctx, node: &Node) -> Option<Vec<String>> {
    let text = scalar(cx, node, "`services:alias`")?;
    let aliases: Vec<String> = text
        .split([',', ' '])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    if aliases.is_empty() {
        cx.error(node.pos, "`services:alias` is empty");
        return None;
    }
    // Two more are derived from the image.
    if aliases.len() > MAX_ALIASES - 2 {
        cx.error(
            node.pos,
            format!(
                "`services:alias` lists {} aliases; at most {} are allowed",
                aliases.len(),
                MAX_ALIASES - 2
            ),
        );
        return None;
    }
    if let Some(bad) = aliases.iter().find(|a| !is_alias(a)) {
        cx.error(
            node.pos,
            format!(
                "`services:alias` `{}` is not a host name: use letters, digits, `.`, `_` and `-`, \
                 starting with a letter or digit",
                cut(bad)
            ),
        );
        return None;
    }
    Some(aliases)
}

/// `pull_policy`: only `if-not-present` (alone or as the only entry of a
/// list) is what the agent does.
fn pull_policy(cx: &mut Ctx, node: &Node) {
    let Some(policies) = one_or_list(cx, node, "services:pull_policy") else {
        return;
    };
    if let Some(other) = policies.iter().find(|p| *p != "if-not-present") {
        cx.error(
            node.pos,
            format!(
                "`services:pull_policy` `{}` is not supported: berth pulls a service's image \
                 only when it is missing (`if-not-present`)",
                cut(other)
            ),
        );
    }
}

/// The errors of a job's services as a whole: services without `image`,
/// an alias given to two services.
pub(super) fn check_job(
    cx: &mut Ctx,
    job: &str,
    pos: Pos,
    services: &[ServiceSpec],
    has_image: bool,
) {
    let mut seen: Vec<&str> = Vec::new();
    for alias in services.iter().flat_map(|s| &s.aliases) {
        if seen.contains(&alias.as_str()) {
            cx.error(
                pos,
                format!("the job `{job}` gives the alias `{alias}` to two services"),
            );
            return;
        }
        seen.push(alias);
    }
    if !services.is_empty() && !has_image {
        cx.error(
            pos,
            format!(
                "the job `{job}` has `services` but no `image`: service containers run only \
                 next to a Docker job (a job without `image` runs as a shell process); add \
                 `image:` to the job (or to `default:`)"
            ),
        );
    }
}

/// The host names GitLab derives from a service's image: without the
/// digest, the tag and the registry's port, with `/` replaced by `__`
/// and by `-` (`tutum/wordpress:latest`: `tutum__wordpress` and
/// `tutum-wordpress`); the first only when it differs from the second.
#[must_use]
pub(crate) fn derived_aliases(image: &str) -> Vec<String> {
    let image = image.split('@').next().unwrap_or(image);
    let mut parts: Vec<&str> = image.split('/').collect();
    if let Some(last) = parts.last_mut() {
        *last = last.split(':').next().unwrap_or(last);
    }
    if parts.len() > 1
        && let Some(first) = parts.first_mut()
    {
        *first = first.split(':').next().unwrap_or(first);
    }
    let mut out = Vec::new();
    for name in [parts.join("__"), parts.join("-")] {
        if is_alias(&name) && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The planned services of a job whose variables are `vars`. A name
/// derived from an image that an earlier service has already (two
/// services of one image) is left out, as Docker would resolve it to
/// either.
pub(crate) fn plan_services(
    specs: &[ServiceSpec],
    vars: &BTreeMap<String, String>,
) -> Vec<Service> {
    let mut taken: Vec<String> = specs.iter().flat_map(|s| s.aliases.clone()).collect();
    specs
        .iter()
        .map(|spec| {
            let service = plan_service(spec, vars, &taken);
            taken.extend(service.aliases.iter().cloned());
            service
        })
        .collect()
}

/// The planned service of `spec`, without derived names in `taken`.
fn plan_service(spec: &ServiceSpec, vars: &BTreeMap<String, String>, taken: &[String]) -> Service {
    let lookup = |n: &str| vars.get(n).cloned();
    let name = expand(&spec.name, &lookup);
    let mut aliases: Vec<String> = derived_aliases(&name)
        .into_iter()
        .filter(|a| !taken.contains(a))
        .collect();
    for a in &spec.aliases {
        if !aliases.contains(a) {
            aliases.push(a.clone());
        }
    }
    let mut variables = vars.clone();
    for v in &spec.variables {
        let value = if v.expand {
            expand(&v.value, &lookup)
        } else {
            v.value.clone()
        };
        variables.insert(v.name.clone(), value);
    }
    Service {
        name,
        aliases,
        entrypoint: spec.entrypoint.clone(),
        command: spec.command.clone(),
        variables,
    }
}

#[cfg(test)]
mod tests;
