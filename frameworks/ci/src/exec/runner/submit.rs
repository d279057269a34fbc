//! The slow part of a submission, off the framework's task: a
//! definition parsed and planned once (reading what the plan needs of the
//! repository, remembered in a [`MemoRepository`]), its source archive
//! written to a temporary file; and the record made of it on the
//! framework's task, with the pipeline's id ([`create_record`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use super::super::expiry;
use super::super::files::FileStore;
use super::super::record::{Family, PassedVariable};
use super::super::source::{self, Revision};
use super::super::state::{self, FailureReason, JobNode, Pipeline};
use super::super::store::{RepoUpdate, Store};
use super::{CONTAINER_SANDBOX, PipelineRecord, RunError, Submission, now_ms};
use crate::{Config, Context, ParseOptions, Plan, PlannedJob};

/// A submission whose slow part is done, off the runner's loop: parsed,
/// planned once (which reads what the plan needs of the repository), and
/// its source archive written to a temporary file.
pub(super) struct Prepared {
    pub(super) submission: Submission,
    pub(super) config: Config,
    pub(super) repository: Arc<MemoRepository>,
    pub(super) archive: TempArchive,
}

/// A source archive under its temporary name; removed when dropped unless
/// it was moved into place.
pub(super) struct TempArchive(pub(super) PathBuf);

impl Drop for TempArchive {
    fn drop(&mut self) {
        remove_temp(&self.0);
    }
}

/// The ordering view of a planned job for the state machine.
pub(super) fn node(plan: &Plan, job: &PlannedJob) -> JobNode {
    let index = |name: &str| plan.jobs.iter().position(|j| j.name == name);
    JobNode {
        name: job.name.clone(),
        stage: job.stage_index,
        needs: job
            .needs
            .as_ref()
            .map(|needs| needs.iter().filter_map(|n| index(&n.job)).collect()),
        when: match job.when {
            crate::When::OnFailure => state::When::OnFailure,
            crate::When::Always => state::When::Always,
            crate::When::Manual => state::When::Manual,
            crate::When::Delayed => state::When::Delayed(job.start_in.unwrap_or_default()),
            crate::When::OnSuccess | crate::When::Never => state::When::OnSuccess,
        },
        allow_failure: state::AllowFailure {
            any: job.allow_failure.any,
            exit_codes: job.allow_failure.exit_codes.clone(),
        },
        retry: state::RetryPolicy {
            max: job.retry.max,
            // `always` listed next to exit codes still means every failure.
            when: if job.retry.when.iter().any(|w| w == "always") {
                FailureReason::ALL.to_vec()
            } else {
                job.retry
                    .when
                    .iter()
                    .filter_map(|w| FailureReason::parse(w))
                    .collect()
            },
            exit_codes: job.retry.exit_codes.clone(),
        },
    }
}

/// What a new pipeline's record says besides its plan.
pub(super) struct RecordHead {
    pub(super) project: String,
    pub(super) sha: String,
    pub(super) ref_name: String,
    pub(super) source: String,
    pub(super) repository: String,
    pub(super) branch: bool,
    pub(super) masked_values: Vec<String>,
    pub(super) family: Family,
}

/// Plans `config` as pipeline `id` (`ctx` with that id) and makes its
/// record; `Err` when the plan fails or is empty.
pub(super) fn new_record(
    id: u64,
    config: &Config,
    ctx: &Context,
    repo: &dyn crate::Repository,
    head: &RecordHead,
) -> Result<PipelineRecord, RunError> {
    let plan = match config.plan(ctx, repo) {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            return Err(RunError::NoPipeline(
                "workflow:rules create no pipeline for this ref".into(),
            ));
        }
        Err(e) => return Err(RunError::NoPipeline(e.to_string())),
    };
    let nodes: Vec<JobNode> = plan.jobs.iter().map(|j| node(&plan, j)).collect();
    let state = Pipeline::new(nodes)?;
    let jobs = plan.jobs.len();
    Ok(PipelineRecord {
        id,
        project: head.project.clone(),
        sha: head.sha.clone(),
        ref_name: head.ref_name.clone(),
        source: head.source.clone(),
        token: uuid::Uuid::new_v4().simple().to_string(),
        created_ms: now_ms(),
        finished_ms: None,
        plan,
        state,
        masked_values: head.masked_values.clone(),
        agents: vec![String::new(); jobs],
        attempt_agents: BTreeMap::new(),
        kill_reasons: vec![None; jobs],
        repository: head.repository.clone(),
        branch: head.branch,
        auto_canceled_by: None,
        waiting_for_resource: Vec::new(),
        expired: expiry::Expired::default(),
        reports: BTreeMap::new(),
        family: head.family.clone(),
        stuck: Vec::new(),
    })
}

