//! The checks that need the whole set of apps: an app id that clashes
//! with a group, service ports held by another app, dependencies that do
//! not exist or form a cycle, and removing an app others depend on.

use std::collections::{BTreeMap, BTreeSet};

use super::Services;
use crate::app::{AppDefinition, AppId};
use crate::error::{FieldError, Invalid, OpError};

/// Whether `a`'s segments are a strict prefix of `b`'s.
fn strictly_under(a: &AppId, b: &AppId) -> bool {
    let (a, b) = (a.segments(), b.segments());
    a.len() < b.len() && b[..a.len()] == *a
}

/// The apps a dependency path names: the app itself, or every app in the
/// group it names.
fn named<'a>(apps: impl Iterator<Item = &'a AppId>, dep: &AppId) -> Vec<&'a AppId> {
    apps.filter(|id| *id == dep || strictly_under(dep, id))
        .collect()
}

/// Checks `def` as the new definition of its app against every other app
/// of `s` (apps being removed hold their id and ports until they are gone;
/// only apps not being removed satisfy dependencies).
pub(super) fn check(s: &Services, def: &AppDefinition) -> Result<(), OpError> {
    let mut errors = Vec::new();
    let me = &def.id;
    let others = || s.apps.values().filter(move |a| a.id() != me);
    for other in others() {
        let o = other.id();
        if strictly_under(o, me) {
            errors.push(FieldError {
                path: "/id".into(),
                message: format!("{me} is inside {o}, which is an app, not a group"),
            });
        } else if strictly_under(me, o) {
            errors.push(FieldError {
                path: "/id".into(),
                message: format!("{me} is a group: app {o} is in it"),
            });
        }
    }
    let mut held: BTreeMap<u16, &AppId> = BTreeMap::new();
    for other in others() {
        for p in other.current.definition.service_ports() {
            held.insert(p, other.id());
        }
    }
    for (path, port) in service_port_paths(def) {
        if let Some(owner) = held.get(&port) {
            errors.push(FieldError {
                path,
                message: format!("service port {port} is used by app {owner}"),
            });
        }
    }
    let live: Vec<&AppId> = s
        .apps
        .values()
        .filter(|a| !a.removing() && a.id() != me)
        .map(|a| a.id())
        .collect();
    let mut deps_ok = true;
    for (i, dep) in def.dependencies.iter().enumerate() {
        let path = format!("/dependencies/{i}");
        if dep == me || strictly_under(dep, me) {
            errors.push(FieldError {
                path,
                message: format!("{dep} is the app itself or its group"),
            });
            deps_ok = false;
        } else if named(live.iter().copied(), dep).is_empty() {
            errors.push(FieldError {
                path,
                message: format!("no app or group {dep} exists"),
            });
            deps_ok = false;
        }
    }
    if deps_ok && let Some(cycle) = cycle(s, def) {
        errors.push(FieldError {
            path: "/dependencies".into(),
            message: format!("dependency cycle: {cycle}"),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid { errors }.into())
    }
}

/// Each non-zero service port of `def` with its field path.
fn service_port_paths(def: &AppDefinition) -> Vec<(String, u16)> {
    match &def.container {
        Some(c) if !c.port_mappings.is_empty() => c
            .port_mappings
            .iter()
            .enumerate()
            .filter(|(_, p)| p.service_port != 0)
            .map(|(i, p)| {
                (
                    format!("/container/portMappings/{i}/servicePort"),
                    p.service_port,
                )
            })
            .collect(),
        _ => def
            .port_definitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.port != 0)
            .map(|(i, p)| (format!("/portDefinitions/{i}/port"), p.port))
            .collect(),
    }
}

/// A dependency cycle through `def`'s app once it has `def`'s
/// dependencies, written `/a -> /b -> /a`.
fn cycle(s: &Services, def: &AppDefinition) -> Option<String> {
    let live: Vec<&AppId> = s
        .apps
        .values()
        .filter(|a| !a.removing())
        .map(|a| a.id())
        .chain(std::iter::once(&def.id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let deps_of = |id: &AppId| -> Vec<&AppId> {
        let list = if *id == def.id {
            &def.dependencies
        } else {
            match s.apps.get(id) {
                Some(a) => &a.current.definition.dependencies,
                None => return Vec::new(),
            }
        };
        list.iter()
            .flat_map(|d| named(live.iter().copied(), d))
            .collect()
    };
    // Depth-first from def's app, looking for a way back to it.
    let mut stack: Vec<(&AppId, Vec<&AppId>)> = vec![(&def.id, vec![&def.id])];
    let mut seen: BTreeSet<&AppId> = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in deps_of(at) {
            if *next == def.id {
                let mut names: Vec<String> = path.iter().map(|p| p.to_string()).collect();
                names.push(def.id.to_string());
                return Some(names.join(" -> "));
            }
            if seen.insert(next) {
                let mut p = path.clone();
                p.push(next);
                stack.push((next, p));
            }
        }
    }
    None
}

/// Refuses removing `id` while another app depends on it (directly, or on
/// a group that would be left without apps).
pub(super) fn removable(s: &Services, id: &AppId) -> Result<(), OpError> {
    let live: Vec<&AppId> = s
        .apps
        .values()
        .filter(|a| !a.removing() && a.id() != id)
        .map(|a| a.id())
        .collect();
    for other in s.apps.values().filter(|a| !a.removing() && a.id() != id) {
        for dep in &other.current.definition.dependencies {
            let names_me = dep == id || strictly_under(dep, id);
            if names_me && named(live.iter().copied(), dep).is_empty() {
                return Err(OpError::DependedOn {
                    app: id.clone(),
                    by: other.id().clone(),
                });
            }
        }
    }
    Ok(())
}
