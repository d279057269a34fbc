//! Unit tests of the runner's handle and submissions.

use super::submit::node;
use super::*;
use crate::exec::state::JobEnd;
use crate::exec::state::{JobNode, Pipeline};
use crate::{Config, Context, ParseOptions};
use std::path::Path;

/// A stored-like record of `yaml`'s pipeline for branch `feature`.
pub(crate) fn record(yaml: &str) -> PipelineRecord {
    let (config, _) = Config::parse(yaml, &ParseOptions::default()).unwrap();
    let ctx = Context {
        project_name: "demo".into(),
        ref_name: "feature".into(),
        default_branch: "main".into(),
        pipeline_id: 1,
        ..Context::default()
    };
    let plan = config
        .plan(&ctx, &crate::MemoryRepository::default())
        .unwrap()
        .unwrap();
    let nodes: Vec<JobNode> = plan.jobs.iter().map(|j| node(&plan, j)).collect();
    let mut state = Pipeline::new(nodes).unwrap();
    state.advance(SystemTime::UNIX_EPOCH);
    let jobs = plan.jobs.len();
    PipelineRecord {
        id: 1,
        project: "demo".into(),
        sha: "0".repeat(40),
        ref_name: "feature".into(),
        source: "push".into(),
        token: "token".into(),
        created_ms: 0,
        finished_ms: None,
        plan,
        state,
        masked_values: Vec::new(),
        agents: vec![String::new(); jobs],
        attempt_agents: BTreeMap::new(),
        kill_reasons: vec![None; jobs],
        repository: "/src/demo".into(),
        branch: true,
        auto_canceled_by: Some(2),
        waiting_for_resource: vec![true; jobs],
        expired: super::super::expiry::Expired::default(),
        reports: BTreeMap::new(),
        family: Default::default(),
        stuck: Vec::new(),
    }
}

#[test]
fn a_pipeline_is_interruptible_while_every_started_job_is() {
    let mut rec = record(
        "lint:\n  stage: build\n  interruptible: true\n  script: [x]\ndeploy:\n  stage: deploy\n  script: [x]\n",
    );
    let t = SystemTime::UNIX_EPOCH;
    assert!(rec.is_interruptible(), "nothing started");
    rec.state.started(0, "ci-1-0-1", t).unwrap();
    assert!(rec.is_interruptible(), "only lint started");
    rec.state.finished(0, JobEnd::success(), t).unwrap();
    rec.state.advance(t);
    assert_eq!(rec.state.pending(), vec![1]);
    assert!(rec.is_interruptible(), "deploy is pending, not started");
    rec.state.started(1, "ci-1-1-1", t).unwrap();
    assert!(!rec.is_interruptible(), "deploy started");
    rec.state.finished(1, JobEnd::script_failure(1), t).unwrap();
    assert!(!rec.is_interruptible(), "and finished: it still counts");
}

#[test]
fn records_stored_before_auto_cancel_still_read() {
    let rec = record("build:\n  resource_group: prod\n  script: [x]\n");
    let mut json = serde_json::to_value(&rec).unwrap();
    let fields = json.as_object_mut().unwrap();
    assert!(
        !fields.contains_key("waiting_for_resource"),
        "derived, not stored"
    );
    for key in ["repository", "branch", "auto_canceled_by"] {
        assert!(fields.remove(key).is_some(), "{key} is stored");
    }
    let old: PipelineRecord = serde_json::from_value(json).unwrap();
    assert_eq!(old.repository, "");
    // The project key: the repository, or for such a record its name.
    assert_eq!(rec.project_key(), "/src/demo");
    assert_eq!(old.project_key(), "demo");
    assert!(!old.branch, "never auto-canceled");
    assert_eq!(old.auto_canceled_by, None);
    assert!(!old.is_waiting_for_resource(0));
    assert_eq!(old.plan.jobs[0].resource_group.as_deref(), Some("prod"));
}

/// A git repository with a pipeline file and one source file.
fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    berth_tests::git(d, &["init", "-q", "-b", "main"]);
    std::fs::write(d.join("a.txt"), "a\n").unwrap();
    berth_tests::git(d, &["add", "."]);
    berth_tests::git(d, &["commit", "-q", "-m", "first"]);
    dir
}

fn submission(dir: &Path, definition: &str) -> Submission {
    Submission {
        revision: source::resolve(dir, None, false).unwrap(),
        definition: definition.into(),
        source: PipelineSource::Api,
        variables: Vec::new(),
    }
}