/// Stores a new pipeline made by `make` from its id (with `update` to a
/// registered repository, in the same transaction); returns the record.
/// Nothing is stored when `make` fails.
pub(super) fn store_new(
    store: &Store,
    update: Option<RepoUpdate>,
    mut make: impl FnMut(u64) -> Result<PipelineRecord, RunError>,
) -> Result<PipelineRecord, RunError> {
    let mut made: Option<PipelineRecord> = None;
    let mut failure: Option<RunError> = None;
    store.linked(update).create_with(|id| match make(id) {
        Ok(rec) => {
            made = Some(rec.clone());
            Some(rec)
        }
        Err(e) => {
            failure = Some(e);
            None
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    made.ok_or_else(|| RunError::Other("no record was made".into()))
}

/// Plans `submission` as a new pipeline and stores its record (with
/// `update` to a registered repository, in the same transaction); returns
/// the record. Nothing is stored when the plan fails or is empty.
pub(super) fn create_record(
    store: &Store,
    update: Option<RepoUpdate>,
    config: &Config,
    submission: &Submission,
    repo: &dyn crate::Repository,
    server_url: &str,
) -> Result<PipelineRecord, RunError> {
    let rev = &submission.revision;
    let head = RecordHead {
        project: rev.project_name.clone(),
        sha: rev.sha.clone(),
        ref_name: rev.ref_name.clone(),
        source: submission.source.as_str().to_string(),
        repository: rev.root.join(&rev.subdir).display().to_string(),
        branch: !rev.is_tag && source::is_branch(rev),
        masked_values: submission
            .variables
            .iter()
            .filter(|v| v.masked)
            .map(|v| v.value.clone())
            .collect(),
        family: Family {
            pipeline_variables: submission
                .variables
                .iter()
                .map(|v| PassedVariable {
                    name: v.name.clone(),
                    value: v.value.clone(),
                    masked: v.masked,
                })
                .collect(),
            ..Family::default()
        },
    };
    store_new(store, update, |id| {
        new_record(
            id,
            config,
            &plan_context(submission, id, server_url),
            repo,
            &head,
        )
    })
}

/// Removes a temporary file, if it is there.
fn remove_temp(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("cannot remove {}: {e}", path.display()),
    }
}

/// What a plan of `submission` as pipeline `id` is evaluated against;
/// `server_url` is the CI server's address. `rules:changes` compares a
/// push with the branch's head before it; any other pipeline (web, api,
/// trigger, schedule) or a push of a new branch makes every `changes`
/// true, as GitLab documents.
fn plan_context(submission: &Submission, id: u64, server_url: &str) -> Context {
    revision_context(
        &submission.revision,
        submission.source,
        submission.variables.clone(),
        id,
        server_url,
    )
}

/// What a plan of pipeline `id` of `rev`, started by `source` with
/// `secrets`, is evaluated against. `changes` rules compare with the
/// branch's previous head only for a push onto a known commit; in every
/// other pipeline they are true, as GitLab documents.
pub fn revision_context(
    rev: &Revision,
    source: crate::PipelineSource,
    secrets: Vec<crate::SecretVariable>,
    id: u64,
    server_url: &str,
) -> Context {
    let pushed_onto = rev
        .commit
        .before_sha
        .as_deref()
        .is_some_and(|b| !b.is_empty() && b.bytes().any(|c| c != b'0'));
    let changed_files =
        (source == crate::PipelineSource::Push && pushed_onto).then(|| rev.changed_files.clone());
    Context {
        project_name: rev.project_name.clone(),
        project_dir: format!("{CONTAINER_SANDBOX}/{}", rev.project_name),
        commit_sha: rev.sha.clone(),
        ref_name: rev.ref_name.clone(),
        ref_is_tag: rev.is_tag,
        default_branch: rev.default_branch.clone(),
        pipeline_id: id,
        source,
        changed_files,
        secrets,
        commit: rev.commit.clone(),
        server_url: server_url.to_string(),
        repository_url: rev.root.display().to_string(),
    }
}

/// The slow part of a submission, run off the runner's loop: parses the
/// definition, checks masked values, plans it once (to refuse a
/// submission that makes no pipeline before anything is written, and to
/// read what the plan needs of the repository, remembered for the plan the
/// loop makes with the pipeline's id), and writes the source archive to a
/// temporary file.
pub(super) fn prepare(
    submission: Submission,
    files: &FileStore,
    server_url: &str,
) -> Result<Prepared, RunError> {
    // The files `include` names are read from the revision (and
    // remembered, as all the plan reads); its rules see the plan's context.
    let repository = Arc::new(MemoRepository::new(submission.revision.clone()));
    // Planned as pipeline 0 here; the loop plans again with the real id
    // from what this read (a plan only reads the repository for
    // `rules:exists`, `rules:changes` of files and `cache:key:files`; the
    // included files are in `config` already).
    let ctx = plan_context(&submission, 0, server_url);
    let (config, warnings) = Config::parse_in(
        &submission.definition,
        ".gitlab-ci.yml",
        &ParseOptions::default(),
        &*repository,
        &ctx,
    )
    .map_err(|diags| {
        RunError::Invalid(
            diags
                .iter()
                .map(|d| d.located(".gitlab-ci.yml"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    // What berth ignores or does differently, in the server's log (each
    // job's own notices start its log too).
    for w in &warnings {
        warn!(
            project = %submission.revision.project_name,
            sha = %submission.revision.sha,
            "{}",
            w.located(".gitlab-ci.yml")
        );
    }
    let mut masked = 0;
    for v in submission.variables.iter().filter(|v| v.masked) {
        super::super::mask::check_maskable(&v.name, &v.value)?;
        masked += 1;
    }
    // Each job's task carries the values for its agent to mask.
    if masked > super::super::mask::MAX_TASK_MASKED_VALUES {
        return Err(RunError::Invalid(format!(
            "{masked} masked variables; at most {} can be masked",
            super::super::mask::MAX_TASK_MASKED_VALUES
        )));
    }
    match config.plan(&ctx, &*repository) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(RunError::NoPipeline(
                "workflow:rules create no pipeline for this ref".into(),
            ));
        }
        Err(e) => return Err(RunError::NoPipeline(e.to_string())),
    }
    let archive = TempArchive(files.temp_path());
    source::write_archive(&submission.revision, &archive.0)?;
    Ok(Prepared {
        submission,
        config,
        repository,
        archive,
    })
}

/// A revision as a [`crate::Repository`] (for `include`, `rules:exists`
/// and `cache:key:files`) that remembers what it read: a submission is planned
/// off the runner's loop first, and planned again on the loop (with its
/// id) from memory.
#[derive(Debug)]
pub(super) struct MemoRepository {
    rev: Revision,
    files: std::sync::Mutex<Option<Vec<String>>>,
    reads: std::sync::Mutex<HashMap<String, Option<Vec<u8>>>>,
    /// How many times git was asked (for tests).
    pub(super) asked: std::sync::atomic::AtomicUsize,
}

impl MemoRepository {
    fn new(rev: Revision) -> MemoRepository {
        MemoRepository {
            rev,
            files: std::sync::Mutex::default(),
            reads: std::sync::Mutex::default(),
            asked: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn ask(&self) {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl crate::Repository for MemoRepository {
    fn files(&self) -> Vec<String> {
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        files
            .get_or_insert_with(|| {
                self.ask();
                source::list_files(&self.rev).unwrap_or_default()
            })
            .clone()
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let mut reads = self
            .reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reads
            .entry(path.to_string())
            .or_insert_with(|| {
                self.ask();
                source::read_file(&self.rev, path).ok().flatten()
            })
            .clone()
    }
}
