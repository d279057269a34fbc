//! Webhooks: a push announced by the repository's host (berth's
//! `{"ref", "sha"}` or GitLab's push event), taken with the repository's
//! secret only, and run once per commit and branch.

use serde::Deserialize;

use super::trigger::Triggered;
use super::validate::{check_branch_name, secret_matches};
use super::{RepoError, RepoRun, Repos, blocking};
use crate::exec::source;

/// What a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// A new pipeline.
    Created(u64),
    /// The commit had been run already: its pipeline.
    Existing(u64),
    /// Nothing to do, and why.
    Ignored(String),
}

impl Repos {
    /// A webhook: `token` is the `X-Berth-Token` (or `X-Gitlab-Token`)
    /// header, `body` the JSON push event.
    pub async fn hook(
        &self,
        id: u64,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<HookOutcome, RepoError> {
        let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
        let expected = rec
            .webhook_secret_sha256
            .as_deref()
            .ok_or(RepoError::NoSecret(id))?;
        let Some(token) = token else {
            return Err(RepoError::Unauthorized(
                "no X-Berth-Token (or X-Gitlab-Token) header".into(),
            ));
        };
        if !secret_matches(token, expected) {
            return Err(RepoError::Unauthorized("wrong webhook token".into()));
        }
        let push = match parse_hook(body)? {
            Hook::Ignored(why) => return Ok(HookOutcome::Ignored(why)),
            Hook::Push(push) => push,
        };
        if !rec.branches.contains(&push.branch) {
            return Ok(HookOutcome::Ignored(format!(
                "branch {:?} is not watched (watched: {})",
                push.branch,
                rec.branches.join(", ")
            )));
        }
        if let Some(run) = rec.run(&push.branch, &push.sha) {
            return existing(run);
        }
        let dir = self.current_dir(id).await?;
        let (sha, branch) = (push.sha.clone(), push.branch.clone());
        let on_branch = blocking(move || Ok(source::on_branch(&dir, &sha, &branch)?)).await?;
        if !on_branch {
            return Err(RepoError::Invalid(format!(
                "commit {} is not on branch {:?} of repository {id}",
                push.sha, push.branch
            )));
        }
        match self
            .trigger(id, &push.branch, &push.sha, push.before.as_deref())
            .await?
        {
            Triggered::Created(pipeline) => Ok(HookOutcome::Created(pipeline)),
            Triggered::Existing(run) => existing(&run),
        }
    }
}

fn existing(run: &RepoRun) -> Result<HookOutcome, RepoError> {
    match (run.pipeline, &run.error) {
        (Some(pipeline), _) => Ok(HookOutcome::Existing(pipeline)),
        (None, reason) => Err(RepoError::NoPipeline {
            branch: run.branch.clone(),
            sha: run.sha.clone(),
            reason: reason.clone().unwrap_or_default(),
        }),
    }
}

/// A parsed webhook.
#[derive(Debug, PartialEq, Eq)]
enum Hook {
    Push(Push),
    Ignored(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Push {
    branch: String,
    sha: String,
    before: Option<String>,
}

/// The webhook's body: berth's `{"ref", "sha"}` or GitLab's push event
/// (`ref`, `checkout_sha` / `after`, `before`); other fields are ignored.
#[derive(Debug, Deserialize)]
struct HookBody {
    #[serde(rename = "ref")]
    reference: Option<String>,
    sha: Option<String>,
    checkout_sha: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_hook(body: &[u8]) -> Result<Hook, RepoError> {
    let bad = |m: String| RepoError::Invalid(m);
    let body: HookBody = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the webhook's body is not the expected JSON: {e}")))?;
    let reference = body
        .reference
        .ok_or_else(|| bad("the webhook's body has no \"ref\"".into()))?;
    if reference.starts_with("refs/tags/") {
        return Ok(Hook::Ignored(format!(
            "{reference} is a tag; only branches are watched"
        )));
    }
    let branch = match reference.strip_prefix("refs/heads/") {
        Some(b) => b.to_string(),
        None if reference.starts_with("refs/") => {
            return Ok(Hook::Ignored(format!(
                "{reference} is not a branch; only branches are watched"
            )));
        }
        None => reference.clone(),
    };
    check_branch_name(&branch).map_err(bad)?;
    let sha = body
        .sha
        .or(body.checkout_sha)
        .or(body.after)
        .ok_or_else(|| {
            bad(
                "the webhook's body names no commit (\"sha\", \"checkout_sha\" or \"after\")"
                    .into(),
            )
        })?
        .to_ascii_lowercase();
    if !is_sha(&sha) {
        return Err(bad(format!(
            "{sha:?} is not a commit sha (40 or 64 hex digits)"
        )));
    }
    if sha.bytes().all(|b| b == b'0') {
        return Ok(Hook::Ignored(format!("branch {branch:?} was deleted")));
    }
    let before = body
        .before
        .map(|b| b.to_ascii_lowercase())
        .filter(|b| is_sha(b));
    Ok(Hook::Push(Push {
        branch,
        sha,
        before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn webhook_bodies_in_berths_and_gitlabs_shape() {
        let push = |branch: &str, sha: &str, before: Option<&str>| {
            Hook::Push(Push {
                branch: branch.into(),
                sha: sha.into(),
                before: before.map(str::to_string),
            })
        };
        let body = format!(r#"{{"ref": "main", "sha": "{SHA}"}}"#);
        assert_eq!(
            parse_hook(body.as_bytes()).unwrap(),
            push("main", SHA, None)
        );
        // GitLab's push event, with fields berth does not read.
        let before = "1".repeat(40);
        let body = serde_json::json!({
            "object_kind": "push",
            "ref": "refs/heads/feature/x",
            "before": before,
            "after": SHA,
            "checkout_sha": SHA.to_uppercase(),
            "commits": [{"id": SHA, "message": "m"}],
            "project": {"name": "p"}
        });
        assert_eq!(
            parse_hook(body.to_string().as_bytes()).unwrap(),
            push("feature/x", SHA, Some(&before))
        );
        let body =
            serde_json::json!({"ref": "refs/heads/main", "checkout_sha": null, "after": SHA});
        assert_eq!(
            parse_hook(body.to_string().as_bytes()).unwrap(),
            push("main", SHA, None)
        );
        // Deleted branches and tags are ignored.
        let body = serde_json::json!({"ref": "refs/heads/main", "after": "0".repeat(40)});
        assert!(matches!(
            parse_hook(body.to_string().as_bytes()).unwrap(),
            Hook::Ignored(why) if why.contains("deleted")
        ));
        let body = serde_json::json!({"ref": "refs/tags/v1", "after": SHA});
        assert!(matches!(
            parse_hook(body.to_string().as_bytes()).unwrap(),
            Hook::Ignored(why) if why.contains("tag")
        ));
        // Bad bodies.
        for (body, why) in [
            ("not json".to_string(), "not the expected JSON"),
            (format!(r#"{{"sha": "{SHA}"}}"#), "no \"ref\""),
            (r#"{"ref": "main"}"#.to_string(), "names no commit"),
            (
                r#"{"ref": "main", "sha": "abc"}"#.to_string(),
                "not a commit sha",
            ),
            (
                format!(r#"{{"ref": "a..b", "sha": "{SHA}"}}"#),
                "not a valid branch",
            ),
            (
                r#"{"ref": 5, "sha": 6}"#.to_string(),
                "not the expected JSON",
            ),
        ] {
            match parse_hook(body.as_bytes()) {
                Err(RepoError::Invalid(m)) => assert!(m.contains(why), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
