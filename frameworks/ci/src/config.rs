//! Parsing and validating a `.gitlab-ci.yml` into a [`Config`].
//!
//! The steps: YAML to a spanned tree (anchors, aliases, `<<` merges), then
//! `!reference` tags, then `extends` (deep merge of mappings, lists
//! replaced), then `default:`, then each job's keywords are checked and
//! typed, then the cross-job checks (stages, needs, dependencies).
//! `extends` chains are checked for cycles, missing parents and depth
//! ([`ParseOptions::max_extends_depth`]); every problem is a [`Diagnostic`]
//! with its line and column. Size, node and nesting limits are
//! [`ParseOptions`].
//!
//! Supported: the job keywords of `JOB_KEYS`, `default:` with those of
//! `DEFAULT_KEYS`, the global keywords of `GLOBAL_KEYS`, `workflow:rules`,
//! YAML anchors, `<<` and `!reference`. Among the sub-keywords:
//! `artifacts` (`paths`, `exclude`, `expire_in`, `when`, `name`,
//! `reports:junit`, `reports:dotenv`), `cache` (`key`, `key:files`, `paths`, `policy`,
//! `when`; up to 4 caches), `rules` (`if`, `changes`, `exists`, `when`,
//! `allow_failure`, `variables`, `start_in`), `allow_failure:exit_codes`,
//! `retry` (`max`, `when`, `exit_codes`), `parallel:matrix` and
//! `services` (see the `services` module).
//!
//! `include` is merged in before all this by the `include` module
//! ([`Config::parse_in`]); [`Config::parse`] refuses a file with `include`.
//!
//! Keywords GitLab knows and berth does not support are warned about and
//! ignored rather than refused, so an unchanged file still runs:
//! `UNSUPPORTED_JOB_KEYS` (a job with `trigger` is skipped), the `spec`
//! header, `artifacts:untracked` and report types other than `junit` and
//! `dotenv`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::diag::{Diagnostic, Pos, suggest};
use crate::expr::Expr;
use crate::model::{
    AllowFailure, Artifacts, ArtifactsWhen, CachePolicy, CacheWhen, Environment, Image,
    RETRY_REASONS, Retry, Trigger, When,
};
use crate::vars::{is_name, parse_duration};
use crate::yaml::{self, Key, Kind, Limits, Node};

mod reports;
mod services;
pub(crate) use services::{ServiceSpec, plan_services};
mod trigger;

/// Limits applied while parsing, so a hostile file is refused quickly.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions {
    /// The largest file accepted, in bytes (default 1 MiB).
    pub max_bytes: usize,
    /// The most YAML nodes the document may expand to once aliases and
    /// `!reference`s are copied (default 200,000).
    pub max_nodes: usize,
    /// The deepest nesting of lists and mappings (default 64).
    pub max_depth: usize,
    /// The longest `extends` chain (default 11, as GitLab).
    pub max_extends_depth: usize,
    /// The most jobs a pipeline may have once `parallel` is expanded
    /// (default 1,000).
    pub max_jobs: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_nodes: 200_000,
            max_depth: 64,
            max_extends_depth: 11,
            max_jobs: 1000,
        }
    }
}

/// The most jobs one `parallel` keyword may create (as GitLab).
pub const MAX_PARALLEL: usize = 200;

/// A variable definition from the file.
#[derive(Debug, Clone)]
pub(crate) struct VarDef {
    pub(crate) name: String,
    pub(crate) value: String,
    /// `expand: false` keeps `$` references literal.
    pub(crate) expand: bool,
}

/// One `rules:` entry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule {
    pub(crate) if_expr: Option<Expr>,
    pub(crate) changes: Option<Vec<String>>,
    pub(crate) exists: Option<Vec<String>>,
    pub(crate) when: Option<When>,
    pub(crate) start_in: Option<Duration>,
    pub(crate) allow_failure: Option<bool>,
    pub(crate) variables: Vec<VarDef>,
}

/// `only:` / `except:`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RefFilter {
    pub(crate) refs: Option<Vec<String>>,
    pub(crate) variables: Option<Vec<Expr>>,
    pub(crate) changes: Option<Vec<String>>,
}

/// A `needs:` entry.
#[derive(Debug, Clone)]
pub(crate) struct NeedSpec {
    pub(crate) job: String,
    pub(crate) artifacts: bool,
    pub(crate) optional: bool,
    pub(crate) pos: Pos,
}

/// A cache key as written.
#[derive(Debug, Clone)]
pub(crate) enum CacheKeySpec {
    Text(String),
    Files {
        files: Vec<String>,
        prefix: Option<String>,
    },
}

/// A `cache:` entry as written.
#[derive(Debug, Clone)]
pub(crate) struct CacheSpec {
    pub(crate) key: CacheKeySpec,
    pub(crate) paths: Vec<String>,
    pub(crate) policy: CachePolicy,
    pub(crate) when: CacheWhen,
}

/// `parallel:` as written.
#[derive(Debug, Clone)]
pub(crate) enum Parallel {
    Count(usize),
    /// Each entry: variables with their list of values, in file order.
    Matrix(Vec<Vec<(String, Vec<String>)>>),
}

/// A visible job, after `extends` and `default:`.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    pub(crate) name: String,
    pub(crate) pos: Pos,
    pub(crate) stage: String,
    pub(crate) stage_pos: Pos,
    pub(crate) image: Option<Image>,
    pub(crate) variables: Vec<VarDef>,
    pub(crate) before_script: Vec<String>,
    pub(crate) script: Vec<String>,
    pub(crate) after_script: Vec<String>,
    pub(crate) needs: Option<Vec<NeedSpec>>,
    pub(crate) dependencies: Option<Vec<(String, Pos)>>,
    pub(crate) artifacts: Option<Artifacts>,
    pub(crate) caches: Vec<CacheSpec>,
    pub(crate) rules: Option<Vec<Rule>>,
    pub(crate) only: Option<RefFilter>,
    pub(crate) except: Option<RefFilter>,
    pub(crate) when: When,
    pub(crate) start_in: Option<Duration>,
    pub(crate) allow_failure: Option<AllowFailure>,
    pub(crate) retry: Retry,
    pub(crate) timeout: Option<Duration>,
    pub(crate) parallel: Option<Parallel>,
    pub(crate) tags: Vec<String>,
    pub(crate) environment: Option<Environment>,
    pub(crate) interruptible: bool,
    pub(crate) resource_group: Option<String>,
    pub(crate) services: Vec<ServiceSpec>,
    pub(crate) trigger: Option<Trigger>,
    pub(crate) coverage: Option<String>,
    /// The warnings about this job: what berth ignores of it.
    pub(crate) notices: Vec<String>,
}

/// A parsed, validated pipeline file. Make a [`crate::Plan`] of it with
/// [`Config::plan`](crate::Config::plan).
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) stages: Vec<String>,
    pub(crate) variables: Vec<VarDef>,
    pub(crate) workflow: Option<Vec<Rule>>,
    pub(crate) jobs: Vec<JobSpec>,
    /// The files merged in by `include`, in the order they were read.
    pub(crate) included: Vec<String>,
    /// Whether an `include` had `rules` (evaluated against the context the
    /// file was parsed with).
    pub(crate) include_rules: bool,
}

