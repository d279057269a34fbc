//! Turning a [`Config`] and a trigger [`Context`] into a concrete [`Plan`]:
//! which jobs run, with which variables, in which order.
//!
//! [`Config::plan`] evaluates `workflow:rules` (no pipeline when they say
//! so), each job's `rules` or `only`/`except`, expands `parallel` and
//! `parallel:matrix`, merges variables (predefined < global < workflow <
//! job < matrix < rule < secret) and expands `$VAR` references in them,
//! resolves `needs` to planned jobs, and computes cache keys (`key:files`
//! hashes the files' contents, read through the [`Repository`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{
    CacheKeySpec, Config, JobSpec, Parallel, RefFilter, Rule, VarDef, plan_services,
};
use crate::glob::glob_match;
use crate::model::{
    AllowFailure, Artifacts, CachePolicy, CacheWhen, Environment, Image, Retry, Service, Trigger,
    When,
};
use crate::predefined::{self, CommitInfo, relative_path, shown};
use crate::vars::{expand, ref_slug};

/// What started the pipeline (`CI_PIPELINE_SOURCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PipelineSource {
    /// A push to a branch or a tag.
    #[default]
    Push,
    /// Started by hand in the UI or `berth ci run`.
    Web,
    /// Started through the API.
    Api,
    /// A trigger token.
    Trigger,
    /// A schedule.
    Schedule,
    /// A merge request.
    MergeRequestEvent,
    /// A child pipeline, started by a trigger job of its parent.
    ParentPipeline,
}

impl PipelineSource {
    /// The `CI_PIPELINE_SOURCE` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Web => "web",
            Self::Api => "api",
            Self::Trigger => "trigger",
            Self::Schedule => "schedule",
            Self::MergeRequestEvent => "merge_request_event",
            Self::ParentPipeline => "parent_pipeline",
        }
    }
}

/// A variable set outside the file (project or secret variable). It has the
/// highest precedence and is not expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVariable {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Whether the executor must mask the value in job logs.
    pub masked: bool,
}

/// What triggered the pipeline: the inputs of the predefined variables and
/// of `rules`.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `CI_PROJECT_NAME`.
    pub project_name: String,
    /// Where the checkout is, as shown where the job's real directory is
    /// not known (the plan's paths, rules and other fields). The job's
    /// variables use a placeholder instead, which its script replaces
    /// with the real directory (see [`crate::predefined`]).
    pub project_dir: String,
    /// `CI_COMMIT_SHA` (full).
    pub commit_sha: String,
    /// The branch or tag name (`CI_COMMIT_REF_NAME`).
    pub ref_name: String,
    /// Whether `ref_name` is a tag.
    pub ref_is_tag: bool,
    /// `CI_DEFAULT_BRANCH`.
    pub default_branch: String,
    /// `CI_PIPELINE_ID`.
    pub pipeline_id: u64,
    /// `CI_PIPELINE_SOURCE`.
    pub source: PipelineSource,
    /// The files this push changed, for `rules:changes` / `only:changes`.
    /// `None` (unknown: a new branch, a schedule, a web run) makes every
    /// `changes` condition true, as GitLab does.
    pub changed_files: Option<Vec<String>>,
    /// Project and secret variables.
    pub secrets: Vec<SecretVariable>,
    /// The commit's message, author, time and the sha before a push.
    pub commit: CommitInfo,
    /// The CI server's address (`CI_SERVER_URL`, and the pipeline and job
    /// URLs); empty when unknown.
    pub server_url: String,
    /// `CI_REPOSITORY_URL`: where the repository is.
    pub repository_url: String,
}

/// The checkout, for `rules:exists` and `cache:key:files`.
pub trait Repository {
    /// The paths of the files, relative and `/`-separated.
    fn files(&self) -> Vec<String>;
    /// A file's contents, None if it does not exist or cannot be read.
    fn read(&self, path: &str) -> Option<Vec<u8>>;
}

