//! Registered repositories against an in-process cluster: polling runs
//! each new head once (also across a restart of the framework), webhooks
//! need the secret and are idempotent, and bad repositories are refused
//! with the reason.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use berth_ci::exec::api::{HookReply, PipelineSummary};
use berth_ci::exec::repos::{RepoView, ReposConfig};
use berth_ci::exec::runner::PipelineRecord;
use berth_ci::exec::state::PipelineStatus;
use berth_tests::{Cluster, git};
use common::ci_fixture::{self, CiFixture};

mod common;

const SECRET: &str = "a-webhook-secret-0123456789";

struct Fixture {
    ci: CiFixture,
    api: axum::Router,
}

async fn start(cluster: &Cluster, data: &Path) -> Fixture {
    let repos_config = ReposConfig {
        fetch_timeout: Duration::from_secs(30),
    };
    let ci = ci_fixture::start(cluster, data, |_| {})
        .await
        .with_repos(repos_config)
        .await;
    let repos = ci.repos().unwrap().clone();
    let api = berth_ci::exec::api::router(ci.handle.clone())
        .merge(berth_ci::exec::api::repos_router(repos));
    Fixture { ci, api }
}

impl Fixture {
    async fn shut(self) {
        self.ci.shut().await;
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        json: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        ci_fixture::call(&self.api, method, uri, json, headers).await
    }