/// Keywords a job may use that berth supports.
const JOB_KEYS: &[&str] = &[
    "script",
    "before_script",
    "after_script",
    "stage",
    "image",
    "variables",
    "needs",
    "dependencies",
    "artifacts",
    "cache",
    "rules",
    "only",
    "except",
    "when",
    "start_in",
    "allow_failure",
    "retry",
    "timeout",
    "parallel",
    "tags",
    "environment",
    "interruptible",
    "resource_group",
    "services",
    "extends",
    "coverage",
    "trigger",
];

/// Keywords GitLab knows that berth does not support (warned, ignored).
const UNSUPPORTED_JOB_KEYS: &[(&str, &str)] = &[
    ("release", "`release` is not supported and is ignored"),
    (
        "secrets",
        "external `secrets` are not supported; use berth's secret variables",
    ),
    ("id_tokens", "`id_tokens` are not supported and are ignored"),
    ("hooks", "`hooks` are not supported and are ignored"),
    (
        "inherit",
        "`inherit` is not supported: the job inherits every `default` and global variable",
    ),
    (
        "pages",
        "`pages` publishing is not supported and is ignored",
    ),
    (
        "dast_configuration",
        "`dast_configuration` is not supported and is ignored",
    ),
    ("identity", "`identity` is not supported and is ignored"),
    (
        "manual_confirmation",
        "`manual_confirmation` is not supported and is ignored",
    ),
    ("run", "`run` steps are not supported and are ignored"),
];

/// Keys of `default:`.
const DEFAULT_KEYS: &[&str] = &[
    "image",
    "before_script",
    "after_script",
    "cache",
    "artifacts",
    "retry",
    "timeout",
    "interruptible",
    "tags",
    "services",
];

/// Global keywords that are not jobs.
const GLOBAL_KEYS: &[&str] = &[
    "stages",
    "variables",
    "default",
    "workflow",
    "include",
    "image",
    "services",
    "before_script",
    "after_script",
    "cache",
    "spec",
];

/// The diagnostics of a parse.
pub(crate) struct Ctx {
    pub(crate) diags: Vec<Diagnostic>,
}

impl Ctx {
    pub(crate) fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(pos, message));
    }
    pub(crate) fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic::warning(pos, message));
    }
}

impl Config {
    /// Parses and validates a pipeline file. On success, the config and its
    /// warnings; on failure, every error found (and the warnings), sorted by
    /// position.
    pub fn parse(
        text: &str,
        options: &ParseOptions,
    ) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut cx = Ctx { diags: Vec::new() };
        let config = parse_inner(text, options, &mut cx);
        finish(config, cx.diags)
    }

    /// The stages, `.pre` first and `.post` last.
    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    /// The visible jobs' names, in file order.
    pub fn job_names(&self) -> impl Iterator<Item = &str> {
        self.jobs.iter().map(|j| j.name.as_str())
    }

    /// The files `include` merged in (repository paths, in the order they
    /// were read; a file included twice is listed twice).
    pub fn included_files(&self) -> &[String] {
        &self.included
    }

    /// Whether an `include` had `rules`, evaluated against the [`Context`]
    /// given to [`Config::parse_in`](crate::Config::parse_in).
    ///
    /// [`Context`]: crate::Context
    pub fn has_include_rules(&self) -> bool {
        self.include_rules
    }

    /// The stages that have at least one job.
    pub fn used_stages(&self) -> Vec<&str> {
        self.stages
            .iter()
            .filter(|s| self.jobs.iter().any(|j| &j.stage == *s))
            .map(String::as_str)
            .collect()
    }
}

/// The result of a parse: the config and its warnings, or every diagnostic
/// (sorted by file and position) when one is an error.
pub(crate) fn finish(
    config: Option<Config>,
    mut diags: Vec<Diagnostic>,
) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    diags.sort_by_key(|d| d.pos);
    match config {
        Some(c) if !diags.iter().any(Diagnostic::is_error) => Ok((c, diags)),
        _ => Err(diags),
    }
}

fn parse_inner(text: &str, options: &ParseOptions, cx: &mut Ctx) -> Option<Config> {
    let root = document_root(text, options, 0, cx)?;
    if let Some((key, _)) = root
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.name == "include"))
    {
        cx.error(
            key.pos,
            "`include` needs the repository to read the included files from, and this file is parsed without one",
        );
        return None;
    }
    build(root, options, cx)
}

/// The root mapping of a pipeline file (`file`: its index in the parse,
/// see [`Pos`]); None after an error. Every node's position names `file`.
pub(crate) fn document_root(
    text: &str,
    options: &ParseOptions,
    file: u16,
    cx: &mut Ctx,
) -> Option<Node> {
    let limits = Limits {
        max_bytes: options.max_bytes,
        max_nodes: options.max_nodes,
        max_depth: options.max_depth,
    };
    let docs = match yaml::parse(text, limits) {
        Ok(mut docs) => {
            for d in &mut docs {
                d.set_file(file);
            }
            docs
        }
        Err(mut e) => {
            e.pos.file = file;
            cx.diags.push(e);
            return None;
        }
    };
    let start = Pos {
        file,
        ..Pos::new(1, 1)
    };
    let mut docs = docs.into_iter();
    let root = match (docs.next(), docs.next()) {
        (None, _) => {
            cx.error(start, "the file is empty");
            return None;
        }
        (Some(only), None) => only,
        (Some(first), Some(second)) => {
            if first.get("spec").is_some() {
                cx.warn(
                    first.pos,
                    "the `spec` header (inputs) is not supported and is ignored",
                );
            } else {
                cx.error(second.pos, "the file has more than one YAML document");
                return None;
            }
            if let Some(third) = docs.next() {
                cx.error(third.pos, "the file has more than one YAML document");
                return None;
            }
            second
        }
    };
    if root.as_map().is_none() {
        cx.error(
            root.pos,
            format!(
                "the file must be a mapping of keywords and jobs, not {}",
                root.describe()
            ),
        );
        return None;
    }
    Some(root)
}