fn temp_files(files: &FileStore) -> Vec<PathBuf> {
    let Some(dir) = files.temp_path().parent().map(Path::to_path_buf) else {
        return Vec::new();
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_submission_is_prepared_off_the_loop_and_its_archive_removed_unless_used() {
    let repo = git_repo();
    let data = tempfile::tempdir().unwrap();
    let files = FileStore::new(data.path().join("files"), 1 << 20).unwrap();
    // A pipeline `rules:exists` keeps: the plan reads the file list.
    let yaml = "build:\n  rules:\n    - exists: [a.txt]\n  script: [x]\n";
    let prepared = prepare(submission(repo.path(), yaml), &files, "http://ci.test").unwrap();
    let archive = prepared.archive.0.clone();
    assert!(archive.is_file(), "the archive is written before the loop");
    let asked = prepared
        .repository
        .asked
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(asked >= 1, "the first plan read the repository");
    // The loop's plan (with the real id) reads it from memory.
    let store = Store::open(data.path().join("ci.redb")).unwrap();
    let rec = create_record(
        &store,
        None,
        &prepared.config,
        &prepared.submission,
        &*prepared.repository,
        "http://ci.test",
    )
    .unwrap();
    assert_eq!(rec.id, 1);
    assert_eq!(rec.plan.jobs.len(), 1);
    assert_eq!(
        prepared
            .repository
            .asked
            .load(std::sync::atomic::Ordering::Relaxed),
        asked,
        "git was not asked again"
    );
    // A submission that never reaches the loop leaves no archive.
    drop(prepared);
    assert!(!archive.exists());
    assert!(temp_files(&files).is_empty());
}

#[test]
fn a_submission_without_a_pipeline_writes_no_archive() {
    let repo = git_repo();
    let data = tempfile::tempdir().unwrap();
    let files = FileStore::new(data.path().join("files"), 1 << 20).unwrap();
    let yaml = "build:\n  rules:\n    - exists: [missing.txt]\n  script: [x]\n";
    let Err(err) = prepare(submission(repo.path(), yaml), &files, "http://ci.test") else {
        panic!("no job is left, yet it was prepared");
    };
    assert!(matches!(err, RunError::NoPipeline(_)), "{err}");
    assert!(temp_files(&files).is_empty(), "{:?}", temp_files(&files));
    let Err(err) = prepare(
        submission(repo.path(), "build: [\n"),
        &files,
        "http://ci.test",
    ) else {
        panic!("a broken definition was prepared");
    };
    assert!(matches!(err, RunError::Invalid(_)), "{err}");
}

/// A detached handle publishing pipelines `1..=n`.
fn handle_with(n: u64) -> (tempfile::TempDir, RunnerHandle) {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(data.path().join("ci.redb")).unwrap());
    let handle = RunnerHandle::detached(data.path().to_path_buf(), store);
    let base = record("build:\n  script: [x]\n");
    {
        let mut published = handle.published.write();
        for id in 1..=n {
            let mut rec = base.clone();
            rec.id = id;
            published.insert(id, Arc::new(rec));
        }
    }
    (data, handle)
}

fn ids(page: &[Arc<PipelineRecord>]) -> Vec<u64> {
    page.iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn reads_come_from_the_published_records_without_the_loop() {
    // A detached handle has no loop: every request through it fails.
    let (_data, handle) = handle_with(3);
    assert!(matches!(handle.cancel(1).await, Err(RunError::Stopped)));
    let rec = handle.get(2).await.unwrap().expect("published");
    assert_eq!(rec.id, 2);
    assert!(handle.get(4).await.unwrap().is_none());
    assert_eq!(ids(&handle.list().await.unwrap()), vec![1, 2, 3]);
}

#[tokio::test]
async fn lists_are_pages_newest_first() {
    let (_data, handle) = handle_with(1005);
    assert_eq!(ids(&handle.list_page(3, None)), vec![1005, 1004, 1003]);
    assert_eq!(ids(&handle.list_page(3, Some(3))), vec![2, 1]);
    assert!(handle.list_page(3, Some(1)).is_empty());
    assert_eq!(handle.list_page(5000, None).len(), MAX_LIST_LIMIT);
    use super::super::api::{ErrorKind, ListQuery, list_pipelines};
    let page = list_pipelines(&handle, ListQuery::default()).await.unwrap();
    assert_eq!(page.len(), DEFAULT_LIST_LIMIT);
    assert_eq!(page[0].id, 1005);
    let page = list_pipelines(
        &handle,
        ListQuery {
            limit: Some(2),
            before: Some(10),
        },
    )
    .await
    .unwrap();
    assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), vec![9, 8]);
    for limit in [0, MAX_LIST_LIMIT + 1] {
        let err = list_pipelines(
            &handle,
            ListQuery {
                limit: Some(limit),
                before: None,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest, "{limit}: {}", err.message);
    }
}
