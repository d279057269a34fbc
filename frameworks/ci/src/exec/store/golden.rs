//! Golden tests of the CI store: a pipeline record and a repository record
//! as version 1 stores them, and whole files of version 1 and of version 0
//! (before files had a version). The files are in
//! `frameworks/ci/testdata/store-v1/`, written once (with
//! `BERTH_WRITE_GOLDEN=1`, only when missing) and never rewritten; see
//! [`super`] for what to do when a test fails.
//!
//! Records are JSON and may gain fields with defaults, so "the same
//! bytes" means: every field of the golden record is written by this
//! berth with the same value (new fields may come next to them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::*;
use crate::exec::expiry::Expired;
use crate::exec::repos::{RepoRecord, RepoRun};
use crate::exec::runner::PipelineRecord;
use crate::exec::state::{
    AllowFailure, FailureReason, JobEnd, JobNode, JobStatus, Pipeline, PipelineStatus, RetryPolicy,
    When,
};
use crate::{Config, Context, MemoryRepository, ParseOptions};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/store-v1")
        .join(name)
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
const T0_MS: u64 = 1_765_432_100_000;

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

const YAML: &str = "stages: [build, test, deploy]
variables:
  CARGO_TERM_COLOR: always
build:
  stage: build
  image: rust:1.90
  script: [cargo build --release]
  artifacts:
    paths: [target/release/berth]
    expire_in: 1 week
test:
  stage: test
  script: [cargo test]
  retry: 1
  timeout: 30m
deploy:
  stage: deploy
  script: [./deploy.sh]
  when: manual
  resource_group: production
";

/// A pipeline of three stages: `build` passed, `test` failed once on a
/// script failure and runs its retry, `deploy` (manual) waits for it.
fn pipeline() -> PipelineRecord {
    let (config, _) = Config::parse(YAML, &ParseOptions::default()).unwrap();
    let ctx = Context {
        project_name: "berth".into(),
        project_dir: "/builds/berth".into(),
        commit_sha: SHA.into(),
        ref_name: "main".into(),
        default_branch: "main".into(),
        pipeline_id: 42,
        ..Context::default()
    };
    let plan = config
        .plan(&ctx, &MemoryRepository::default())
        .unwrap()
        .unwrap();
    let node = |name: &str, stage, when, retry| JobNode {
        name: name.into(),
        stage,
        needs: None,
        when,
        allow_failure: AllowFailure::no(),
        retry: RetryPolicy {
            max: retry,
            when: FailureReason::ALL.to_vec(),
            exit_codes: Vec::new(),
        },
    };
    let mut state = Pipeline::new(vec![
        node("build", 0, When::OnSuccess, 0),
        node("test", 1, When::OnSuccess, 1),
        node("deploy", 2, When::Manual, 0),
    ])
    .unwrap();
    state.advance(at(T0_MS));
    state
        .started(0, "ci-42-build-1", at(T0_MS + 1_000))
        .unwrap();
    state
        .finished(0, JobEnd::success(), at(T0_MS + 60_000))
        .unwrap();
    state.advance(at(T0_MS + 60_000));
    state
        .started(1, "ci-42-test-1", at(T0_MS + 61_000))
        .unwrap();
    let retried = state
        .finished(1, JobEnd::script_failure(101), at(T0_MS + 120_000))
        .unwrap();
    assert!(retried);
    state
        .started(1, "ci-42-test-2", at(T0_MS + 121_000))
        .unwrap();
    PipelineRecord {
        id: 42,
        project: "berth".into(),
        sha: SHA.into(),
        ref_name: "main".into(),
        source: "push".into(),
        token: "3q2+7w7vP0eOIOVtqzBW9g".into(),
        created_ms: T0_MS,
        finished_ms: None,
        plan,
        state,
        masked_values: vec!["hunter22hunter22".into()],
        agents: vec!["node-1".into(), "node-2".into(), String::new()],
        attempt_agents: BTreeMap::from([
            ("ci-42-build-1".to_owned(), "node-1".to_owned()),
            ("ci-42-test-1".to_owned(), "node-1".to_owned()),
            ("ci-42-test-2".to_owned(), "node-2".to_owned()),
        ]),
        kill_reasons: vec![None, Some(FailureReason::JobExecutionTimeout), None],
        repository: "/srv/git/berth.git".into(),
        branch: true,
        auto_canceled_by: None,
        waiting_for_resource: Vec::new(),
        expired: Expired {
            artifacts: BTreeMap::new(),
            logs: BTreeMap::from([(0, 1)]),
            source: false,
        },
        reports: BTreeMap::new(),
        family: Default::default(),
        stuck: Vec::new(),
    }
}