/// The config of a root mapping (the main file with its includes merged).
pub(crate) fn build(root: Node, options: &ParseOptions, cx: &mut Ctx) -> Option<Config> {
    let start = Pos::new(1, 1);
    let mut budget = options.max_nodes;
    let root = match resolve_references(&root, &root, 0, &mut budget) {
        Ok(mut nodes) if nodes.len() == 1 => nodes.remove(0),
        Ok(_) => return None,
        Err(e) => {
            cx.diags.push(e);
            return None;
        }
    };
    let entries = root.as_map().unwrap_or_default();

    // Global keywords.
    let mut stages = vec![".pre".to_string()];
    let mut variables = Vec::new();
    let mut workflow = None;
    let mut defaults: Vec<(Key, Node)> = Vec::new();
    let mut global_defaults: Vec<(Key, Node)> = Vec::new();
    let mut templates: HashMap<String, Node> = HashMap::new();
    let mut visible: Vec<(Key, Node)> = Vec::new();
    for (key, value) in entries {
        match key.name.as_str() {
            "stages" => {
                if let Some(list) = string_list(cx, value, "stages") {
                    for (s, pos) in list {
                        if s == ".pre" || s == ".post" {
                            continue;
                        }
                        if stages.contains(&s) {
                            cx.error(pos, format!("the stage `{s}` is listed twice"));
                        } else {
                            stages.push(s);
                        }
                    }
                }
            }
            "variables" => variables = parse_variables(cx, value),
            "workflow" => workflow = parse_workflow(cx, value),
            "default" => {
                if let Some(map) = expect_map(cx, value, "`default`") {
                    for (k, v) in map {
                        if DEFAULT_KEYS.contains(&k.name.as_str()) {
                            defaults.push((k.clone(), v.clone()));
                        } else if let Some((_, why)) =
                            UNSUPPORTED_JOB_KEYS.iter().find(|(n, _)| *n == k.name)
                        {
                            cx.warn(k.pos, *why);
                        } else {
                            unknown_key(cx, k, DEFAULT_KEYS, "`default`");
                        }
                    }
                }
            }
            // Merged in before (`include` module).
            "include" => {}
            "spec" => cx.warn(
                key.pos,
                "the `spec` header (inputs) is not supported and is ignored",
            ),
            "image" | "services" | "before_script" | "after_script" | "cache" => {
                global_defaults.push((key.clone(), value.clone()));
            }
            name if name.starts_with('.') => {
                templates.insert(name.to_string(), value.clone());
            }
            name => {
                if value.as_map().is_none() {
                    let hint = suggest(name, GLOBAL_KEYS)
                        .map(|s| format!(" (did you mean the keyword `{s}`?)"))
                        .unwrap_or_default();
                    cx.error(
                        key.pos,
                        format!(
                            "the job `{name}` must be a mapping of keywords, not {}{hint}",
                            value.describe()
                        ),
                    );
                    continue;
                }
                if name == "pages" {
                    cx.warn(
                        key.pos,
                        "the `pages` job has no special meaning in berth: it runs as an ordinary job and nothing is published",
                    );
                }
                templates.insert(name.to_string(), value.clone());
                visible.push((key.clone(), value.clone()));
            }
        }
    }
    for (k, v) in global_defaults {
        if !defaults.iter().any(|(d, _)| d.name == k.name) {
            defaults.push((k, v));
        }
    }
    stages.push(".post".to_string());
    if stages.len() == 2 && !entries.iter().any(|(k, _)| k.name == "stages") {
        stages = [".pre", "build", "test", "deploy", ".post"]
            .map(String::from)
            .to_vec();
    }

    // Jobs: extends, defaults, keywords.
    let mut resolver = Extends {
        templates: &templates,
        done: HashMap::new(),
        max_depth: options.max_extends_depth,
    };
    let mut jobs = Vec::new();
    let mut expanded_nodes = 0usize;
    let default_nodes: usize = defaults.iter().map(|(_, v)| 1 + count(v)).sum();
    for (key, _) in &visible {
        let Some(node) = resolver.resolve(cx, &key.name, &mut Vec::new()) else {
            continue;
        };
        // `extends` and `default` copy nodes into every job: keep the total
        // within the same budget as aliases.
        expanded_nodes = expanded_nodes.saturating_add(count(&node) + default_nodes);
        if expanded_nodes > options.max_nodes {
            cx.error(
                key.pos,
                format!(
                    "the jobs expand (through `extends` and `default`) to more than {} nodes",
                    options.max_nodes
                ),
            );
            return None;
        }
        let mut entries = node.as_map().map(<[_]>::to_vec).unwrap_or_default();
        for (k, v) in &defaults {
            if !entries.iter().any(|(e, _)| e.name == k.name) {
                entries.push((k.clone(), v.clone()));
            }
        }
        let node = Node {
            kind: Kind::Map(entries),
            pos: key.pos,
            tag: None,
        };
        if let Some(job) = parse_job(cx, &key.name, key.pos, &node) {
            jobs.push(job);
        }
    }
    if visible.is_empty() {
        cx.error(
            start,
            "the file defines no job (names starting with `.` are hidden templates)",
        );
    }
    let defined: HashSet<&str> = visible.iter().map(|(k, _)| k.name.as_str()).collect();
    check_jobs(cx, &stages, &jobs, &defined);
    let total: usize = jobs
        .iter()
        .map(|j| match &j.parallel {
            None => 1,
            Some(Parallel::Count(n)) => *n,
            Some(Parallel::Matrix(m)) => m
                .iter()
                .map(|e| e.iter().map(|(_, v)| v.len()).product::<usize>())
                .sum(),
        })
        .sum();
    if total > options.max_jobs {
        cx.error(
            start,
            format!(
                "the pipeline has {total} jobs once `parallel` is expanded; the limit is {}",
                options.max_jobs
            ),
        );
    }
    Some(Config {
        stages,
        variables,
        workflow,
        jobs,
        included: Vec::new(),
        include_rules: false,
    })
}

/// Replaces `!reference [.job, key, ...]` nodes by what they point to. In a
/// list, a reference to a list is spliced in (as GitLab flattens scripts).
fn resolve_references(
    node: &Node,
    root: &Node,
    depth: usize,
    budget: &mut usize,
) -> Result<Vec<Node>, Diagnostic> {
    if node.tag.as_deref() == Some("reference") {
        if depth >= 10 {
            return Err(Diagnostic::error(
                node.pos,
                "`!reference` tags nest more than 10 deep",
            ));
        }
        let path = node.as_seq().unwrap_or_default();
        if path.is_empty() || path.iter().any(|p| p.as_str().is_none()) {
            return Err(Diagnostic::error(
                node.pos,
                "`!reference` needs a list of keys, e.g. `!reference [.setup, script]`",
            ));
        }
        let mut target = root;
        for p in path {
            let name = p.as_str().unwrap_or_default();
            target = target.get(name).ok_or_else(|| {
                Diagnostic::error(
                    p.pos,
                    format!("`!reference` names `{name}`, which does not exist there"),
                )
            })?;
        }
        let resolved = resolve_references(target, root, depth + 1, budget)?;
        let mut out = Vec::new();
        for mut n in resolved {
            charge(&n, budget, node.pos)?;
            n.pos = node.pos;
            out.push(n);
        }
        return Ok(out);
    }
    let kind = match &node.kind {
        Kind::Scalar(..) => return Ok(vec![node.clone()]),
        Kind::Seq(items) => {
            let mut out = Vec::new();
            for item in items {
                let is_ref = item.tag.as_deref() == Some("reference");
                for r in resolve_references(item, root, depth, budget)? {
                    match (is_ref, r.kind) {
                        (true, Kind::Seq(inner)) => out.extend(inner),
                        (_, kind) => out.push(Node { kind, ..r }),
                    }
                }
            }
            Kind::Seq(out)
        }
        Kind::Map(entries) => {
            let mut out = Vec::new();
            for (k, v) in entries {
                let mut r = resolve_references(v, root, depth, budget)?;
                out.push((k.clone(), r.remove(0)));
            }
            Kind::Map(out)
        }
    };
    Ok(vec![Node {
        kind,
        pos: node.pos,
        tag: node.tag.clone(),
    }])
}

pub(crate) fn count(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar(..) => 1,
        Kind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Map(m) => 1 + m.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
    }
}

fn charge(node: &Node, budget: &mut usize, pos: Pos) -> Result<(), Diagnostic> {
    let n = count(node);
    if n > *budget {
        return Err(Diagnostic::error(
            pos,
            "`!reference` tags expand the document beyond the node limit",
        ));
    }
    *budget -= n;
    Ok(())
}

struct Extends<'a> {
    templates: &'a HashMap<String, Node>,
    done: HashMap<String, Option<Node>>,
    max_depth: usize,
}

