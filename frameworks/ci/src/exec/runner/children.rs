//! Parent-child pipelines, executed: the steps [`children::steps`]
//! decides (see its docs) are carried out here — a child pipeline is read
//! from the parent's source archive (the same commit), parsed
//! ([`parse_child`]), planned with the parent's context and its own id,
//! stored with a link to its parent's trigger job, given a copy of the
//! source archive, and linked from the parent; trigger jobs start and end
//! without a task, with a log the runner writes.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use tracing::{info, warn};

use super::super::children::{self, ChildStep, TriggerEnd};
use super::super::files::PipelineAccess;
use super::super::record::{ChildLink, Family, ParentLink, PassedVariable, PipelineRecord};
use super::super::schedule;
use super::super::state::{FailureReason, JobEnd};
use super::framework::CiFramework;
use super::submit::{RecordHead, new_record, store_new};
use super::{CONTAINER_SANDBOX, RunError};
use crate::{Config, Context, ParseOptions, PipelineSource, Repository, SecretVariable, Trigger};

/// The most rounds of child steps in one settle: each round's steps can
/// make more (a created child's own trigger jobs), and a failure that
/// `retry` covers makes the job pending again.
const MAX_ROUNDS: usize = 16;

/// The largest file read from a source archive for a child pipeline (its
/// definition, `rules:exists`, `cache:key:files`).
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Parses a child pipeline's files: the ONE place a child's definition
/// is parsed. `include` are the `trigger:include` paths of the commit,
/// read from `repo` as one file's `include:` list would be (nested
/// includes, globs and their `rules` against `ctx`, the child's context).
pub(super) fn parse_child(
    include: &[String],
    repo: &dyn Repository,
    ctx: &Context,
) -> Result<Config, String> {
    let mut text = String::from("include:\n");
    for path in include {
        // A JSON string is a YAML flow scalar: any path is quoted safely.
        let quoted = serde_json::to_string(path).map_err(|e| e.to_string())?;
        text.push_str(&format!("  - local: {quoted}\n"));
    }
    Config::parse_in(
        &text,
        "trigger:include",
        &ParseOptions::default(),
        repo,
        ctx,
    )
    .map(|(config, _warnings)| config)
    .map_err(|diags| {
        diags
            .iter()
            // The synthetic list has no place a user could look at: its
            // diagnostics are given by their message alone.
            .map(|d| match &d.file {
                Some(_) => d.to_string(),
                None => d.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// A pipeline's source archive (`.tar.gz`) as a [`Repository`]: what a
/// child pipeline reads of the commit. Each read goes through the
/// archive; the list of files is read once.
pub(super) struct ArchiveRepository {
    path: PathBuf,
    files: OnceLock<Vec<String>>,
}

impl ArchiveRepository {
    pub(super) fn new(path: PathBuf) -> ArchiveRepository {
        ArchiveRepository {
            path,
            files: OnceLock::new(),
        }
    }

    /// Calls `each` with every regular file's name and reader until it
    /// returns `true`.
    fn scan(&self, mut each: impl FnMut(&str, &mut dyn std::io::Read) -> bool) {
        let Ok(file) = std::fs::File::open(&self.path) else {
            return;
        };
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let Ok(entries) = tar.entries() else {
            return;
        };
        for entry in entries {
            let Ok(mut entry) = entry else {
                return;
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Ok(name) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
                continue;
            };
            let name = name.trim_start_matches("./").to_string();
            if each(&name, &mut entry) {
                return;
            }
        }
    }
}

impl Repository for ArchiveRepository {
    fn files(&self) -> Vec<String> {
        self.files
            .get_or_init(|| {
                let mut names = Vec::new();
                self.scan(|name, _| {
                    names.push(name.to_string());
                    false
                });
                names
            })
            .clone()
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let wanted = path.trim_start_matches("./");
        let mut found = None;
        self.scan(|name, reader| {
            if name != wanted {
                return false;
            }
            let mut bytes = Vec::new();
            if reader
                .take(MAX_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .is_ok()
                && bytes.len() as u64 <= MAX_FILE_BYTES
            {
                found = Some(bytes);
            }
            true
        });
        found
    }
}

/// What a child pipeline is made of, taken from its parent.
struct ChildOrder {
    trigger: Trigger,
    ctx: Context,
    head: RecordHead,
    archive: PathBuf,
}

/// The variables trigger job `job` of `rec` passes to its child: its own
/// (`forward:yaml_variables`, the default: the job's and the file's
/// variables, not the predefined ones) and the pipeline's trigger, project
/// and secret variables (`forward:pipeline_variables`).
fn passed_variables(rec: &PipelineRecord, job: usize, trigger: &Trigger) -> Vec<PassedVariable> {
    let given = &rec.family.pipeline_variables;
    let mut out: Vec<PassedVariable> = Vec::new();
    if trigger.forward_yaml_variables
        && let Some(planned) = rec.plan.jobs.get(job)
    {
        for (name, value) in &planned.variables {
            let predefined = name.starts_with("CI_") || name.starts_with("GITLAB_");
            if predefined || given.iter().any(|v| v.name == *name) {
                continue;
            }
            out.push(PassedVariable {
                name: name.clone(),
                value: value.clone(),
                masked: false,
            });
        }
    }
    if trigger.forward_pipeline_variables {
        out.extend(given.iter().cloned());
    }
    out
}

/// The order for trigger job `job` (attempt `attempt`) of `rec`.
fn order(rec: &PipelineRecord, job: usize, attempt: usize, archive: PathBuf) -> Option<ChildOrder> {
    let trigger = rec.plan.jobs.get(job)?.trigger.clone()?;
    let passed = passed_variables(rec, job, &trigger);
    let var = |name: &str| rec.plan.variables.get(name).cloned();
    let ctx = Context {
        project_name: rec.project.clone(),
        project_dir: format!("{CONTAINER_SANDBOX}/{}", rec.project),
        commit_sha: rec.sha.clone(),
        ref_name: rec.ref_name.clone(),
        ref_is_tag: var("CI_COMMIT_TAG").is_some(),
        default_branch: var("CI_DEFAULT_BRANCH").unwrap_or_default(),
        pipeline_id: 0,
        source: PipelineSource::ParentPipeline,
        // GitLab: `rules:changes` is true in a child pipeline.
        changed_files: None,
        secrets: passed
            .iter()
            .map(|v| SecretVariable {
                name: v.name.clone(),
                value: v.value.clone(),
                masked: v.masked,
            })
            .collect(),
        // The same commit, server and repository as the parent's.
        commit: crate::CommitInfo {
            message: var("CI_COMMIT_MESSAGE").unwrap_or_default(),
            timestamp: var("CI_COMMIT_TIMESTAMP").unwrap_or_default(),
            author: var("CI_COMMIT_AUTHOR").unwrap_or_default(),
            before_sha: var("CI_COMMIT_BEFORE_SHA"),
        },
        server_url: var("CI_SERVER_URL").unwrap_or_default(),
        repository_url: var("CI_REPOSITORY_URL").unwrap_or_default(),
    };
    let parent = ParentLink {
        pipeline: rec.id,
        job,
        attempt,
    };
    let head = RecordHead {
        project: rec.project.clone(),
        sha: rec.sha.clone(),
        ref_name: rec.ref_name.clone(),
        source: PipelineSource::ParentPipeline.as_str().to_string(),
        repository: rec.repository.clone(),
        branch: rec.branch,
        masked_values: passed
            .iter()
            .filter(|v| v.masked)
            .map(|v| v.value.clone())
            .collect(),
        family: Family {
            parent: Some(parent),
            children: Vec::new(),
            pipeline_variables: passed,
        },
    };
    Some(ChildOrder {
        trigger,
        ctx,
        head,
        archive,
    })
}

/// Makes and stores the child pipeline of `order` (blocking: reads the
/// archive, writes the store and the child's copy of the archive).
fn make_child(
    store: &super::super::store::Store,
    order: &ChildOrder,
    child_archive: impl Fn(u64) -> PathBuf,
) -> Result<PipelineRecord, String> {
    if !order.archive.exists() {
        return Err(format!(
            "the source archive of the pipeline is missing ({})",
            order.archive.display()
        ));
    }
    let repo = ArchiveRepository::new(order.archive.clone());
    let config = parse_child(&order.trigger.include, &repo, &order.ctx)?;
    let rec = store_new(store, None, |id| {
        let mut ctx = order.ctx.clone();
        ctx.pipeline_id = id;
        new_record(id, &config, &ctx, &repo, &order.head)
    })
    .map_err(|e| match e {
        RunError::NoPipeline(why) => format!("the child pipeline has no jobs to run: {why}"),
        e => e.to_string(),
    })?;
    let dest = child_archive(rec.id);
    // The same commit: a link when the file system allows, else a copy.
    if std::fs::hard_link(&order.archive, &dest).is_err()
        && let Err(e) = std::fs::copy(&order.archive, &dest)
    {
        // Stored already: its jobs fail as they come to run, saying why.
        warn!(pipeline = rec.id, "cannot copy the source archive: {e}");
    }
    Ok(rec)
}

impl CiFramework {
    /// Carries out what the trigger jobs need (see [`children::steps`]),
    /// until nothing more is to do; returns the pipelines that changed.
    pub(super) async fn settle_children(
        &mut self,
        now: SystemTime,
    ) -> Result<BTreeSet<u64>, RunError> {
        let mut changed = BTreeSet::new();
        for _ in 0..MAX_ROUNDS {
            let resources = schedule::resources(&self.pipelines);
            let steps = children::steps(&self.pipelines, &resources);
            if steps.is_empty() {
                break;
            }
            for step in steps {
                self.child_step(step, now, &mut changed).await?;
            }
        }
        Ok(changed)
    }

    async fn child_step(
        &mut self,
        step: ChildStep,
        now: SystemTime,
        all: &mut BTreeSet<u64>,
    ) -> Result<(), RunError> {
        let mut changed = BTreeSet::new();
        match step {
            ChildStep::Create {
                pipeline,
                job,
                attempt,
            } => {
                let Some(order) = self
                    .pipelines
                    .get(&pipeline)
                    .and_then(|rec| order(rec, job, attempt, self.files.source(pipeline)))
                else {
                    return Ok(());
                };
                let store = self.store.clone();
                let files = self.files.clone();
                let made = tokio::task::spawn_blocking(move || {
                    make_child(&store, &order, |id| files.source(id))
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
                match made {
                    Ok(child) => {
                        let id = child.id;
                        self.add_child(child, now).await?;
                        all.insert(id);
                        self.start_trigger_job(pipeline, job, attempt, id, now)
                            .await;
                    }
                    Err(why) => {
                        warn!(pipeline, job, "cannot create the child pipeline: {why}");
                        if let Some(rec) = self.pipelines.get_mut(&pipeline) {
                            if let Err(e) = super::super::record::fail_unlaunched(
                                rec,
                                job,
                                FailureReason::UnknownFailure,
                                "the child pipeline could not be created",
                                &why,
                                &self.config.data_dir,
                                now,
                            )
                            .await
                            {
                                warn!(pipeline, job, "cannot fail the trigger job: {e}");
                            }
                            rec.state.advance(now);
                        }
                    }
                }
                changed.insert(pipeline);
            }
            ChildStep::Adopt {
                pipeline,
                job,
                attempt,
                child,
            } => {
                self.start_trigger_job(pipeline, job, attempt, child, now)
                    .await;
                changed.insert(pipeline);
            }
            ChildStep::Finish { pipeline, job, end } => {
                self.finish_trigger_job(pipeline, job, end, now).await;
                changed.insert(pipeline);
            }
            ChildStep::CancelChild { child } => {
                info!(
                    pipeline = child,
                    "canceling a child pipeline with its trigger job"
                );
                // Stores it (and its own children).
                self.cancel(child, None).await?;
                all.insert(child);
            }
        }
        // Stored as it goes: a restart finds each step done or to do.
        for id in changed {
            self.persist(id).await?;
            all.insert(id);
        }
        Ok(())
    }

    /// Takes a new child pipeline in (stored already): its files' token,
    /// its first jobs.
    async fn add_child(
        &mut self,
        mut child: PipelineRecord,
        now: SystemTime,
    ) -> Result<(), RunError> {
        let id = child.id;
        self.tokens.insert(
            id,
            PipelineAccess {
                token: child.token.clone(),
                project_key: child.project_key().to_string(),
            },
        );
        child.state.advance(now);
        self.pipelines.insert(id, child);
        info!(pipeline = id, "child pipeline created");
        self.persist(id).await
    }

    /// Starts trigger job `job` (attempt `attempt`) of `pipeline` with its
    /// child `child`: no task, a log the runner writes; without `depend`
    /// the job succeeds at once.
    async fn start_trigger_job(
        &mut self,
        pipeline: u64,
        job: usize,
        attempt: usize,
        child: u64,
        now: SystemTime,
    ) {
        let Some(rec) = self.pipelines.get_mut(&pipeline) else {
            return;
        };
        if let Err(e) = rec.state.started(job, "", now) {
            warn!(pipeline, job, "cannot start the trigger job: {e}");
            return;
        }
        if rec.family.child_of(job, attempt).is_none() {
            rec.family.children.push(ChildLink {
                job,
                attempt,
                pipeline: child,
            });
        }
        let depend = rec
            .plan
            .jobs
            .get(job)
            .and_then(|j| j.trigger.as_ref())
            .is_some_and(|t| t.depend);
        let path = PipelineRecord::log_path(&self.config.data_dir, pipeline, job, attempt);
        let text = if depend {
            format!("Created child pipeline #{child}; waiting for it to end (strategy: depend)\n")
        } else {
            format!("Created child pipeline #{child}\n")
        };
        append_log(&path, &text).await;
    }

    /// Ends trigger job `job` of `pipeline` as `end` says, with a line in
    /// its log.
    async fn finish_trigger_job(
        &mut self,
        pipeline: u64,
        job: usize,
        end: TriggerEnd,
        now: SystemTime,
    ) {
        let Some(rec) = self.pipelines.get_mut(&pipeline) else {
            return;
        };
        let attempt = rec.state.job(job).map_or(0, |j| j.attempts.len());
        let child = rec.family.child_of(job, attempt);
        let child_text = child.map_or_else(
            || "the child pipeline".to_string(),
            |c| format!("child pipeline #{c}"),
        );
        let (result, line) = match &end {
            TriggerEnd::Success => (
                JobEnd::success(),
                format!("{child_text} created or passed: the job succeeded\n"),
            ),
            TriggerEnd::Failed(why) => (
                JobEnd::failure(FailureReason::UnknownFailure, why.clone()),
                format!("ERROR: Job failed: {why}\n"),
            ),
            TriggerEnd::Canceled => {
                if let Err(e) = rec.state.cancel_job(job) {
                    warn!(pipeline, job, "cannot cancel the trigger job: {e}");
                }
                (
                    JobEnd::failure(FailureReason::UnknownFailure, "canceled"),
                    format!("{child_text} was canceled: the job is canceled\n"),
                )
            }
        };
        match rec.state.finished(job, result, now) {
            Ok(_) => {
                rec.state.advance(now);
            }
            Err(e) => warn!(pipeline, job, "cannot end the trigger job: {e}"),
        }
        let path = PipelineRecord::log_path(&self.config.data_dir, pipeline, job, attempt);
        append_log(&path, &line).await;
    }
}

/// Appends a line the runner writes to a trigger job's log.
async fn append_log(path: &Path, text: &str) {
    use tokio::io::AsyncWriteExt as _;
    let written = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        file.write_all(text.as_bytes()).await?;
        file.flush().await
    };
    if let Err(e) = written.await {
        warn!("cannot write {}: {e}", path.display());
    }
}
