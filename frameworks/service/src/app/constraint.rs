//! Marathon's placement constraints (`[field, OP, value?]`) and a pure
//! evaluator: may an instance go on this candidate agent, given the agents
//! of the app's instances already placed?
//!
//! `field` is `hostname` (or `@hostname`) or an agent attribute; an agent
//! without the attribute fails every operator except `UNLIKE`, as in
//! Marathon. Semantics, op by op:
//!
//! - `UNIQUE`: no placed instance has the candidate's value.
//! - `CLUSTER value`: the candidate's value is `value`. `CLUSTER` without a
//!   value: the candidate's value equals the first placed instance's (any
//!   value when none is placed).
//! - `GROUP_BY n`: spread over `n` values: a value already used is allowed
//!   while it holds fewer than `instances / n` (or exactly that while the
//!   remainder `instances % n` is not yet used up); a new value is allowed
//!   while fewer than `n` values are used. `GROUP_BY` without `n`: the
//!   candidate's value holds no more instances than the least used value
//!   seen so far (a new value is always allowed).
//! - `MAX_PER n`: the candidate's value holds fewer than `n` instances.
//! - `LIKE re` / `UNLIKE re`: the value does / does not match `re` as a
//!   whole (the regex is anchored at both ends).
//! - `IS value`: the value equals `value`.

use std::collections::BTreeMap;

use berth_scheduler_core::error::quoted;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::read::{self, Ctx, item};

/// Most compiled size of one constraint regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// A regex matched against a whole value.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source` anchored at both ends.
    pub fn new(source: &str) -> Result<Pattern, String> {
        let regex = RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("{} is not a valid regular expression: {e}", quoted(source)))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The regex as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `value` matches as a whole.
    pub fn full_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Pattern {}

/// An operator with its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConstraintOp {
    /// `UNIQUE`.
    Unique,
    /// `CLUSTER` with an optional value.
    Cluster(Option<String>),
    /// `GROUP_BY` with an optional number of groups.
    GroupBy(Option<u32>),
    /// `LIKE regex`.
    Like(Pattern),
    /// `UNLIKE regex`.
    Unlike(Pattern),
    /// `MAX_PER n`.
    MaxPer(u32),
    /// `IS value`.
    Is(String),
}

impl ConstraintOp {
    /// Marathon's name of the operator.
    pub fn name(&self) -> &'static str {
        match self {
            ConstraintOp::Unique => "UNIQUE",
            ConstraintOp::Cluster(_) => "CLUSTER",
            ConstraintOp::GroupBy(_) => "GROUP_BY",
            ConstraintOp::Like(_) => "LIKE",
            ConstraintOp::Unlike(_) => "UNLIKE",
            ConstraintOp::MaxPer(_) => "MAX_PER",
            ConstraintOp::Is(_) => "IS",
        }
    }

    /// The value as Marathon writes it, if any.
    pub fn value(&self) -> Option<String> {
        match self {
            ConstraintOp::Unique => None,
            ConstraintOp::Cluster(v) => v.clone(),
            ConstraintOp::GroupBy(n) => n.map(|n| n.to_string()),
            ConstraintOp::Like(p) | ConstraintOp::Unlike(p) => Some(p.source().to_string()),
            ConstraintOp::MaxPer(n) => Some(n.to_string()),
            ConstraintOp::Is(v) => Some(v.clone()),
        }
    }
}

/// One constraint: a field and an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    /// `hostname` or an attribute name (`@hostname` is stored as `hostname`).
    pub field: String,
    /// The operator and its value.
    pub op: ConstraintOp,
}

/// An agent as constraints see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentView {
    /// The agent's hostname.
    pub hostname: String,
    /// Its attributes as text.
    pub attributes: BTreeMap<String, String>,
}

impl AgentView {
    fn value(&self, field: &str) -> Option<&str> {
        if field == "hostname" {
            Some(&self.hostname)
        } else {
            self.attributes.get(field).map(String::as_str)
        }
    }
}