impl Extends<'_> {
    /// The job `name` with its `extends` chain merged in (None after an
    /// error, which is reported once).
    fn resolve(&mut self, cx: &mut Ctx, name: &str, chain: &mut Vec<String>) -> Option<Node> {
        if let Some(done) = self.done.get(name) {
            return done.clone();
        }
        let node = self.templates.get(name)?.clone();
        let Some(entries) = node.as_map() else {
            return Some(node);
        };
        let Some(ext) = node.get("extends") else {
            self.done.insert(name.to_string(), Some(node.clone()));
            return Some(node);
        };
        let parents: Vec<(String, Pos)> = match &ext.kind {
            Kind::Scalar(s, _) if !ext.is_null() => vec![(s.clone(), ext.pos)],
            Kind::Seq(items) if items.iter().all(|i| i.as_str().is_some()) => items
                .iter()
                .map(|i| (i.as_str().unwrap_or_default().to_string(), i.pos))
                .collect(),
            _ => {
                cx.error(
                    ext.pos,
                    "`extends` must be a job name or a list of job names",
                );
                self.done.insert(name.to_string(), None);
                return None;
            }
        };
        chain.push(name.to_string());
        let mut merged: Option<Node> = None;
        let mut failed = false;
        for (parent, pos) in parents {
            if chain.contains(&parent) {
                cx.error(
                    pos,
                    format!(
                        "`extends` forms a cycle: {} -> {parent}",
                        chain.join(" -> ")
                    ),
                );
                failed = true;
                continue;
            }
            if chain.len() >= self.max_depth {
                cx.error(
                    pos,
                    format!("`extends` nests more than {} levels deep", self.max_depth),
                );
                failed = true;
                continue;
            }
            if !self.templates.contains_key(&parent) {
                let names: Vec<&str> = self.templates.keys().map(String::as_str).collect();
                let hint = suggest(&parent, &names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                cx.error(
                    pos,
                    format!("`extends` names `{parent}`, which is not defined{hint}"),
                );
                failed = true;
                continue;
            }
            match self.resolve(cx, &parent, chain) {
                Some(p) if p.as_map().is_some() => {
                    merged = Some(match merged {
                        None => p,
                        Some(m) => crate::include::merge(m, p),
                    });
                }
                Some(p) => {
                    cx.error(
                        pos,
                        format!(
                            "`extends` names `{parent}`, which is {}, not a job",
                            p.describe()
                        ),
                    );
                    failed = true;
                }
                None => failed = true,
            }
        }
        chain.pop();
        let own = Node {
            kind: Kind::Map(
                entries
                    .iter()
                    .filter(|(k, _)| k.name != "extends")
                    .cloned()
                    .collect(),
            ),
            pos: node.pos,
            tag: None,
        };
        let result = if failed {
            None
        } else {
            Some(match merged {
                None => own,
                Some(m) => crate::include::merge(m, own),
            })
        };
        self.done.insert(name.to_string(), result.clone());
        result
    }
}

fn expect_map<'a>(cx: &mut Ctx, node: &'a Node, what: &str) -> Option<&'a [(Key, Node)]> {
    let m = node.as_map();
    if m.is_none() {
        cx.error(
            node.pos,
            format!("{what} must be a mapping, not {}", node.describe()),
        );
    }
    m
}

pub(crate) fn unknown_key(cx: &mut Ctx, key: &Key, known: &[&str], within: &str) {
    let hint = suggest(&key.name, known)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    cx.error(
        key.pos,
        format!("unknown key `{}` in {within}{hint}", key.name),
    );
}

/// A scalar as a string (numbers and bools as written); errors otherwise.
pub(crate) fn scalar(cx: &mut Ctx, node: &Node, what: &str) -> Option<String> {
    match node.as_str() {
        Some(s) => Some(s.to_string()),
        None => {
            cx.error(
                node.pos,
                format!("{what} must be a string, not {}", node.describe()),
            );
            None
        }
    }
}

fn string_list(cx: &mut Ctx, node: &Node, what: &str) -> Option<Vec<(String, Pos)>> {
    let Some(items) = node.as_seq() else {
        cx.error(
            node.pos,
            format!(
                "`{what}` must be a list of strings, not {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    for item in items {
        out.push((
            scalar(cx, item, &format!("an entry of `{what}`"))?,
            item.pos,
        ));
    }
    Some(out)
}

/// A string or a list of strings.
fn one_or_list(cx: &mut Ctx, node: &Node, what: &str) -> Option<Vec<String>> {
    if node.as_seq().is_some() {
        string_list(cx, node, what).map(|l| l.into_iter().map(|(s, _)| s).collect())
    } else {
        scalar(cx, node, &format!("`{what}`")).map(|s| vec![s])
    }
}

fn bool_value(cx: &mut Ctx, node: &Node, what: &str) -> Option<bool> {
    let b = node.as_bool();
    if b.is_none() {
        cx.error(node.pos, format!("`{what}` must be true or false"));
    }
    b
}

fn duration(cx: &mut Ctx, node: &Node, what: &str) -> Option<Duration> {
    let text = scalar(cx, node, &format!("`{what}`"))?;
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            cx.error(node.text_column_pos(), format!("`{what}`: {e}"));
            None
        }
    }
}

trait TextPos {
    fn text_column_pos(&self) -> Pos;
}

impl TextPos for Node {
    fn text_column_pos(&self) -> Pos {
        Pos {
            column: self.text_column(),
            ..self.pos
        }
    }
}