/// A repository held in memory (tests, or a pre-read checkout).
#[derive(Debug, Clone, Default)]
pub struct MemoryRepository {
    /// Path → contents.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MemoryRepository {
    /// A repository of the given files.
    pub fn new<P: Into<String>, C: Into<Vec<u8>>>(files: impl IntoIterator<Item = (P, C)>) -> Self {
        Self {
            files: files
                .into_iter()
                .map(|(p, c)| (p.into(), c.into()))
                .collect(),
        }
    }
}

impl Repository for MemoryRepository {
    fn files(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.files.get(path.trim_start_matches("./")).cloned()
    }
}

/// A checkout on disk. `files` skips `.git` and lists at most `max_files`.
#[derive(Debug, Clone)]
pub struct DirRepository {
    root: PathBuf,
    max_files: usize,
}

impl DirRepository {
    /// The checkout at `root`, listing at most 100,000 files.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            max_files: 100_000,
        }
    }
}

impl Repository for DirRepository {
    fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![PathBuf::new()];
        while let Some(rel) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(self.root.join(&rel)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name == ".git" {
                    continue;
                }
                let path = rel.join(&name);
                match entry.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(path),
                    Ok(_) => {
                        if out.len() >= self.max_files {
                            return out;
                        }
                        out.push(path.to_string_lossy().replace('\\', "/"));
                    }
                    Err(_) => {}
                }
            }
        }
        out
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let rel = Path::new(path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return None;
        }
        std::fs::read(self.root.join(rel)).ok()
    }
}

/// A need of a planned job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Need {
    /// The planned job's name (one per parallel instance).
    pub job: String,
    /// Whether its artifacts are downloaded.
    pub artifacts: bool,
}

/// A cache with its key computed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cache {
    /// The key: text with variables expanded, or `prefix-<sha256>` of the
    /// `key:files` contents (`default` when none of them exist).
    pub key: String,
    /// Globs of paths.
    pub paths: Vec<String>,
    /// Pull, push or both.
    pub policy: CachePolicy,
    /// When it is uploaded.
    pub when: CacheWhen,
}

/// The position of a job among its parallel instances (1-based index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeIndex {
    /// `CI_NODE_INDEX`, from 1.
    pub index: usize,
    /// `CI_NODE_TOTAL`.
    pub total: usize,
}

/// One job of a plan, ready to run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlannedJob {
    /// Unique name, e.g. `test`, `test 2/3` or `test: [linux, x86]`.
    pub name: String,
    /// The name in the file (`needs` refer to it).
    pub base_name: String,
    /// Stage name.
    pub stage: String,
    /// Index of the stage in [`Plan::stages`].
    pub stage_index: usize,
    /// Container image (None: run on the host / the executor's default).
    pub image: Option<Image>,
    /// Every variable of the job: predefined, global, workflow, job, matrix,
    /// rule and secret ones, with `$VAR` references in values expanded.
    /// `CI_JOB_ID` is not here: the executor adds it when it assigns one.
    pub variables: BTreeMap<String, String>,
    /// Commands run before `script`, in the same shell.
    pub before_script: Vec<String>,
    /// The job's commands.
    pub script: Vec<String>,
    /// Commands run afterwards in a separate shell, even after a failure.
    pub after_script: Vec<String>,
    /// None: the job waits for every job of earlier stages. Some: it waits
    /// for just these (empty: it starts at once).
    pub needs: Option<Vec<Need>>,
    /// Whose artifacts it downloads; None: all jobs of earlier stages (or
    /// all needs with `artifacts: true`).
    pub dependencies: Option<Vec<String>>,
    /// What it uploads.
    pub artifacts: Option<Artifacts>,
    /// Its caches (at most 4).
    pub caches: Vec<Cache>,
    /// When it runs.
    pub when: When,
    /// For `when: delayed`.
    pub start_in: Option<Duration>,
    /// Whether its failure fails the pipeline.
    pub allow_failure: AllowFailure,
    /// Retries.
    pub retry: Retry,
    /// Its time limit (None: the executor's default).
    pub timeout: Option<Duration>,
    /// For `parallel` jobs, its index among its instances.
    pub parallel: Option<NodeIndex>,
    /// For `parallel:matrix` jobs, its variable values.
    pub matrix: Vec<(String, String)>,
    /// Agent attributes it needs (variables expanded).
    pub tags: Vec<String>,
    /// Deployment environment.
    pub environment: Option<Environment>,
    /// Whether a newer pipeline may cancel it.
    pub interruptible: bool,
    /// At most one job of a resource group runs at a time.
    pub resource_group: Option<String>,
    /// Service containers (Docker jobs only).
    #[serde(default)]
    pub services: Vec<Service>,
    /// A trigger job: no script, a child pipeline.
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// `coverage`: the regular expression that finds the coverage
    /// percentage in the job's log.
    #[serde(default)]
    pub coverage: Option<String>,
    /// What berth ignores of this job's definition (lint's warnings about
    /// it); its log starts with them.
    #[serde(default)]
    pub notices: Vec<String>,
    /// The variables that use `CI_PROJECT_DIR` or `CI_BUILDS_DIR`, with
    /// the directories' placeholders in their values (see
    /// [`crate::predefined`]): the job's script replaces them with its real
    /// directories. [`PlannedJob::variables`] shows them with the
    /// directories of a Docker job.
    #[serde(default)]
    pub dir_variables: BTreeMap<String, String>,
}