fn repo() -> RepoRecord {
    RepoRecord {
        id: 3,
        url: "https://git.example.org/berth/berth.git".into(),
        remote: true,
        project: "berth".into(),
        default_branch: "main".into(),
        branches: vec!["main".into(), "release/*".into()],
        poll_interval_secs: 60,
        webhook_secret_sha256: Some(
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
        ),
        heads: BTreeMap::from([("main".to_owned(), SHA.to_owned())]),
        runs: vec![
            RepoRun {
                branch: "main".into(),
                sha: SHA.into(),
                source: "push".into(),
                pipeline: Some(42),
                error: None,
                at_ms: T0_MS,
            },
            RepoRun {
                branch: "release/1.0".into(),
                sha: "0".repeat(40),
                source: "push".into(),
                pipeline: None,
                error: Some("no job of .gitlab-ci.yml runs for this push".into()),
                at_ms: T0_MS + 5_000,
            },
        ],
        last_error: Some("git fetch: connection refused".into()),
        created_ms: T0_MS - 86_400_000,
    }
}

/// Reads a golden record file, or writes it from `current` when it is
/// missing and `BERTH_WRITE_GOLDEN` is set.
fn golden(name: &str, current: &[u8]) -> Vec<u8> {
    let path = testdata(name);
    match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(_) if std::env::var_os("BERTH_WRITE_GOLDEN").is_some() && !path.exists() => {
            std::fs::write(&path, current).unwrap();
            panic!("wrote {}: review and commit it", path.display());
        }
        Err(e) => panic!(
            "{}: {e} (run with BERTH_WRITE_GOLDEN=1 to write a missing golden file)",
            path.display()
        ),
    }
}

/// Panics unless `written` holds every field of `golden` with its value.
fn assert_holds(what: &str, golden: &[u8], written: &[u8]) {
    fn holds(path: &str, golden: &serde_json::Value, written: &serde_json::Value) {
        use serde_json::Value;
        match (golden, written) {
            (Value::Object(g), Value::Object(w)) => {
                for (k, v) in g {
                    let Some(wv) = w.get(k) else {
                        panic!("{path}.{k} is no longer written");
                    };
                    holds(&format!("{path}.{k}"), v, wv);
                }
            }
            (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
                for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                    holds(&format!("{path}[{i}]"), gv, wv);
                }
            }
            _ => assert_eq!(golden, written, "{path}"),
        }
    }
    let golden: serde_json::Value = serde_json::from_slice(golden).unwrap();
    let written: serde_json::Value = serde_json::from_slice(written).unwrap();
    let hint = std::panic::catch_unwind(|| holds("", &golden, &written));
    assert!(
        hint.is_ok(),
        "{what}: this berth no longer writes what the golden record holds (see the panic \
         above). Golden files are never rewritten: keep the field, or bump FORMAT_VERSION \
         and migrate (store.rs)."
    );
}

#[test]
fn version_1_records_read_and_keep_their_fields() {
    let written = serde_json::to_vec(&pipeline()).unwrap();
    let bytes = golden("pipeline.json", &written);
    let p: PipelineRecord = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (p.id, p.sha.as_str(), p.ref_name.as_str()),
        (42, SHA, "main")
    );
    assert_eq!(p.plan.stages, ["build", "test", "deploy"]);
    let names: Vec<&str> = p.plan.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["build", "test", "deploy"]);
    assert_eq!(p.plan.jobs[2].resource_group.as_deref(), Some("production"));
    assert_eq!(p.plan.jobs[1].timeout, Some(Duration::from_secs(1800)));
    assert_eq!(p.plan.variables["CI_PIPELINE_ID"], "42");
    assert_eq!(p.status(), PipelineStatus::Running);
    let statuses: Vec<JobStatus> = p.state.jobs().iter().map(|j| j.status).collect();
    assert_eq!(
        statuses,
        [JobStatus::Success, JobStatus::Running, JobStatus::Created]
    );
    assert_eq!(p.state.jobs()[1].attempts.len(), 2);
    assert_eq!(p.attempt_agents["ci-42-test-2"], "node-2");
    assert_eq!(p.kill_reasons[1], Some(FailureReason::JobExecutionTimeout));
    assert_eq!(p.expired.logs[&0], 1);
    assert_eq!(p.masked_values, ["hunter22hunter22"]);
    assert_holds(
        "pipeline.json, read and written back",
        &bytes,
        &serde_json::to_vec(&p).unwrap(),
    );
    assert_holds("pipeline.json, as this berth builds it", &bytes, &written);

    let written = serde_json::to_vec(&repo()).unwrap();
    let bytes = golden("repo.json", &written);
    let r: RepoRecord = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(r, repo());
    assert_holds("repo.json, as this berth builds it", &bytes, &written);
}

