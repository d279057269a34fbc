//! Types shared by the parsed configuration and the plan.

use std::time::Duration;

/// When a job runs, relative to the jobs of earlier stages (or its needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum When {
    /// When everything before it succeeded (the default).
    OnSuccess,
    /// When something before it failed.
    OnFailure,
    /// Whatever happened before.
    Always,
    /// Only when started by hand.
    Manual,
    /// Never (the job is not part of the pipeline).
    Never,
    /// After `start_in`, once everything before it succeeded.
    Delayed,
}

impl When {
    /// Parses the YAML word.
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "on_success" => Self::OnSuccess,
            "on_failure" => Self::OnFailure,
            "always" => Self::Always,
            "manual" => Self::Manual,
            "never" => Self::Never,
            "delayed" => Self::Delayed,
            _ => return None,
        })
    }

    /// The YAML word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnSuccess => "on_success",
            Self::OnFailure => "on_failure",
            Self::Always => "always",
            Self::Manual => "manual",
            Self::Never => "never",
            Self::Delayed => "delayed",
        }
    }
}

/// Whether a job's failure fails the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AllowFailure {
    /// Any failure is allowed.
    pub any: bool,
    /// Only these exit codes are allowed failures (`allow_failure:exit_codes`).
    pub exit_codes: Vec<i32>,
}

impl AllowFailure {
    /// Whether a job that exited with `code` counts as an allowed failure.
    pub fn allows(&self, code: i32) -> bool {
        self.any || self.exit_codes.contains(&code)
    }
}

/// GitLab's retry failure reasons.
pub const RETRY_REASONS: &[&str] = &[
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "missing_dependency_failure",
];

/// How often a failed job is retried, and for which failures.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Retry {
    /// 0, 1 or 2.
    pub max: u8,
    /// Failure reasons (from [`RETRY_REASONS`]); empty means `always`.
    pub when: Vec<String>,
    /// Retry only these exit codes (empty: any).
    pub exit_codes: Vec<i32>,
}

/// A job's container image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Image {
    /// Image reference (variables expanded in a plan).
    pub name: String,
    /// Overrides the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
}

/// When artifacts are uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ArtifactsWhen {
    /// When the job succeeded (default).
    #[default]
    OnSuccess,
    /// When it failed.
    OnFailure,
    /// Either way.
    Always,
}

/// What a job uploads after it ran.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Artifacts {
    /// Globs of paths (relative to the project directory).
    pub paths: Vec<String>,
    /// Globs excluded from `paths`.
    pub exclude: Vec<String>,
    /// How long they are kept (None: the executor's default, unless
    /// `expire_never`).
    pub expire_in: Option<Duration>,
    /// `expire_in: never`: kept until deleted by hand.
    #[serde(default)]
    pub expire_never: bool,
    /// When they are uploaded.
    pub when: ArtifactsWhen,
    /// Archive name.
    pub name: Option<String>,
    /// `reports:junit` paths, stored for the executor.
    pub junit: Vec<String>,
    /// `reports:dotenv` paths: `KEY=value` files whose variables later
    /// jobs get.
    #[serde(default)]
    pub dotenv: Vec<String>,
}

/// Which way a cache goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CachePolicy {
    /// Download before, upload after (default).
    #[default]
    PullPush,
    /// Download only.
    Pull,
    /// Upload only.
    Push,
}

/// When a cache is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CacheWhen {
    /// When the job succeeded (default).
    #[default]
    OnSuccess,
    /// When it failed.
    OnFailure,
    /// Either way.
    Always,
}

/// A deployment environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Environment {
    /// Name (variables expanded in a plan).
    pub name: String,
    /// URL.
    pub url: Option<String>,
    /// `start` (default), `prepare`, `stop`, `verify` or `access`.
    pub action: String,
    /// `on_stop`: the job that stops this environment.
    #[serde(default)]
    pub on_stop: Option<String>,
}

/// A service container of a Docker job (`services:`), started on the
/// job's own network before the job and removed with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    /// The image (variables expanded in a plan).
    pub name: String,
    /// The host names it is reachable by on the job's network: the ones
    /// derived from the image name as GitLab does, then `alias`.
    pub aliases: Vec<String>,
    /// Overrides the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's command.
    pub command: Option<Vec<String>>,
    /// Its environment: the job's variables, then the service's own.
    pub variables: std::collections::BTreeMap<String, String>,
}

/// A trigger job (`trigger:`): it starts a child pipeline from files of
/// the same commit and, with `strategy: depend`, ends as the child ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    /// The child pipeline's files (`trigger:include` `local` paths, in
    /// order; read as one file's `include:` list).
    pub include: Vec<String>,
    /// `strategy: depend`: the trigger job waits for the child and takes
    /// its result; otherwise it succeeds once the child is created.
    pub depend: bool,
    /// `forward:yaml_variables` (default true): the job's variables go to
    /// the child.
    pub forward_yaml_variables: bool,
    /// `forward:pipeline_variables` (default false): the pipeline's
    /// trigger and secret variables go to the child.
    pub forward_pipeline_variables: bool,
}