impl PlannedJob {
    /// The environment of the job's task: [`PlannedJob::variables`] plus
    /// `CI_JOB_ID`, which the executor assigns when it starts the job.
    /// The values of [`PlannedJob::dir_variables`] are the placeholders'.
    pub fn environment(&self, job_id: u64) -> BTreeMap<String, String> {
        let mut env = self.variables.clone();
        env.extend(self.dir_variables.clone());
        env.insert("CI_JOB_ID".to_string(), job_id.to_string());
        env
    }
}

/// A pipeline to run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// The stages that have jobs, in order.
    pub stages: Vec<String>,
    /// The jobs, by stage then file order.
    pub jobs: Vec<PlannedJob>,
    /// Pipeline-level variables (predefined, global, workflow, secret).
    pub variables: BTreeMap<String, String>,
    /// Names of the variables whose values the executor must mask in logs.
    pub masked: Vec<String>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The rules exclude every job (or leave only `.pre`/`.post` jobs).
    #[error("no job of this pipeline runs for this ref and source")]
    Empty,
    /// A job cannot be planned.
    #[error("job `{job}`: {message}")]
    Job {
        /// The job.
        job: String,
        /// Why.
        message: String,
    },
}

fn job_error(job: &str, message: impl Into<String>) -> PlanError {
    PlanError::Job {
        job: job.to_string(),
        message: message.into(),
    }
}

/// Variables in layers; later layers win; `expand` says whether `$` refs
/// in the value are expanded.
#[derive(Debug, Clone, Default)]
struct Layers {
    raw: BTreeMap<String, (String, bool)>,
}

impl Layers {
    fn set(&mut self, name: &str, value: impl Into<String>, expand: bool) {
        self.raw.insert(name.to_string(), (value.into(), expand));
    }

    fn add_defs(&mut self, defs: &[VarDef]) {
        for d in defs {
            self.set(&d.name, d.value.clone(), d.expand);
        }
    }