pub(crate) fn parse_variables(cx: &mut Ctx, node: &Node) -> Vec<VarDef> {
    let Some(map) = node.as_map() else {
        if !node.is_null() {
            cx.error(
                node.pos,
                format!(
                    "`variables` must be a mapping of names to values, not {}",
                    node.describe()
                ),
            );
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in map {
        if !is_name(&k.name) {
            cx.error(
                k.pos,
                format!(
                    "`{}` is not a valid variable name (use letters, digits and `_`)",
                    k.name
                ),
            );
            continue;
        }
        let (value, expand) = match &v.kind {
            Kind::Scalar(..) if v.is_null() => (String::new(), true),
            Kind::Scalar(s, _) => (s.clone(), true),
            Kind::Map(fields) => {
                let mut value = None;
                let mut expand = true;
                for (fk, fv) in fields {
                    match fk.name.as_str() {
                        "value" => value = scalar(cx, fv, "a variable's `value`"),
                        "expand" => expand = bool_value(cx, fv, "expand").unwrap_or(true),
                        "description" | "options" => {}
                        _ => unknown_key(
                            cx,
                            fk,
                            &["value", "description", "expand", "options"],
                            "a variable",
                        ),
                    }
                }
                (value.unwrap_or_default(), expand)
            }
            Kind::Seq(_) => {
                cx.error(
                    v.pos,
                    format!(
                        "the variable `{}` must be a string, number or bool, not a list",
                        k.name
                    ),
                );
                continue;
            }
        };
        out.push(VarDef {
            name: k.name.clone(),
            value,
            expand,
        });
    }
    out
}

fn parse_expr(cx: &mut Ctx, node: &Node) -> Option<Expr> {
    let text = scalar(cx, node, "`if`")?;
    match Expr::parse(&text) {
        Ok(e) => Some(e),
        Err(e) => {
            // Exact for one-line plain and quoted scalars; an escape in a
            // double-quoted scalar shifts the column.
            let column = node.text_column() + u32::try_from(e.offset).unwrap_or(0);
            cx.error(
                Pos { column, ..node.pos },
                format!("invalid `if` expression: {}", e.message),
            );
            None
        }
    }
}

pub(crate) fn parse_rules(cx: &mut Ctx, node: &Node, workflow: bool) -> Option<Vec<Rule>> {
    let Some(items) = node.as_seq() else {
        cx.error(
            node.pos,
            format!("`rules` must be a list, not {}", node.describe()),
        );
        return None;
    };
    let known: &[&str] = if workflow {
        &["if", "changes", "exists", "when", "variables"]
    } else {
        &[
            "if",
            "changes",
            "exists",
            "when",
            "allow_failure",
            "variables",
            "start_in",
        ]
    };
    let mut rules = Vec::new();
    for item in items {
        let Some(map) = expect_map(cx, item, "a rule") else {
            continue;
        };
        let mut rule = Rule::default();
        for (k, v) in map {
            match k.name.as_str() {
                "if" => rule.if_expr = parse_expr(cx, v),
                "changes" => {
                    let paths = match v.get("paths") {
                        Some(p) if v.as_map().is_some() => {
                            if let Some(c) = v.get("compare_to") {
                                cx.warn(c.pos, "`changes:compare_to` is not supported: changes are compared to the context's changed files");
                            }
                            p
                        }
                        _ => v,
                    };
                    rule.changes = string_list(cx, paths, "changes")
                        .map(|l| l.into_iter().map(|(s, _)| s).collect());
                }
                "exists" => {
                    let paths = match v.get("paths") {
                        Some(p) if v.as_map().is_some() => p,
                        _ => v,
                    };
                    rule.exists = string_list(cx, paths, "exists")
                        .map(|l| l.into_iter().map(|(s, _)| s).collect());
                }
                "when" => rule.when = parse_when(cx, v),
                "allow_failure" if !workflow => {
                    rule.allow_failure = bool_value(cx, v, "allow_failure");
                }
                "start_in" if !workflow => rule.start_in = duration(cx, v, "start_in"),
                "variables" => rule.variables = parse_variables(cx, v),
                "needs" | "interruptible" if !workflow => {
                    cx.warn(
                        k.pos,
                        format!("`rules:{}` is not supported and is ignored", k.name),
                    );
                }
                _ => unknown_key(cx, k, known, "a rule"),
            }
        }
        if workflow
            && let Some(w) = rule.when
            && !matches!(w, When::Always | When::Never)
        {
            cx.error(
                item.pos,
                "`workflow:rules:when` must be `always` or `never`",
            );
        }
        rules.push(rule);
    }
    Some(rules)
}

fn parse_workflow(cx: &mut Ctx, node: &Node) -> Option<Vec<Rule>> {
    let map = expect_map(cx, node, "`workflow`")?;
    let mut rules = None;
    for (k, v) in map {
        match k.name.as_str() {
            "rules" => rules = parse_rules(cx, v, true),
            "name" | "auto_cancel" => {
                cx.warn(
                    k.pos,
                    format!("`workflow:{}` is not supported and is ignored", k.name),
                );
            }
            _ => unknown_key(cx, k, &["rules", "name", "auto_cancel"], "`workflow`"),
        }
    }
    rules
}

fn parse_when(cx: &mut Ctx, node: &Node) -> Option<When> {
    let word = scalar(cx, node, "`when`")?;
    let w = When::parse(&word);
    if w.is_none() {
        cx.error(
            node.pos,
            format!("`when` must be one of on_success, on_failure, always, manual, never, delayed, not `{word}`"),
        );
    }
    w
}

/// A script: a string or a list of strings, nested lists flattened (up to
/// 10 levels, as GitLab).
fn parse_script(cx: &mut Ctx, node: &Node, what: &str) -> Option<Vec<String>> {
    fn walk(cx: &mut Ctx, node: &Node, what: &str, depth: usize, out: &mut Vec<String>) -> bool {
        match &node.kind {
            Kind::Seq(items) if depth < 10 => {
                items.iter().all(|i| walk(cx, i, what, depth + 1, out))
            }
            Kind::Scalar(s, _) if !node.is_null() => {
                out.push(s.clone());
                true
            }
            Kind::Map(_) => {
                cx.error(
                    node.pos,
                    format!("a line of `{what}` is a mapping; quote lines that contain `: `"),
                );
                false
            }
            _ => {
                cx.error(
                    node.pos,
                    format!(
                        "`{what}` must be a string or a list of strings (nested at most 10 deep)"
                    ),
                );
                false
            }
        }
    }
    let mut out = Vec::new();
    walk(cx, node, what, 0, &mut out).then_some(out)
}

fn parse_image(cx: &mut Ctx, node: &Node) -> Option<Image> {
    if let Some(name) = node.as_str() {
        return Some(Image {
            name: name.to_string(),
            entrypoint: None,
        });
    }
    let map = expect_map(cx, node, "`image`")?;
    let mut name = None;
    let mut entrypoint = None;
    for (k, v) in map {
        match k.name.as_str() {
            "name" => name = scalar(cx, v, "`image:name`"),
            "entrypoint" => entrypoint = one_or_list(cx, v, "entrypoint"),
            "pull_policy" | "docker" | "kubernetes" => {
                cx.warn(
                    k.pos,
                    format!("`image:{}` is not supported and is ignored", k.name),
                );
            }
            _ => unknown_key(cx, k, &["name", "entrypoint", "pull_policy"], "`image`"),
        }
    }
    match name {
        Some(name) => Some(Image { name, entrypoint }),
        None => {
            cx.error(node.pos, "`image` needs a `name`");
            None
        }
    }
}

fn exit_codes(cx: &mut Ctx, node: &Node) -> Vec<i32> {
    let items: Vec<&Node> = match node.as_seq() {
        Some(items) => items.iter().collect(),
        None => vec![node],
    };
    let mut out = Vec::new();
    for i in items {
        match i.as_int().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => out.push(n),
            None => cx.error(
                i.pos,
                "`exit_codes` must be an integer or a list of integers",
            ),
        }
    }
    out
}

fn parse_allow_failure(cx: &mut Ctx, node: &Node) -> Option<AllowFailure> {
    if let Some(b) = node.as_bool() {
        return Some(AllowFailure {
            any: b,
            exit_codes: Vec::new(),
        });
    }
    let Some(map) = node.as_map() else {
        cx.error(
            node.pos,
            "`allow_failure` must be true, false or `exit_codes: ...`",
        );
        return None;
    };
    let mut af = AllowFailure::default();
    for (k, v) in map {
        match k.name.as_str() {
            "exit_codes" => af.exit_codes = exit_codes(cx, v),
            _ => unknown_key(cx, k, &["exit_codes"], "`allow_failure`"),
        }
    }
    Some(af)
}

fn retry_max(cx: &mut Ctx, node: &Node) -> u8 {
    match node.as_int() {
        Some(n @ 0..=2) => u8::try_from(n).unwrap_or(0),
        _ => {
            cx.error(node.pos, "`retry` must be 0, 1 or 2");
            0
        }
    }
}

fn parse_retry(cx: &mut Ctx, node: &Node) -> Retry {
    if node.as_map().is_none() {
        return Retry {
            max: retry_max(cx, node),
            ..Retry::default()
        };
    }
    let mut retry = Retry::default();
    for (k, v) in node.as_map().unwrap_or_default() {
        match k.name.as_str() {
            "max" => retry.max = retry_max(cx, v),
            "when" => {
                for reason in one_or_list(cx, v, "retry:when").unwrap_or_default() {
                    if RETRY_REASONS.contains(&reason.as_str()) {
                        retry.when.push(reason);
                    } else {
                        let hint = suggest(&reason, RETRY_REASONS)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        cx.error(v.pos, format!("`{reason}` is not a retry reason{hint}"));
                    }
                }
            }
            "exit_codes" => retry.exit_codes = exit_codes(cx, v),
            _ => unknown_key(cx, k, &["max", "when", "exit_codes"], "`retry`"),
        }
    }
    retry
}

fn parse_artifacts(cx: &mut Ctx, node: &Node) -> Option<Artifacts> {
    let map = expect_map(cx, node, "`artifacts`")?;
    let mut a = Artifacts::default();
    let list = |cx: &mut Ctx, v: &Node, what: &str| {
        string_list(cx, v, what)
            .map(|l| l.into_iter().map(|(s, _)| s).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for (k, v) in map {
        match k.name.as_str() {
            "paths" => a.paths = list(cx, v, "artifacts:paths"),
            "exclude" => a.exclude = list(cx, v, "artifacts:exclude"),
            "expire_in" => {
                if v.as_str() == Some("never") {
                    a.expire_never = true;
                } else {
                    a.expire_in = duration(cx, v, "expire_in");
                }
            }
            "when" => {
                a.when = match v.as_str() {
                    Some("on_success") => ArtifactsWhen::OnSuccess,
                    Some("on_failure") => ArtifactsWhen::OnFailure,
                    Some("always") => ArtifactsWhen::Always,
                    _ => {
                        cx.error(
                            v.pos,
                            "`artifacts:when` must be on_success, on_failure or always",
                        );
                        ArtifactsWhen::OnSuccess
                    }
                }
            }
            "name" => a.name = scalar(cx, v, "`artifacts:name`"),
            "reports" => {
                for (rk, rv) in expect_map(cx, v, "`artifacts:reports`").unwrap_or_default() {
                    if rk.name == "junit" {
                        a.junit = one_or_list(cx, rv, "reports:junit").unwrap_or_default();
                    } else if rk.name == "dotenv" {
                        a.dotenv = one_or_list(cx, rv, "reports:dotenv").unwrap_or_default();
                    } else {
                        cx.warn(
                            rk.pos,
                            format!("`reports:{}` is not supported and is ignored", rk.name),
                        );
                    }
                }
            }
            "untracked" => cx.warn(
                k.pos,
                "`artifacts:untracked` is not supported: list the files in `paths`",
            ),
            "expose_as" | "public" | "access" => cx.warn(
                k.pos,
                format!("`artifacts:{}` is not supported and is ignored", k.name),
            ),
            _ => unknown_key(
                cx,
                k,
                &[
                    "paths",
                    "exclude",
                    "expire_in",
                    "when",
                    "name",
                    "reports",
                    "untracked",
                ],
                "`artifacts`",
            ),
        }
    }
    Some(a)
}

fn parse_cache_one(cx: &mut Ctx, node: &Node) -> Option<CacheSpec> {
    let map = expect_map(cx, node, "`cache`")?;
    let mut c = CacheSpec {
        key: CacheKeySpec::Text("default".to_string()),
        paths: Vec::new(),
        policy: CachePolicy::PullPush,
        when: CacheWhen::OnSuccess,
    };
    for (k, v) in map {
        match k.name.as_str() {
            "key" => {
                if let Some(s) = v.as_str() {
                    c.key = CacheKeySpec::Text(s.to_string());
                } else if let Some(km) = expect_map(cx, v, "`cache:key`") {
                    let mut files = Vec::new();
                    let mut prefix = None;
                    for (kk, kv) in km {
                        match kk.name.as_str() {
                            "files" => {
                                files = string_list(cx, kv, "cache:key:files")
                                    .map(|l| l.into_iter().map(|(s, _)| s).collect())
                                    .unwrap_or_default();
                                if files.is_empty() || files.len() > 2 {
                                    cx.error(
                                        kv.pos,
                                        "`cache:key:files` must list one or two files",
                                    );
                                }
                            }
                            "prefix" => prefix = scalar(cx, kv, "`cache:key:prefix`"),
                            _ => unknown_key(cx, kk, &["files", "prefix"], "`cache:key`"),
                        }
                    }
                    c.key = CacheKeySpec::Files { files, prefix };
                }
            }
            "paths" => {
                c.paths = string_list(cx, v, "cache:paths")
                    .map(|l| l.into_iter().map(|(s, _)| s).collect())
                    .unwrap_or_default();
            }
            "policy" => {
                c.policy = match v.as_str() {
                    Some("pull-push") => CachePolicy::PullPush,
                    Some("pull") => CachePolicy::Pull,
                    Some("push") => CachePolicy::Push,
                    _ => {
                        cx.error(v.pos, "`cache:policy` must be pull, push or pull-push");
                        CachePolicy::PullPush
                    }
                }
            }
            "when" => {
                c.when = match v.as_str() {
                    Some("on_success") => CacheWhen::OnSuccess,
                    Some("on_failure") => CacheWhen::OnFailure,
                    Some("always") => CacheWhen::Always,
                    _ => {
                        cx.error(
                            v.pos,
                            "`cache:when` must be on_success, on_failure or always",
                        );
                        CacheWhen::OnSuccess
                    }
                }
            }
            "untracked" | "unprotect" | "fallback_keys" => cx.warn(
                k.pos,
                format!("`cache:{}` is not supported and is ignored", k.name),
            ),
            _ => unknown_key(cx, k, &["key", "paths", "policy", "when"], "`cache`"),
        }
    }
    Some(c)
}

fn parse_caches(cx: &mut Ctx, node: &Node) -> Vec<CacheSpec> {
    match node.as_seq() {
        Some(items) => {
            if items.len() > 4 {
                cx.error(node.pos, "a job may have at most 4 caches");
            }
            items
                .iter()
                .filter_map(|i| parse_cache_one(cx, i))
                .collect()
        }
        None if node.is_null() => Vec::new(),
        None => parse_cache_one(cx, node).into_iter().collect(),
    }
}

/// `only`/`except` refs: names, keywords or `/regex/` (checked here).
fn parse_refs(cx: &mut Ctx, node: &Node, what: &str) -> Option<Vec<String>> {
    let refs = one_or_list(cx, node, what)?;
    let items: Vec<&Node> = match node.as_seq() {
        Some(items) => items.iter().collect(),
        None => vec![node],
    };
    for (r, item) in refs.iter().zip(items) {
        if let Some(body) = r.strip_prefix('/')
            && let Some(end) = body.rfind('/')
            && let Err(e) = regex::RegexBuilder::new(&body[..end])
                .case_insensitive(body[end + 1..].contains('i'))
                .size_limit(1 << 20)
                .build()
        {
            cx.error(
                item.text_column_pos(),
                format!("invalid regex in `{what}`: {e}"),
            );
        }
    }
    Some(refs)
}

fn parse_ref_filter(cx: &mut Ctx, node: &Node, what: &str) -> Option<RefFilter> {
    if node.as_seq().is_some() || node.as_str().is_some() {
        return Some(RefFilter {
            refs: parse_refs(cx, node, what),
            ..RefFilter::default()
        });
    }
    let map = expect_map(cx, node, &format!("`{what}`"))?;
    let mut f = RefFilter::default();
    for (k, v) in map {
        match k.name.as_str() {
            "refs" => f.refs = parse_refs(cx, v, &format!("{what}:refs")),
            "variables" => {
                let items: Vec<&Node> = match v.as_seq() {
                    Some(items) => items.iter().collect(),
                    None => vec![v],
                };
                f.variables = Some(
                    items
                        .into_iter()
                        .filter_map(|i| parse_expr(cx, i))
                        .collect(),
                );
            }
            "changes" => f.changes = one_or_list(cx, v, &format!("{what}:changes")),
            "kubernetes" => cx.warn(
                k.pos,
                format!("`{what}:kubernetes` is not supported and is ignored"),
            ),
            _ => unknown_key(
                cx,
                k,
                &["refs", "variables", "changes"],
                &format!("`{what}`"),
            ),
        }
    }
    Some(f)
}

fn parse_parallel(cx: &mut Ctx, node: &Node) -> Option<Parallel> {
    if let Some(n) = node.as_int() {
        return match usize::try_from(n) {
            Ok(n @ 1..=MAX_PARALLEL) => Some(Parallel::Count(n)),
            _ => {
                cx.error(
                    node.pos,
                    format!("`parallel` must be between 1 and {MAX_PARALLEL}"),
                );
                None
            }
        };
    }
    let Some(matrix) = node.get("matrix") else {
        cx.error(node.pos, "`parallel` must be a number or `matrix: [...]`");
        return None;
    };
    for (k, _) in node.as_map().unwrap_or_default() {
        if k.name != "matrix" {
            unknown_key(cx, k, &["matrix"], "`parallel`");
        }
    }
    let Some(entries) = matrix.as_seq() else {
        cx.error(matrix.pos, "`parallel:matrix` must be a list of mappings");
        return None;
    };
    let mut out = Vec::new();
    let mut total = 0usize;
    for entry in entries {
        let map = expect_map(cx, entry, "a `parallel:matrix` entry")?;
        let mut vars = Vec::new();
        let mut product = 1usize;
        for (k, v) in map {
            if !is_name(&k.name) {
                cx.error(k.pos, format!("`{}` is not a valid variable name", k.name));
                return None;
            }
            let values = one_or_list(cx, v, &k.name)?;
            if values.is_empty() {
                cx.error(
                    v.pos,
                    format!("the matrix variable `{}` has no values", k.name),
                );
                return None;
            }
            product = product.saturating_mul(values.len());
            vars.push((k.name.clone(), values));
        }
        total = total.saturating_add(product);
        out.push(vars);
    }
    if total > MAX_PARALLEL || total == 0 {
        cx.error(
            matrix.pos,
            format!(
                "`parallel:matrix` makes {total} jobs; it must make between 1 and {MAX_PARALLEL}"
            ),
        );
        return None;
    }
    Some(Parallel::Matrix(out))
}

fn parse_environment(cx: &mut Ctx, node: &Node) -> Option<Environment> {
    if let Some(name) = node.as_str() {
        return Some(Environment {
            name: name.to_string(),
            url: None,
            action: "start".to_string(),
            on_stop: None,
        });
    }
    let map = expect_map(cx, node, "`environment`")?;
    let mut env = Environment {
        name: String::new(),
        url: None,
        action: "start".to_string(),
        on_stop: None,
    };
    for (k, v) in map {
        match k.name.as_str() {
            "name" => env.name = scalar(cx, v, "`environment:name`").unwrap_or_default(),
            "url" => env.url = scalar(cx, v, "`environment:url`"),
            "action" => {
                let a = scalar(cx, v, "`environment:action`").unwrap_or_default();
                if ["start", "prepare", "stop", "verify", "access"].contains(&a.as_str()) {
                    env.action = a;
                } else {
                    cx.error(
                        v.pos,
                        "`environment:action` must be start, prepare, stop, verify or access",
                    );
                }
            }
            "on_stop" => env.on_stop = scalar(cx, v, "`environment:on_stop`"),
            "auto_stop_in" | "deployment_tier" | "kubernetes" => cx.warn(
                k.pos,
                format!("`environment:{}` is not supported and is ignored", k.name),
            ),
            _ => unknown_key(
                cx,
                k,
                &["name", "url", "action", "on_stop"],
                "`environment`",
            ),
        }
    }
    if env.name.is_empty() {
        cx.error(node.pos, "`environment` needs a `name`");
        return None;
    }
    Some(env)
}

fn parse_needs(cx: &mut Ctx, node: &Node) -> Option<Vec<NeedSpec>> {
    let Some(items) = node.as_seq() else {
        cx.error(node.pos, "`needs` must be a list of job names");
        return None;
    };
    let mut out = Vec::new();
    for item in items {
        if let Some(job) = item.as_str() {
            out.push(NeedSpec {
                job: job.to_string(),
                artifacts: true,
                optional: false,
                pos: item.pos,
            });
            continue;
        }
        let Some(map) = expect_map(cx, item, "an entry of `needs`") else {
            continue;
        };
        let mut need = NeedSpec {
            job: String::new(),
            artifacts: true,
            optional: false,
            pos: item.pos,
        };
        let mut skip = false;
        for (k, v) in map {
            match k.name.as_str() {
                "job" => {
                    need.job = scalar(cx, v, "`needs:job`").unwrap_or_default();
                    need.pos = v.pos;
                }
                "artifacts" => {
                    need.artifacts = bool_value(cx, v, "needs:artifacts").unwrap_or(true)
                }
                "optional" => need.optional = bool_value(cx, v, "needs:optional").unwrap_or(false),
                "pipeline" | "project" | "parallel" | "ref" => {
                    cx.warn(
                        k.pos,
                        format!("`needs:{}` is not supported; this need is ignored", k.name),
                    );
                    skip = true;
                }
                _ => unknown_key(
                    cx,
                    k,
                    &["job", "artifacts", "optional"],
                    "an entry of `needs`",
                ),
            }
        }
        if skip {
            continue;
        }
        if need.job.is_empty() {
            cx.error(item.pos, "an entry of `needs` needs a `job`");
            continue;
        }
        out.push(need);
    }
    Some(out)
}

fn parse_job(cx: &mut Ctx, name: &str, pos: Pos, node: &Node) -> Option<JobSpec> {
    let mut job = JobSpec {
        name: name.to_string(),
        pos,
        stage: "test".to_string(),
        stage_pos: pos,
        image: None,
        variables: Vec::new(),
        before_script: Vec::new(),
        script: Vec::new(),
        after_script: Vec::new(),
        needs: None,
        dependencies: None,
        artifacts: None,
        caches: Vec::new(),
        rules: None,
        only: None,
        except: None,
        when: When::OnSuccess,
        start_in: None,
        allow_failure: None,
        retry: Retry::default(),
        timeout: None,
        parallel: None,
        tags: Vec::new(),
        environment: None,
        interruptible: false,
        resource_group: None,
        services: Vec::new(),
        trigger: None,
        coverage: None,
        notices: Vec::new(),
    };
    let first_diag = cx.diags.len();
    let mut has_script = false;
    let map = node.as_map().unwrap_or_default();
    for (k, v) in map {
        match k.name.as_str() {
            "script" => {
                has_script = true;
                job.script = parse_script(cx, v, "script").unwrap_or_default();
            }
            "before_script" => {
                job.before_script = parse_script(cx, v, "before_script").unwrap_or_default()
            }
            "after_script" => {
                job.after_script = parse_script(cx, v, "after_script").unwrap_or_default()
            }
            "stage" => {
                job.stage = scalar(cx, v, "`stage`").unwrap_or_default();
                job.stage_pos = v.pos;
            }
            "image" => job.image = parse_image(cx, v),
            "variables" => job.variables = parse_variables(cx, v),
            "needs" => job.needs = parse_needs(cx, v),
            "dependencies" => job.dependencies = string_list(cx, v, "dependencies"),
            "artifacts" => job.artifacts = parse_artifacts(cx, v),
            "cache" => job.caches = parse_caches(cx, v),
            "rules" => job.rules = parse_rules(cx, v, false),
            "only" => job.only = parse_ref_filter(cx, v, "only"),
            "except" => job.except = parse_ref_filter(cx, v, "except"),
            "when" => job.when = parse_when(cx, v).unwrap_or(When::OnSuccess),
            "start_in" => job.start_in = duration(cx, v, "start_in"),
            "allow_failure" => job.allow_failure = parse_allow_failure(cx, v),
            "retry" => job.retry = parse_retry(cx, v),
            "timeout" => job.timeout = duration(cx, v, "timeout"),
            "parallel" => job.parallel = parse_parallel(cx, v),
            "tags" => {
                job.tags = string_list(cx, v, "tags")
                    .map(|l| l.into_iter().map(|(s, _)| s).collect())
                    .unwrap_or_default();
            }
            "environment" => job.environment = parse_environment(cx, v),
            "interruptible" => {
                job.interruptible = bool_value(cx, v, "interruptible").unwrap_or(false)
            }
            "resource_group" => job.resource_group = scalar(cx, v, "`resource_group`"),
            "coverage" => job.coverage = reports::parse_coverage(cx, v),
            "services" => job.services = services::parse_services(cx, v),
            "extends" => {}
            "trigger" => job.trigger = trigger::parse_trigger(cx, v),
            other => {
                if let Some((_, why)) = UNSUPPORTED_JOB_KEYS.iter().find(|(n, _)| *n == other) {
                    cx.warn(k.pos, *why);
                } else {
                    unknown_key(cx, k, JOB_KEYS, &format!("the job `{name}`"));
                }
            }
        }
    }
    let is_trigger = map.iter().any(|(k, _)| k.name == "trigger");
    if is_trigger && has_script {
        cx.error(
            pos,
            format!(
                "the job `{name}` has both `trigger` and `script`: a trigger job runs no script"
            ),
        );
    } else if !has_script && !is_trigger {
        cx.error(pos, format!("the job `{name}` has no `script`"));
    }
    let has_image = map.iter().any(|(k, v)| k.name == "image" && !v.is_null());
    services::check_job(cx, name, pos, &job.services, has_image);
    if job.rules.is_some()
        && let Some((k, _)) = map
            .iter()
            .find(|(k, _)| k.name == "only" || k.name == "except")
    {
        cx.error(
            k.pos,
            format!("`{}` cannot be used together with `rules`", k.name),
        );
    }
    if job.when == When::Delayed && job.start_in.is_none() && job.rules.is_none() {
        cx.error(
            pos,
            format!("the job `{name}` is `when: delayed` but has no `start_in`"),
        );
    }
    if job
        .rules
        .iter()
        .flatten()
        .any(|r| r.when == Some(When::Delayed) && r.start_in.is_none() && job.start_in.is_none())
    {
        cx.error(
            pos,
            format!("a rule of job `{name}` is `when: delayed` but has no `start_in`"),
        );
    }
    if let Some(k) = map
        .iter()
        .find(|(k, _)| k.name == "start_in")
        .map(|(k, _)| k)
        && job.when != When::Delayed
    {
        cx.error(k.pos, "`start_in` needs `when: delayed`");
    }
    if job
        .start_in
        .is_some_and(|d| d > Duration::from_secs(7 * 86_400))
    {
        cx.error(pos, "`start_in` must be at most one week");
    }
    job.notices = cx.diags[first_diag..]
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| format!("line {}: {}", d.pos.line, d.message))
        .collect();
    // A job with errors is kept, so the checks across jobs still see it
    // (and do not report it as missing); the whole parse fails anyway.
    Some(job)
}

/// Checks across jobs: stages exist, needs and dependencies name jobs in the
/// right stages, needs have no cycle.
fn check_jobs(cx: &mut Ctx, stages: &[String], jobs: &[JobSpec], defined: &HashSet<&str>) {
    let stage_of: HashMap<&str, usize> = jobs
        .iter()
        .filter_map(|j| Some((j.name.as_str(), stages.iter().position(|s| *s == j.stage)?)))
        .collect();
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    for job in jobs {
        let Some(&mine) = stage_of.get(job.name.as_str()) else {
            if job.stage.is_empty() {
                continue; // `stage` itself was invalid, already reported
            }
            let candidates: Vec<&str> = stages.iter().map(String::as_str).collect();
            let hint = suggest(&job.stage, &candidates)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            cx.error(
                job.stage_pos,
                format!(
                    "the stage `{}` of job `{}` is not one of the stages ({}){hint}",
                    job.stage,
                    job.name,
                    stages.join(", ")
                ),
            );
            continue;
        };
        for need in job.needs.iter().flatten() {
            match stage_of.get(need.job.as_str()) {
                // A job that failed to parse (e.g. a broken `extends`) was
                // reported already.
                None if need.optional || defined.contains(need.job.as_str()) => {}
                None => {
                    let hint = suggest(&need.job, &names)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    cx.error(
                        need.pos,
                        format!(
                            "the job `{}` needs `{}`, which is not a job{hint}",
                            job.name, need.job
                        ),
                    );
                }
                Some(&theirs) if theirs > mine => cx.error(
                    need.pos,
                    format!(
                        "the job `{}` (stage {}) needs `{}`, which is in the later stage {}",
                        job.name, stages[mine], need.job, stages[theirs]
                    ),
                ),
                Some(_) if need.job == job.name => {
                    cx.error(need.pos, format!("the job `{}` needs itself", job.name));
                }
                Some(_) => {}
            }
        }
        for (dep, pos) in job.dependencies.iter().flatten() {
            match stage_of.get(dep.as_str()) {
                None if defined.contains(dep.as_str()) => {}
                None => cx.error(
                    *pos,
                    format!(
                        "the job `{}` depends on `{dep}`, which is not a job",
                        job.name
                    ),
                ),
                Some(&theirs) if theirs >= mine && job.needs.is_none() => cx.error(
                    *pos,
                    format!(
                        "the job `{}` depends on `{dep}`, which is not in an earlier stage",
                        job.name
                    ),
                ),
                Some(_) => {
                    if let Some(needs) = &job.needs
                        && !needs.iter().any(|n| n.job == *dep)
                    {
                        cx.error(
                            *pos,
                            format!("the job `{}` depends on `{dep}`, which must also be in its `needs`", job.name),
                        );
                    }
                }
            }
        }
    }
    reports::check_on_stop(cx, jobs);
    // Cycles among needs (same-stage needs can form one).
    let index: HashMap<&str, &JobSpec> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    let mut state: HashMap<&str, u8> = HashMap::new(); // 1 visiting, 2 done
    let mut reported: HashSet<&str> = HashSet::new();
    for job in jobs {
        let mut stack: Vec<(&str, usize)> = vec![(job.name.as_str(), 0)];
        while let Some((name, i)) = stack.pop() {
            if i == 0 {
                if state.get(name) == Some(&2) {
                    continue;
                }
                state.insert(name, 1);
            }
            let needs: Vec<&str> = index
                .get(name)
                .and_then(|j| j.needs.as_ref())
                .map(|n| n.iter().map(|n| n.job.as_str()).collect())
                .unwrap_or_default();
            if let Some(&next) = needs.get(i) {
                stack.push((name, i + 1));
                match state.get(next) {
                    Some(1) => {
                        if reported.insert(next)
                            && let Some(j) = index.get(next)
                        {
                            cx.error(j.pos, format!("the `needs` of job `{next}` form a cycle"));
                        }
                    }
                    Some(_) => {}
                    None if index.contains_key(next) && next != name => stack.push((next, 0)),
                    None => {}
                }
            } else {
                state.insert(name, 2);
            }
        }
    }
}