impl Constraint {
    /// Whether an instance may go on `candidate`, given the agents of the
    /// app's placed instances (one entry per instance) and the app's
    /// `instances` (for `GROUP_BY n`).
    pub fn allows(&self, candidate: &AgentView, placed: &[&AgentView], instances: u32) -> bool {
        let Some(value) = candidate.value(&self.field) else {
            return matches!(self.op, ConstraintOp::Unlike(_));
        };
        let count = |v: &str| {
            placed
                .iter()
                .filter(|a| a.value(&self.field) == Some(v))
                .count()
        };
        match &self.op {
            ConstraintOp::Unique => count(value) == 0,
            ConstraintOp::Cluster(Some(want)) | ConstraintOp::Is(want) => value == want,
            ConstraintOp::Cluster(None) => placed
                .first()
                .is_none_or(|first| first.value(&self.field) == Some(value)),
            ConstraintOp::Like(p) => p.full_match(value),
            ConstraintOp::Unlike(p) => !p.full_match(value),
            ConstraintOp::MaxPer(n) => count(value) < *n as usize,
            ConstraintOp::GroupBy(n) => {
                let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
                for a in placed {
                    if let Some(v) = a.value(&self.field) {
                        *groups.entry(v).or_default() += 1;
                    }
                }
                let here = groups.get(value).copied();
                match n {
                    None => here.is_none_or(|c| groups.values().all(|other| c <= *other)),
                    Some(n) => {
                        let n = (*n).max(1) as usize;
                        let per = instances as usize / n;
                        let remainder = instances as usize % n;
                        let used: usize = groups.values().map(|c| c.saturating_sub(per)).sum();
                        match here {
                            Some(c) => c < per || (c == per && remainder > used),
                            None => groups.len() < n,
                        }
                    }
                }
            }
        }
    }
}

/// Whether every constraint allows `candidate`.
pub fn allows_all(
    constraints: &[Constraint],
    candidate: &AgentView,
    placed: &[&AgentView],
    instances: u32,
) -> bool {
    constraints
        .iter()
        .all(|c| c.allows(candidate, placed, instances))
}

/// Why no placement can ever meet `constraints` for `instances`
/// instances, whatever the cluster: one message per contradicting pair of
/// constraints on one field, naming both by their index. Only what is
/// provably impossible is reported: two different values asked for
/// (`CLUSTER`/`IS`), a value asked for that a `LIKE` refuses or an
/// `UNLIKE` takes, and one value for all instances (`CLUSTER`/`IS`) with
/// `UNIQUE` or `MAX_PER n` for more than 1 or `n` instances.
pub fn contradictions(constraints: &[Constraint], instances: u32) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in constraints.iter().enumerate() {
        for (j, b) in constraints.iter().enumerate().skip(i + 1) {
            if a.field != b.field {
                continue;
            }
            if let Some(why) =
                contradiction(a, b, instances).or_else(|| contradiction(b, a, instances))
            {
                out.push(format!(
                    "{i} ({}) and {j} ({}) can never both hold: {why}",
                    a.text(),
                    b.text()
                ));
            }
        }
    }
    out
}

/// Why `a` and `b` (on one field) can never both hold, if they cannot;
/// checked in one order only (the caller tries both).
fn contradiction(a: &Constraint, b: &Constraint, instances: u32) -> Option<String> {
    let field = quoted(&a.field);
    let pinned = |c: &Constraint| match &c.op {
        ConstraintOp::Cluster(Some(v)) | ConstraintOp::Is(v) => Some(v.clone()),
        _ => None,
    };
    let one_value = matches!(a.op, ConstraintOp::Cluster(_) | ConstraintOp::Is(_));
    if let Some(v) = pinned(a) {
        match &b.op {
            ConstraintOp::Cluster(Some(w)) | ConstraintOp::Is(w) if *w != v => {
                return Some(format!(
                    "{field} cannot be both {} and {}",
                    quoted(&v),
                    quoted(w)
                ));
            }
            ConstraintOp::Like(p) if !p.full_match(&v) => {
                return Some(format!(
                    "{} does not match {}",
                    quoted(&v),
                    quoted(p.source())
                ));
            }
            ConstraintOp::Unlike(p) if p.full_match(&v) => {
                return Some(format!("{} matches {}", quoted(&v), quoted(p.source())));
            }
            _ => {}
        }
    }
    if one_value {
        match b.op {
            ConstraintOp::Unique if instances > 1 => {
                return Some(format!(
                    "{instances} instances on one {field} value cannot each have their own"
                ));
            }
            ConstraintOp::MaxPer(n) if instances > n => {
                return Some(format!(
                    "{instances} instances on one {field} value exceed its {n} per value"
                ));
            }
            _ => {}
        }
    }
    None
}