    async fn repo(&self, id: u64) -> RepoView {
        let (code, body) = self
            .call("GET", &format!("/ci/v1/repos/{id}"), None, &[])
            .await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn pipelines(&self) -> Vec<std::sync::Arc<PipelineRecord>> {
        self.ci.handle.list().await.unwrap()
    }

    /// Waits until `done` holds for the pipelines, up to 60 s.
    async fn wait_pipelines(
        &self,
        what: &str,
        done: impl Fn(&[std::sync::Arc<PipelineRecord>]) -> bool,
    ) -> Vec<std::sync::Arc<PipelineRecord>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let all = self.pipelines().await;
            if done(&all) {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                all.iter()
                    .map(|p| (p.id, p.sha.clone(), p.status()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until repository `id` has been polled `more` more times than
    /// it had been, up to 30 s; returns its view then.
    async fn wait_polls(&self, id: u64, more: u64) -> RepoView {
        let from = self.repo(id).await.polls;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let view = self.repo(id).await;
            if view.polls >= from + more {
                return view;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "repository {id} was polled {} times, not {} more",
                view.polls - from,
                more
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn add(&self, body: serde_json::Value) -> (u16, String) {
        self.call("POST", "/ci/v1/repos", Some(body), &[]).await
    }
}

fn head(dir: &Path) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn commit(dir: &Path, file: &str, text: &str) -> String {
    std::fs::write(dir.join(file), text).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", file]);
    head(dir)
}

const PIPELINE: &str = "build:\n  script:\n    - echo \"built $CI_COMMIT_SHA after $CI_COMMIT_BEFORE_SHA on $CI_COMMIT_BRANCH\"\n";

fn finished(all: &[std::sync::Arc<PipelineRecord>]) -> bool {
    all.iter().all(|p| p.status().is_finished())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_runs_each_new_head_once_also_across_a_restart() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", PIPELINE)]);
    let first = head(repo.path());
    let fx = start(&cluster, data.path()).await;

    let (code, body) = fx
        .add(serde_json::json!({"url": repo.path(), "poll_interval_secs": 1}))
        .await;
    assert_eq!(code, 201, "{body}");
    let view: RepoView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.id, 1);
    assert_eq!(view.branches, ["main"], "the default branch");
    assert_eq!(view.default_branch, "main");
    assert!(!view.remote && !view.webhook);

    // Added: the current head runs at once.
    let all = fx
        .wait_pipelines("the head's pipeline", |all| {
            all.len() == 1 && all[0].status() == PipelineStatus::Success
        })
        .await;
    assert_eq!(
        (
            all[0].sha.as_str(),
            all[0].ref_name.as_str(),
            all[0].source.as_str()
        ),
        (first.as_str(), "main", "push")
    );

    // A new commit: one more pipeline, for it, and no third.
    let second = commit(repo.path(), "README", "changed\n");
    let all = fx
        .wait_pipelines("the new commit's pipeline", |all| {
            all.len() >= 2 && finished(all)
        })
        .await;
    assert_eq!(all[1].sha, second);
    assert_eq!(all[1].source, "push");
    assert_eq!(all[1].status(), PipelineStatus::Success);
    let view = fx.wait_polls(1, 3).await;
    assert_eq!(
        fx.pipelines().await.len(),
        2,
        "the same head is not run again"
    );
    assert_eq!(view.heads["main"], second);
    assert_eq!(view.last_pipeline, Some(2));
    assert_eq!(view.last_error, None);
    // The job saw the previous head as CI_COMMIT_BEFORE_SHA.
    let log = std::fs::read_to_string(fx.ci.handle.log_path(2, 0, 1)).unwrap_or_default();
    assert!(
        log.contains(&format!("built {second} after {first} on main")),
        "{log}"
    );

    // A restart of the framework runs nothing again...
    fx.shut().await;
    let fx = start(&cluster, data.path()).await;
    let view = fx.wait_polls(1, 2).await;
    assert_eq!(view.last_error, None);
    assert_eq!(
        fx.pipelines().await.len(),
        2,
        "nothing re-run after a restart"
    );
    // ...and goes on polling.
    let third = commit(repo.path(), "README", "again\n");
    let all = fx
        .wait_pipelines("the third commit's pipeline", |all| all.len() >= 3)
        .await;
    assert_eq!(all[2].sha, third);
    assert_eq!(all.len(), 3);
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_need_the_secret_and_run_a_commit_once() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let origin = berth_tests::git_repo(&[(".gitlab-ci.yml", PIPELINE)]);
    let first = head(origin.path());
    let fx = start(&cluster, data.path()).await;
    let url = format!("file://{}", origin.path().display());
    let (code, body) = fx
        .add(serde_json::json!({
            "url": url,
            "poll_interval_secs": 3600,
            "webhook_secret": SECRET,
        }))
        .await;
    assert_eq!(code, 201, "{body}");
    assert!(!body.contains(SECRET), "the secret is never shown: {body}");
    let view: RepoView = serde_json::from_str(&body).unwrap();
    assert!(view.remote && view.webhook);
    let project = origin
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(view.project, project);
    let mirror = data.path().join("repos/1.git");
    assert!(mirror.join("HEAD").is_file(), "a bare mirror");
    fx.wait_pipelines("the head's pipeline", |all| all.len() == 1)
        .await;

    // A push the mirror has not fetched yet.
    let second = commit(origin.path(), "README", "pushed\n");
    let body = serde_json::json!({"ref": "refs/heads/main", "sha": second});
    let hook = "/ci/v1/repos/1/hook";
    let (code, reply) = fx.call("POST", hook, Some(body.clone()), &[]).await;
    assert_eq!(code, 401, "{reply}");
    let (code, reply) = fx
        .call(
            "POST",
            hook,
            Some(body.clone()),
            &[("X-Berth-Token", "a-wrong-secret-0123456789")],
        )
        .await;
    assert_eq!(code, 401, "{reply}");
    assert!(reply.contains("wrong webhook token"), "{reply}");
    assert_eq!(fx.pipelines().await.len(), 1, "nothing triggered");

    let (code, reply) = fx
        .call(
            "POST",
            hook,
            Some(body.clone()),
            &[("X-Berth-Token", SECRET)],
        )
        .await;
    assert_eq!(code, 201, "{reply}");
    let created: HookReply = serde_json::from_str(&reply).unwrap();
    assert_eq!((created.pipeline, created.created), (Some(2), true));
    let rec = fx.ci.handle.get(2).await.unwrap().unwrap();
    assert_eq!(
        (rec.sha.as_str(), rec.source.as_str()),
        (second.as_str(), "push")
    );
    assert_eq!(rec.project, project);

    // The same push again, and as GitLab sends it: the same pipeline.
    let (code, reply) = fx
        .call("POST", hook, Some(body), &[("X-Berth-Token", SECRET)])
        .await;
    assert_eq!(code, 200, "{reply}");
    let again: HookReply = serde_json::from_str(&reply).unwrap();
    assert_eq!((again.pipeline, again.created), (Some(2), false));
    let gitlab = serde_json::json!({
        "object_kind": "push",
        "ref": "refs/heads/main",
        "before": first,
        "after": second,
        "checkout_sha": second,
        "commits": [],
    });
    let (code, reply) = fx
        .call("POST", hook, Some(gitlab), &[("X-Gitlab-Token", SECRET)])
        .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(
        serde_json::from_str::<HookReply>(&reply).unwrap().pipeline,
        Some(2)
    );

    // Pushes not watched, unknown commits and repositories, bad bodies.
    let (code, reply) = fx
        .call(
            "POST",
            hook,
            Some(serde_json::json!({"ref": "dev", "sha": second})),
            &[("X-Berth-Token", SECRET)],
        )
        .await;
    assert_eq!(code, 202, "{reply}");
    assert!(reply.contains("\\\"dev\\\" is not watched"), "{reply}");
    let (code, reply) = fx
        .call(
            "POST",
            hook,
            Some(serde_json::json!({"ref": "main", "sha": "ab".repeat(20)})),
            &[("X-Berth-Token", SECRET)],
        )
        .await;
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("is not on branch \\\"main\\\""), "{reply}");
    let (code, reply) = fx
        .call(
            "POST",
            hook,
            Some(serde_json::json!({"ref": "main"})),
            &[("X-Berth-Token", SECRET)],
        )
        .await;
    assert_eq!(code, 400, "{reply}");
    let (code, _) = fx
        .call(
            "POST",
            "/ci/v1/repos/99/hook",
            Some(serde_json::json!({"ref": "main", "sha": second})),
            &[("X-Berth-Token", SECRET)],
        )
        .await;
    assert_eq!(code, 404);
    assert_eq!(fx.pipelines().await.len(), 2);
    fx.wait_pipelines("both pipelines to end", finished).await;

    // Removed: the mirror goes, the pipelines stay.
    let (code, reply) = fx.call("DELETE", "/ci/v1/repos/1", None, &[]).await;
    assert_eq!(code, 200, "{reply}");
    assert!(!mirror.exists());
    let (code, _) = fx.call("GET", "/ci/v1/repos/1", None, &[]).await;
    assert_eq!(code, 404);
    let (code, _) = fx
        .call(
            "POST",
            hook,
            Some(serde_json::json!({"ref": "main", "sha": second})),
            &[("X-Berth-Token", SECRET)],
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = fx.call("DELETE", "/ci/v1/repos/1", None, &[]).await;
    assert_eq!(code, 404);
    assert_eq!(fx.pipelines().await.len(), 2);
    fx.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_repositories_are_refused_and_polling_errors_are_shown_until_fixed() {
    let cluster = Cluster::start(&["cpus:4;mem:4096;disk:10000"])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let fx = start(&cluster, data.path()).await;
    let good = berth_tests::git_repo(&[(".gitlab-ci.yml", PIPELINE)]);
    let plain = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    git(empty.path(), &["init", "-q", "-b", "main"]);
    let missing = good.path().join("no-such-dir");
    let cases = [
        (
            serde_json::json!({"url": "relative/path"}),
            "neither an absolute path nor a URL",
        ),
        (serde_json::json!({"url": missing}), "is not a directory"),
        (
            serde_json::json!({"url": plain.path()}),
            "is not a git repository",
        ),
        (
            serde_json::json!({"url": empty.path()}),
            "no default branch",
        ),
        (
            serde_json::json!({"url": good.path(), "branches": ["nope"]}),
            "branch \\\"nope\\\" does not exist",
        ),
        (
            serde_json::json!({"url": good.path(), "branches": ["a..b"]}),
            "not a valid branch name",
        ),
        (
            serde_json::json!({"url": good.path(), "poll_interval_secs": 0}),
            "from 1 s to 86400 s, not 0 s",
        ),
        (
            serde_json::json!({"url": good.path(), "webhook_secret": "too-short"}),
            "at least 16 characters, not 9",
        ),
        (
            serde_json::json!({"url": format!("file://{}", missing.display())}),
            "cannot read file://",
        ),
        (
            serde_json::json!({"url": "ftp://example.invalid/p"}),
            "unsupported scheme",
        ),
        (
            serde_json::json!({"url": good.path(), "branch": "main"}),
            "unknown field `branch`",
        ),
        (
            serde_json::json!({"branches": ["main"]}),
            "missing field `url`",
        ),
    ];
    for (body, why) in cases {
        let (code, reply) = fx.add(body.clone()).await;
        assert_eq!(code, 400, "{body}: {reply}");
        assert!(reply.contains(why), "{body}: {reply}");
    }
    // Credentials in a URL never come back, not even through git's own
    // error message: a token, and a password with a `/` in it.
    for (url, secret) in [
        (
            "https://glpat-0123456789abcdefghij@127.0.0.1:9/g/p.git",
            "0123456789abcdefghij",
        ),
        (
            "https://bot:pa/ss-w0rd-secret@127.0.0.1:9/g/p.git",
            "ss-w0rd-secret",
        ),
    ] {
        let (code, reply) = fx.add(serde_json::json!({ "url": url })).await;
        assert_eq!(code, 400, "{reply}");
        assert!(reply.contains("cannot read https://"), "{reply}");
        assert!(!reply.contains(secret), "{reply}");
    }
    let (code, reply) = fx.call("GET", "/ci/v1/repos", None, &[]).await;
    assert_eq!((code, reply.as_str()), (200, "[]"), "nothing stored");
    assert!(
        std::fs::read_dir(data.path().join("repos"))
            .unwrap()
            .next()
            .is_none(),
        "no clone left behind"
    );

    // The first good one gets id 1, and cannot be added twice.
    let (code, reply) = fx.add(serde_json::json!({"url": good.path()})).await;
    assert_eq!(code, 201, "{reply}");
    assert!(reply.contains("\"id\":1"), "{reply}");
    let (code, reply) = fx
        .add(serde_json::json!({"url": format!("{}/", good.path().display())}))
        .await;
    assert_eq!(code, 409, "{reply}");
    assert!(
        reply.contains("already registered as repository 1"),
        "{reply}"
    );

    // A remote whose head has no pipeline file: remembered as an error, not
    // retried; a fetch that fails: shown, and retried until it works.
    let origin = berth_tests::git_repo(&[("README", "no pipeline yet\n")]);
    let url = format!("file://{}", origin.path().display());
    let (code, reply) = fx
        .add(serde_json::json!({"url": url, "poll_interval_secs": 1}))
        .await;
    assert_eq!(code, 201, "{reply}");
    let view = fx.wait_polls(2, 1).await;
    let error = view.last_error.unwrap_or_default();
    assert!(error.contains("has no .gitlab-ci.yml"), "{error}");
    assert_eq!(view.runs.len(), 1);
    assert_eq!(view.runs[0].pipeline, None);
    let moved = origin.path().with_extension("moved");
    std::fs::rename(origin.path(), &moved).unwrap();
    let view = fx.wait_polls(2, 2).await;
    let error = view.last_error.unwrap_or_default();
    assert!(error.contains("cannot fetch file://"), "{error}");
    std::fs::rename(&moved, origin.path()).unwrap();
    commit(origin.path(), ".gitlab-ci.yml", PIPELINE);
    let all = fx
        .wait_pipelines("the fixed remote's pipeline", |all| {
            all.iter().any(|p| p.project == view.project)
        })
        .await;
    let view = fx.wait_polls(2, 1).await;
    assert_eq!(view.last_error, None, "fixed");
    assert_eq!(
        view.runs.len(),
        2,
        "the commit without a pipeline was not retried"
    );
    let summaries: Vec<PipelineSummary> = {
        let (_, body) = fx.call("GET", "/ci/v1/pipelines", None, &[]).await;
        serde_json::from_str(&body).unwrap()
    };
    assert_eq!(summaries.len(), all.len());
    fx.shut().await;
}
