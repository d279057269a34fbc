//! The pipeline language of berth's CI framework: a repository's unchanged
//! `.gitlab-ci.yml`, parsed, checked and planned. This part is a pure
//! library: no networking, no cluster; the repository is read through the
//! [`Repository`] trait.
//!
//! - [`Config::parse`] reads the YAML (with positions on every node,
//!   anchors, `<<` merges, `!reference`, `extends`, `default`) and checks
//!   every keyword, returning [`Diagnostic`]s with line and column. Hostile
//!   input (an alias bomb, an oversized or too deeply nested file) is
//!   refused within the [`ParseOptions`] limits. [`Config::parse_in`] does
//!   the same for a file of a [`Repository`], merging in the files its
//!   `include` names (local files and globs, nested, with `rules`).
//! - [`Config::plan`] takes a trigger [`Context`] (ref, sha, source, changed
//!   files, secret variables) and a [`Repository`] (for `rules:exists` and
//!   `cache:key:files`) and returns the [`Plan`]: the jobs that run, with
//!   `parallel`/`matrix` expanded, variables merged and expanded, `needs`
//!   resolved, cache keys computed; or None when `workflow:rules` create no
//!   pipeline.
//! - [`render_script`] turns a [`PlannedJob`] into the `sh` script its task
//!   runs.
//!
//! [`reports`] parses what jobs report: dotenv variables, JUnit test
//! results, coverage.
//!
//! The [`exec`] module runs plans: the state machine of a pipeline's jobs,
//! the source archive of a commit, the files the agents fetch and upload,
//! masking of secrets in logs, and the durable state.

pub mod exec;
pub mod reports;

mod config;
mod diag;
mod expr;
mod glob;
mod include;
mod model;
mod plan;
pub mod predefined;
mod script;
mod vars;
mod yaml;

pub use config::{Config, MAX_PARALLEL, ParseOptions};
pub use diag::{Diagnostic, Pos, Severity};
pub use expr::{Expr, ExprError};
pub use glob::glob_match;
pub use include::{MAX_INCLUDE_DEPTH, MAX_INCLUDES};
pub use model::{
    AllowFailure, Artifacts, ArtifactsWhen, CachePolicy, CacheWhen, Environment, Image,
    RETRY_REASONS, Retry, Service, Trigger, When,
};
pub use plan::{
    Cache, Context, DirRepository, MemoryRepository, Need, NodeIndex, PipelineSource, Plan,
    PlanError, PlannedJob, Repository, SecretVariable,
};
pub use predefined::CommitInfo;
pub use script::{SCRIPT_START_MARKER, prelude, render, render_script, sh_quote, task_script};
pub use vars::{expand, is_name, parse_duration, ref_slug};