    /// Every variable with references expanded (a cycle leaves the inner
    /// reference empty).
    fn resolve(&self) -> BTreeMap<String, String> {
        let done: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
        let visiting: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
        fn get(
            layers: &Layers,
            name: &str,
            done: &RefCell<HashMap<String, String>>,
            visiting: &RefCell<HashSet<String>>,
        ) -> Option<String> {
            // A chain of references deeper than this is left unexpanded
            // (bounds the recursion on hostile files).
            const MAX_CHAIN: usize = 32;
            if let Some(v) = done.borrow().get(name) {
                return Some(v.clone());
            }
            let (raw, expand_it) = layers.raw.get(name)?;
            if !expand_it || !raw.contains('$') {
                return Some(raw.clone());
            }
            if visiting.borrow().len() >= MAX_CHAIN {
                return Some(raw.clone());
            }
            if !visiting.borrow_mut().insert(name.to_string()) {
                return None;
            }
            let value = expand(raw, &|n| get(layers, n, done, visiting));
            visiting.borrow_mut().remove(name);
            done.borrow_mut().insert(name.to_string(), value.clone());
            Some(value)
        }
        self.raw
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    get(self, k, &done, &visiting).unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// What `rules` are evaluated against: the context and the repository
/// (its file list read once).
pub(crate) struct Env<'a> {
    ctx: &'a Context,
    repo: &'a dyn Repository,
    files: RefCell<Option<Vec<String>>>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(ctx: &'a Context, repo: &'a dyn Repository) -> Self {
        Self {
            ctx,
            repo,
            files: RefCell::new(None),
        }
    }

    /// The variables of `include` (its paths and `rules:if`): the
    /// predefined, `globals` (the main file's) and the secret variables.
    pub(crate) fn include_variables(&self, globals: &[VarDef]) -> BTreeMap<String, String> {
        let mut layers = Layers::default();
        for (name, value) in predefined::pipeline(self.ctx) {
            layers.set(name, value, false);
        }
        layers.add_defs(globals);
        for s in &self.ctx.secrets {
            layers.set(&s.name, s.value.clone(), false);
        }
        layers.resolve()
    }

    pub(crate) fn repo_files(&self) -> Vec<String> {
        self.files
            .borrow_mut()
            .get_or_insert_with(|| self.repo.files())
            .clone()
    }

    fn changes(&self, patterns: &[String], vars: &BTreeMap<String, String>) -> bool {
        let Some(changed) = &self.ctx.changed_files else {
            return true;
        };
        patterns.iter().any(|p| {
            let p = expand(p, &|n| vars.get(n).cloned());
            changed.iter().any(|f| glob_match(&p, f))
        })
    }

    fn exists(&self, patterns: &[String], vars: &BTreeMap<String, String>) -> bool {
        let files = self.repo_files();
        patterns.iter().any(|p| {
            let p = expand(p, &|n| vars.get(n).cloned());
            files.iter().any(|f| glob_match(&p, f))
        })
    }

    pub(crate) fn rule_matches(&self, rule: &Rule, vars: &BTreeMap<String, String>) -> bool {
        if let Some(e) = &rule.if_expr
            && !e.eval(&|n| vars.get(n).cloned())
        {
            return false;
        }
        if let Some(c) = &rule.changes
            && !self.changes(c, vars)
        {
            return false;
        }
        if let Some(x) = &rule.exists
            && !self.exists(x, vars)
        {
            return false;
        }
        true
    }

    fn ref_matches(&self, pattern: &str) -> bool {
        let ctx = self.ctx;
        match pattern {
            "branches" => !ctx.ref_is_tag && ctx.source != PipelineSource::MergeRequestEvent,
            "tags" => ctx.ref_is_tag,
            "merge_requests" => ctx.source == PipelineSource::MergeRequestEvent,
            "pushes" => ctx.source == PipelineSource::Push,
            "web" => ctx.source == PipelineSource::Web,
            "api" => ctx.source == PipelineSource::Api,
            "schedules" => ctx.source == PipelineSource::Schedule,
            "triggers" => ctx.source == PipelineSource::Trigger,
            "pipelines" => ctx.source == PipelineSource::ParentPipeline,
            _ => {
                if let Some(body) = pattern.strip_prefix('/')
                    && let Some(end) = body.rfind('/')
                {
                    let flags = &body[end + 1..];
                    return regex::RegexBuilder::new(&body[..end])
                        .case_insensitive(flags.contains('i'))
                        .size_limit(1 << 20)
                        .build()
                        .is_ok_and(|r| r.is_match(&ctx.ref_name));
                }
                pattern == ctx.ref_name
            }
        }
    }

    /// `only`/`except`: every key given must have a condition that holds.
    fn filter_matches(&self, f: &RefFilter, vars: &BTreeMap<String, String>) -> bool {
        f.refs
            .as_ref()
            .is_none_or(|refs| refs.iter().any(|r| self.ref_matches(r)))
            && f.variables
                .as_ref()
                .is_none_or(|exprs| exprs.iter().any(|e| e.eval(&|n| vars.get(n).cloned())))
            && f.changes.as_ref().is_none_or(|c| self.changes(c, vars))
    }
}

/// One instance `parallel` makes of a job: name, node index, matrix vars.
type Instance = (String, Option<NodeIndex>, Vec<(String, String)>);

/// The instances `parallel` makes of a job.
fn instances(job: &JobSpec) -> Vec<Instance> {
    match &job.parallel {
        None => vec![(job.name.clone(), None, Vec::new())],
        Some(Parallel::Count(n)) => (1..=*n)
            .map(|i| {
                (
                    format!("{} {i}/{n}", job.name),
                    Some(NodeIndex {
                        index: i,
                        total: *n,
                    }),
                    Vec::new(),
                )
            })
            .collect(),
        Some(Parallel::Matrix(entries)) => {
            let mut combos: Vec<Vec<(String, String)>> = Vec::new();
            for entry in entries {
                let mut partial: Vec<Vec<(String, String)>> = vec![Vec::new()];
                for (name, values) in entry {
                    partial = partial
                        .into_iter()
                        .flat_map(|p| {
                            values.iter().map(move |v| {
                                let mut p = p.clone();
                                p.push((name.clone(), v.clone()));
                                p
                            })
                        })
                        .collect();
                }
                combos.extend(partial);
            }
            let total = combos.len();
            combos
                .into_iter()
                .enumerate()
                .map(|(i, vars)| {
                    let values: Vec<&str> = vars.iter().map(|(_, v)| v.as_str()).collect();
                    (
                        format!("{}: [{}]", job.name, values.join(", ")),
                        Some(NodeIndex {
                            index: i + 1,
                            total,
                        }),
                        vars,
                    )
                })
                .collect()
        }
    }
}

fn cache_key(
    job: &str,
    key: &CacheKeySpec,
    vars: &BTreeMap<String, String>,
    repo: &dyn Repository,
) -> Result<String, PlanError> {
    let x = |s: &str| expand(s, &|n| vars.get(n).cloned());
    let key = match key {
        CacheKeySpec::Text(t) => {
            let k = x(t);
            if k.is_empty() {
                "default".to_string()
            } else {
                k
            }
        }
        CacheKeySpec::Files { files, prefix } => {
            let mut hasher = Sha256::new();
            let mut found = false;
            for f in files {
                let path = x(f);
                hasher.update(path.as_bytes());
                hasher.update([0u8]);
                if let Some(content) = repo.read(&path) {
                    found = true;
                    hasher.update(&content);
                }
                hasher.update([0u8]);
            }
            let hex: String = hasher.finalize()[..20]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let base = if found { hex } else { "default".to_string() };
            match prefix.as_deref().map(x) {
                Some(p) if !p.is_empty() => format!("{p}-{base}"),
                _ => base,
            }
        }
    };
    if key.contains('/')
        || key.to_ascii_lowercase().contains("%2f")
        || key.chars().all(|c| c == '.')
    {
        return Err(job_error(
            job,
            format!("the cache key `{key}` must not contain `/` or be only dots"),
        ));
    }
    Ok(key)
}

impl Config {
    /// Makes the pipeline for `ctx`: evaluates `workflow:rules` (None when
    /// they create no pipeline), then each job's `rules` or `only`/`except`,
    /// expands `parallel`, merges and expands variables, resolves `needs`
    /// to the planned jobs and computes cache keys (reading `key:files`
    /// from `repo`).
    pub fn plan(&self, ctx: &Context, repo: &dyn Repository) -> Result<Option<Plan>, PlanError> {
        let env = Env::new(ctx, repo);
        let mut pipeline = Layers::default();
        for (name, value) in predefined::pipeline(ctx) {
            pipeline.set(name, value, false);
        }
        pipeline.add_defs(&self.variables);
        // Rules, paths and the other fields see the directory shown; the
        // job's variables keep the placeholders (see `crate::predefined`).
        let show = |vars: BTreeMap<String, String>| -> BTreeMap<String, String> {
            vars.into_iter()
                .map(|(k, v)| {
                    let v = shown(ctx, &v);
                    (k, v)
                })
                .collect()
        };
        let with_secrets = |layers: &Layers| {
            let mut l = layers.clone();
            for s in &ctx.secrets {
                l.set(&s.name, s.value.clone(), false);
            }
            l
        };
        if let Some(rules) = &self.workflow {
            let vars = show(with_secrets(&pipeline).resolve());
            match rules.iter().find(|r| env.rule_matches(r, &vars)) {
                Some(rule) if rule.when != Some(When::Never) => pipeline.add_defs(&rule.variables),
                _ => return Ok(None),
            }
        }
        let pipeline_vars = show(with_secrets(&pipeline).resolve());

        let mut planned: Vec<(usize, PlannedJob, &JobSpec)> = Vec::new();
        for job in &self.jobs {
            let stage_index = self
                .stages
                .iter()
                .position(|s| *s == job.stage)
                .unwrap_or(usize::MAX);
            for (name, node, matrix) in instances(job) {
                let mut layers = pipeline.clone();
                layers.set("CI_JOB_NAME", name.clone(), false);
                layers.set("CI_JOB_NAME_SLUG", ref_slug(&name), false);
                layers.set("CI_JOB_STAGE", job.stage.clone(), false);
                layers.set("CI_JOB_URL", predefined::job_url(ctx, &name), false);
                layers.set("CI_RUNNER_TAGS", predefined::runner_tags(&job.tags), false);
                if let Some(n) = node {
                    layers.set("CI_NODE_INDEX", n.index.to_string(), false);
                    layers.set("CI_NODE_TOTAL", n.total.to_string(), false);
                }
                layers.add_defs(&job.variables);
                for (k, v) in &matrix {
                    layers.set(k, v.clone(), false);
                }
                let vars = show(with_secrets(&layers).resolve());
                let (when, start_in, allow_failure) = match &job.rules {
                    Some(rules) => {
                        let Some(rule) = rules.iter().find(|r| env.rule_matches(r, &vars)) else {
                            continue;
                        };
                        layers.add_defs(&rule.variables);
                        let when = rule.when.unwrap_or(job.when);
                        let af = match rule.allow_failure {
                            Some(any) => AllowFailure {
                                any,
                                exit_codes: Vec::new(),
                            },
                            None => job.allow_failure.clone().unwrap_or_default(),
                        };
                        (when, rule.start_in.or(job.start_in), af)
                    }
                    None => {
                        let only_ok = match &job.only {
                            Some(f) => env.filter_matches(f, &vars),
                            None => env.ref_matches("branches") || env.ref_matches("tags"),
                        };
                        let excepted = job
                            .except
                            .as_ref()
                            .is_some_and(|f| env.filter_matches(f, &vars));
                        if !only_ok || excepted {
                            continue;
                        }
                        let af = job.allow_failure.clone().unwrap_or(AllowFailure {
                            any: job.when == When::Manual,
                            exit_codes: Vec::new(),
                        });
                        (job.when, job.start_in, af)
                    }
                };
                if when == When::Never {
                    continue;
                }
                if when == When::Delayed && start_in.is_none() {
                    return Err(job_error(&name, "`when: delayed` needs `start_in`"));
                }
                let environment = job.environment.as_ref().map(|e| {
                    let vars = show(with_secrets(&layers).resolve());
                    let name = expand(&e.name, &|n| vars.get(n).cloned());
                    layers.set("CI_ENVIRONMENT_NAME", name.clone(), false);
                    layers.set(
                        "CI_ENVIRONMENT_SLUG",
                        predefined::environment_slug(&name),
                        false,
                    );
                    layers.set("CI_ENVIRONMENT_ACTION", e.action.clone(), false);
                    let vars = show(with_secrets(&layers).resolve());
                    let url = e
                        .url
                        .as_deref()
                        .map(|u| expand(u, &|n| vars.get(n).cloned()));
                    if let Some(url) = &url {
                        layers.set("CI_ENVIRONMENT_URL", url.clone(), false);
                    }
                    Environment {
                        name,
                        url,
                        action: e.action.clone(),
                        on_stop: e.on_stop.clone(),
                    }
                });
                let variables = with_secrets(&layers).resolve();
                let vars = show(variables.clone());
                let x = |s: &str| expand(s, &|n| vars.get(n).cloned());
                let path = |s: &String| relative_path(ctx, x(s));
                let caches = job
                    .caches
                    .iter()
                    .map(|c| {
                        Ok(Cache {
                            key: cache_key(&name, &c.key, &vars, repo)?,
                            paths: c.paths.iter().map(path).collect(),
                            policy: c.policy,
                            when: c.when,
                        })
                    })
                    .collect::<Result<Vec<_>, PlanError>>()?;
                let pj = PlannedJob {
                    name: name.clone(),
                    base_name: job.name.clone(),
                    stage: job.stage.clone(),
                    stage_index: 0,
                    image: job.image.as_ref().map(|i| Image {
                        name: x(&i.name),
                        entrypoint: i.entrypoint.clone(),
                    }),
                    before_script: job.before_script.clone(),
                    script: job.script.clone(),
                    after_script: job.after_script.clone(),
                    needs: None,
                    dependencies: None,
                    artifacts: job.artifacts.as_ref().map(|a| Artifacts {
                        paths: a.paths.iter().map(path).collect(),
                        exclude: a.exclude.iter().map(path).collect(),
                        name: a.name.as_deref().map(x),
                        junit: a.junit.iter().map(path).collect(),
                        dotenv: a.dotenv.iter().map(path).collect(),
                        ..a.clone()
                    }),
                    caches,
                    when,
                    start_in: if when == When::Delayed {
                        start_in
                    } else {
                        None
                    },
                    allow_failure,
                    retry: job.retry.clone(),
                    timeout: job.timeout,
                    parallel: node,
                    matrix,
                    tags: job.tags.iter().map(|t| x(t)).collect(),
                    environment,
                    interruptible: job.interruptible,
                    resource_group: job.resource_group.as_deref().map(x),
                    services: plan_services(&job.services, &vars),
                    trigger: job.trigger.clone(),
                    coverage: job.coverage.clone(),
                    notices: job.notices.clone(),
                    dir_variables: variables
                        .into_iter()
                        .filter(|(k, v)| vars.get(k) != Some(v))
                        .collect(),
                    variables: vars.clone(),
                };
                planned.push((stage_index, pj, job));
            }
        }
        planned.sort_by_key(|(stage, _, _)| *stage);
        if planned
            .iter()
            .all(|(_, j, _)| j.stage == ".pre" || j.stage == ".post")
        {
            return Err(PlanError::Empty);
        }

        // Needs and dependencies name planned instances.
        let mut by_base: HashMap<&str, Vec<String>> = HashMap::new();
        for (_, j, _) in &planned {
            by_base
                .entry(j.base_name.as_str())
                .or_default()
                .push(j.name.clone());
        }
        let defined: HashSet<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
        let mut resolved = Vec::with_capacity(planned.len());
        for (_, mut pj, spec) in planned.iter().cloned() {
            if let Some(needs) = &spec.needs {
                let mut out = Vec::new();
                for need in needs {
                    match by_base.get(need.job.as_str()) {
                        Some(names) => out.extend(names.iter().map(|n| Need {
                            job: n.clone(),
                            artifacts: need.artifacts,
                        })),
                        None if need.optional || !defined.contains(need.job.as_str()) => {}
                        None => {
                            return Err(job_error(
                                &pj.name,
                                format!(
                                    "it needs `{}`, which is not in this pipeline (its rules exclude it); mark the need `optional: true`",
                                    need.job
                                ),
                            ));
                        }
                    }
                }
                pj.needs = Some(out);
            }
            if let Some(deps) = &spec.dependencies {
                pj.dependencies = Some(
                    deps.iter()
                        .flat_map(|(d, _)| by_base.get(d.as_str()).cloned().unwrap_or_default())
                        .collect(),
                );
            }
            resolved.push(pj);
        }
        let mut stages: Vec<String> = Vec::new();
        for j in &mut resolved {
            if stages.last() != Some(&j.stage) {
                stages.push(j.stage.clone());
            }
            j.stage_index = stages.len() - 1;
        }
        let mut masked: Vec<String> = ctx
            .secrets
            .iter()
            .filter(|s| s.masked)
            .map(|s| s.name.clone())
            .collect();
        masked.sort();
        masked.dedup();
        Ok(Some(Plan {
            stages,
            jobs: resolved,
            variables: pipeline_vars,
            masked,
        }))
    }
}