impl Constraint {
    /// The constraint as Marathon writes it: `field OP value`.
    fn text(&self) -> String {
        match self.op.value() {
            Some(v) => format!("{} {} {v}", self.field, self.op.name()),
            None => format!("{} {}", self.field, self.op.name()),
        }
    }
}

/// `constraints`: an array of `[field, OP, value?]` arrays.
pub(super) fn parse_list(ctx: &mut Ctx, v: &Value, path: &str) -> Option<Vec<Constraint>> {
    let items = read::array(ctx, v, path, 64)?;
    let before = ctx.errors.len();
    let mut out: Vec<Constraint> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let p = item(path, i);
        if let Some(c) = parse_one(ctx, it, &p) {
            if out.contains(&c) {
                ctx.err(&p, "is given twice");
            }
            out.push(c);
        }
    }
    (ctx.errors.len() == before).then_some(out)
}

fn parse_one(ctx: &mut Ctx, v: &Value, p: &str) -> Option<Constraint> {
    let parts = read::strings(ctx, v, p, 3, |_, s, _| Some(s))?;
    let (field, op, value) = match parts.as_slice() {
        [f, o] => (f, o, None),
        [f, o, v] => (f, o, Some(v.as_str())),
        _ => {
            ctx.err(p, "must be [field, operator] or [field, operator, value]");
            return None;
        }
    };
    if field.is_empty() || field.len() > 255 {
        ctx.err(&item(p, 0), "field must be 1 to 255 bytes");
        return None;
    }
    let field = if field == "@hostname" {
        "hostname"
    } else {
        field.as_str()
    };
    let vp = item(p, 2);
    let need = |ctx: &mut Ctx| -> Option<String> {
        match value {
            Some(v) if !v.is_empty() => Some(v.to_string()),
            _ => {
                ctx.err(&vp, format!("{op} needs a value"));
                None
            }
        }
    };
    let number = |ctx: &mut Ctx, v: &str, min: u32| -> Option<u32> {
        match v.parse::<u32>() {
            Ok(n) if n >= min => Some(n),
            _ => {
                ctx.err(
                    &vp,
                    format!("{} is not an integer of at least {min}", quoted(v)),
                );
                None
            }
        }
    };
    let regex = |ctx: &mut Ctx, v: String| match Pattern::new(&v) {
        Ok(p) => Some(p),
        Err(e) => {
            ctx.err(&vp, e);
            None
        }
    };
    let op = match op.as_str() {
        "UNIQUE" => {
            if value.is_some_and(|v| !v.is_empty()) {
                ctx.err(&vp, "UNIQUE takes no value");
                return None;
            }
            ConstraintOp::Unique
        }
        "CLUSTER" => ConstraintOp::Cluster(value.filter(|v| !v.is_empty()).map(str::to_string)),
        "GROUP_BY" => match value.filter(|v| !v.is_empty()) {
            None => ConstraintOp::GroupBy(None),
            Some(v) => ConstraintOp::GroupBy(Some(number(ctx, v, 1)?)),
        },
        "LIKE" => {
            let v = need(ctx)?;
            ConstraintOp::Like(regex(ctx, v)?)
        }
        "UNLIKE" => {
            let v = need(ctx)?;
            ConstraintOp::Unlike(regex(ctx, v)?)
        }
        "MAX_PER" => {
            let v = need(ctx)?;
            ConstraintOp::MaxPer(number(ctx, &v, 1)?)
        }
        "IS" => ConstraintOp::Is(need(ctx)?),
        other => {
            ctx.err(
                &item(p, 1),
                format!(
                    "{} is not UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS",
                    quoted(other)
                ),
            );
            return None;
        }
    };
    Some(Constraint {
        field: field.to_string(),
        op,
    })
}

#[cfg(test)]
mod tests;