/// Fills a store as the runner and the repository poller do.
fn fill(store: &Store) {
    let repo_id = store.create_repo(|id| RepoRecord { id, ..repo() }).unwrap();
    let remember = RepoUpdate {
        repo: repo_id,
        apply: Box::new(|bytes, pipeline| {
            let mut r: RepoRecord = serde_json::from_slice(bytes).ok()?;
            r.runs[0].pipeline = Some(pipeline);
            serde_json::to_vec(&r).ok()
        }),
    };
    let id = store
        .linked(Some(remember))
        .create_with(|id| Some(PipelineRecord { id, ..pipeline() }))
        .unwrap();
    assert_eq!(id, Some(1));
    let second = store
        .create(|id| PipelineRecord {
            id,
            ref_name: "release/1.0".into(),
            branch: false,
            ..pipeline()
        })
        .unwrap();
    assert_eq!(second, 2);
}

/// Reads a golden store file through a copy (opening writes) and checks
/// what it holds.
fn read_copy(name: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ci.redb");
    std::fs::copy(testdata(name), &copy).unwrap();
    let store = Store::open(&copy).unwrap();
    let all: Vec<(u64, PipelineRecord)> = store.all().unwrap();
    let ids: Vec<(u64, u64, &str)> = all
        .iter()
        .map(|(k, p)| (*k, p.id, p.ref_name.as_str()))
        .collect();
    assert_eq!(ids, [(1, 1, "main"), (2, 2, "release/1.0")]);
    let repos: Vec<(u64, RepoRecord)> = store.repos().unwrap();
    assert_eq!(repos.len(), 1);
    assert_eq!(repos[0].1.runs[0].pipeline, Some(1));
    assert_eq!(repos[0].1.url, repo().url);
    // Ids go on where the file left them.
    assert_eq!(
        store
            .create(|id| PipelineRecord { id, ..pipeline() })
            .unwrap(),
        3
    );
    assert_eq!(
        store.create_repo(|id| RepoRecord { id, ..repo() }).unwrap(),
        2
    );
    (dir, store)
}

fn format_version(store: &Store) -> Option<u64> {
    let read = store.db.begin_read().unwrap();
    let meta = read.open_table(META).unwrap();
    meta.get(FORMAT_KEY).unwrap().map(|v| v.value())
}

/// Writes a golden store file when it is missing and `BERTH_WRITE_GOLDEN`
/// is set; `strip` removes the format version (what berth wrote before
/// files had one).
fn write_file(name: &str, strip: bool) {
    let path = testdata(name);
    if path.exists() || std::env::var_os("BERTH_WRITE_GOLDEN").is_none() {
        return;
    }
    let store = Store::open(&path).unwrap();
    fill(&store);
    if strip {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META).unwrap().remove(FORMAT_KEY).unwrap();
        txn.commit().unwrap();
    }
    drop(store);
    panic!("wrote {}: review and commit it", path.display());
}

#[test]
fn a_version_1_file_opens_and_reads_back() {
    write_file("ci.redb", false);
    let (_dir, store) = read_copy("ci.redb");
    assert_eq!(format_version(&store), Some(1));
}

#[test]
fn a_file_without_a_version_reads_as_version_1_and_gets_one() {
    write_file("ci-v0.redb", true);
    let (_dir, store) = read_copy("ci-v0.redb");
    assert_eq!(format_version(&store), Some(FORMAT_VERSION));
}

#[test]
fn a_newer_file_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ci.redb");
    {
        let store = Store::open(&path).unwrap();
        fill(&store);
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(FORMAT_KEY, FORMAT_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Version { found, .. } if *found == FORMAT_VERSION + 1),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("format version 2") && msg.contains("ci.redb"),
        "{msg}"
    );
    // Refused again: the first refusal changed nothing.
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::Version { .. })
    ));
}
