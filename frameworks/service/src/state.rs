//! The framework's intent: every app with its current version, the older
//! versions kept, its running deployment and a short history of finished
//! ones. Pure: no IO, no clock reads (time is an argument), no randomness
//! (deployment ids are arguments).
//!
//! ## Operations
//!
//! [`Services::apply`] checks an [`Op`] against the whole set (ids that
//! clash with groups, service ports held by another app, dependencies
//! that do not exist or form a cycle, the one-deployment-per-app lock) and
//! answers either an [`OpError`] (nothing changed) or an [`Applied`]: the
//! app's new state, what changed ([`OpOutcome`]) and the key-value writes
//! ([`Applied::writes`]). The caller persists the writes, then
//! [`Services::commit`]s the `Applied`; [`Services::plan`] answers what an
//! operation would do without doing it.
//!
//! Marathon's rules, as berth keeps them:
//! - One deployment per app. An operation on an app with a running
//!   deployment is refused ([`OpError::Locked`], HTTP 409) unless `force`:
//!   then the running deployment ends as superseded and the new one starts
//!   from what runs. The planner's [`Deployment::new`] replaces instances
//!   of every config version but the target's only when the versions
//!   differ, so the new deployment starts from the cancelled one's `from`
//!   version when its config differs from the target's, else from its
//!   `to` version: instances of both old versions are replaced.
//! - Every change is a new version, stamped `max(now, newest + 1 ms)` so
//!   that an app's versions are unique and ordered. A change that changes
//!   nothing makes no version and no deployment.
//! - Restart is a new version with the same definition and a new config
//!   version; rollback to a kept version is an update to that version's
//!   definition (a new version, as Marathon does).
//! - Remove starts a deployment to zero; the app is gone for the API at
//!   once (GET answers 404, its id may be added again with `force`), and
//!   leaves the state, versions included, when that deployment ends.
//! - Cancelling a deployment (Marathon's DELETE /v2/deployments/{id})
//!   starts a deployment back to its `from` version (an added app is
//!   removed, a removed app comes back); with `force` it just stops the
//!   plan and the app's intent stays the target (a cancelled removal
//!   removes the app at once; its instances are left to the runtime).
//! - The runtime reports its planner steps with [`Op::Step`]; a finished
//!   deployment moves to the history; one that rolled back makes its
//!   `from` version current again.
//!
//! ## Bounds
//!
//! An app keeps its current version, the [`MAX_OLD_VERSIONS`] newest older
//! ones, and every version its running deployment names (never dropped
//! while it runs); and the [`MAX_HISTORY`] last finished deployments.
//!
//! Storage: see `store.rs` ([`Services::load`], [`Applied::writes`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::app::{AppDefinition, AppId, AppVersion};
use crate::deploy::{Deployment, State};
use crate::error::OpError;
use crate::time::Timestamp;

mod checks;
mod ops;
mod plan;
mod store;

pub use plan::PlanView;
pub use store::{FORMAT, Write, key_of_app, key_of_deployment, key_of_version};

#[cfg(test)]
mod tests;

/// Older versions kept per app (besides the current one and those a
/// running deployment names).
pub const MAX_OLD_VERSIONS: usize = 20;
/// Finished deployments kept per app.
pub const MAX_HISTORY: usize = 10;

/// A deployment's id: UUID-shaped (`8-4-4-4-12` lowercase hex digits).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeploymentId(String);

impl DeploymentId {
    /// The id made from `n`, laid out as a version 4 UUID (the caller
    /// passes random or counted bits; nothing here is random).
    pub fn from_u128(n: u128) -> DeploymentId {
        let n = (n & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
        let h = format!("{n:032x}");
        DeploymentId(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    /// Parses an id; the error quotes the input.
    pub fn parse(s: &str) -> Result<DeploymentId, String> {
        let ok = s.len() == 36
            && s.bytes().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            });
        if ok {
            Ok(DeploymentId(s.to_string()))
        } else {
            Err(format!(
                "{} is not a deployment id (8-4-4-4-12 lowercase hex digits)",
                berth_scheduler_core::error::quoted(s)
            ))
        }
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeploymentId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        DeploymentId::parse(&s)
    }
}

impl From<DeploymentId> for String {
    fn from(d: DeploymentId) -> String {
        d.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What started a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Cause {
    /// A new app.
    Add,
    /// A new definition (PUT or PATCH).
    Update,
    /// A new instance count.
    Scale,
    /// A restart.
    Restart,
    /// A rollback to a kept version.
    Rollback,
    /// The app's removal.
    Remove,
    /// Going back from a cancelled deployment.
    Revert,
}

/// How a deployment ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Outcome {
    /// The target version runs.
    Succeeded,
    /// The planner stopped it.
    Failed {
        /// Why.
        why: String,
    },
    /// The planner went back to the `from` version by itself.
    RolledBack {
        /// Why.
        why: String,
    },
    /// A forced operation replaced it.
    Superseded {
        /// The deployment that replaced it.
        by: DeploymentId,
    },
    /// Cancelled; `by` is the deployment going back, if any.
    Cancelled {
        /// The deployment going back (none with `force`).
        by: Option<DeploymentId>,
    },
}

/// The running deployment of an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningDeployment {
    /// Its id.
    pub id: DeploymentId,
    /// What started it.
    pub cause: Cause,
    /// The version it goes from (a kept version of the app), if any.
    pub from: Option<Timestamp>,
    /// The version it goes to; `None` for a removal.
    pub to: Option<Timestamp>,
    /// When it started.
    pub started_at: Timestamp,
    /// The planner's state.
    pub plan: Deployment,
}

/// A finished deployment, in the app's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinishedDeployment {
    /// Its id.
    pub id: DeploymentId,
    /// What started it.
    pub cause: Cause,
    /// The version it went from.
    pub from: Option<Timestamp>,
    /// The version it went to.
    pub to: Option<Timestamp>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// How it ended.
    pub result: Outcome,
}

/// One app: its versions, running deployment and history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppState {
    /// The version the app should run (while it is being removed: the
    /// version being stopped).
    pub current: AppVersion,
    /// Kept older versions, by version.
    pub older: BTreeMap<Timestamp, AppVersion>,
    /// The running deployment.
    pub deployment: Option<RunningDeployment>,
    /// Finished deployments, oldest first.
    pub history: Vec<FinishedDeployment>,
}

impl AppState {
    /// The app's id.
    pub fn id(&self) -> &AppId {
        &self.current.definition.id
    }

    /// Whether the app is being removed (gone for the API).
    pub fn removing(&self) -> bool {
        self.deployment.as_ref().is_some_and(|d| d.to.is_none())
    }

    /// The kept version `v` (current or older).
    pub fn version(&self, v: Timestamp) -> Option<&AppVersion> {
        if self.current.version == v {
            Some(&self.current)
        } else {
            self.older.get(&v)
        }
    }

    /// Every kept version, oldest first.
    pub fn versions(&self) -> Vec<&AppVersion> {
        let mut v: Vec<&AppVersion> = self.older.values().collect();
        v.push(&self.current);
        v.sort_by_key(|a| a.version);
        v
    }

    /// A kept version whose instances carry config version `config`
    /// (the runtime launches `Action::Launch { version }` from it), the
    /// newest such.
    pub fn by_config_version(&self, config: Timestamp) -> Option<&AppVersion> {
        self.versions()
            .into_iter()
            .rev()
            .find(|v| v.config_version() == config)
    }

    /// The time stamp of the next version made at `now`: later than every
    /// kept version.
    fn next_stamp(&self, now: Timestamp) -> Timestamp {
        let newest = self.versions().last().map_or(now, |v| v.version);
        if now > newest {
            now
        } else {
            Timestamp(newest.0.saturating_add(1))
        }
    }
}

/// What an operation asks.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Create an app (Marathon's POST /v2/apps).
    Add(AppDefinition),
    /// Replace an app's definition (PUT, `partialUpdate=false`); with
    /// `create`, an unknown app is added.
    Update {
        /// The new definition (its id names the app).
        definition: AppDefinition,
        /// Add the app when it does not exist.
        create: bool,
    },
    /// Merge a partial definition into the current one (PATCH, and PUT's
    /// default): each top-level field given replaces the current one,
    /// `null` resets it to its default. With `create`, an unknown app is
    /// added from `patch` as a whole definition.
    Patch {
        /// The app.
        id: AppId,
        /// A JSON object of top-level fields.
        patch: serde_json::Value,
        /// Add the app when it does not exist.
        create: bool,
    },
    /// Set `instances`.
    Scale {
        /// The app.
        id: AppId,
        /// The new count.
        instances: u32,
    },
    /// Replace every instance.
    Restart {
        /// The app.
        id: AppId,
    },
    /// Go back to the definition of a kept version.
    Rollback {
        /// The app.
        id: AppId,
        /// The version.
        version: Timestamp,
    },
    /// Remove the app (a deployment to zero first).
    Remove {
        /// The app.
        id: AppId,
    },
    /// Let a paused deployment go on (canary pause, blue/green preview).
    Promote {
        /// The app.
        id: AppId,
    },
    /// Cancel a running deployment: go back to its `from` version, or
    /// with `force` just stop it.
    CancelDeployment {
        /// The deployment.
        id: DeploymentId,
    },
    /// The runtime's report: the planner's new state of a deployment
    /// (after [`crate::deploy::step`]).
    Step {
        /// The deployment.
        id: DeploymentId,
        /// Its new state.
        plan: Deployment,
    },
}

impl Op {
    /// The app the operation names, if it names one directly.
    pub fn app(&self) -> Option<&AppId> {
        match self {
            Op::Add(d) | Op::Update { definition: d, .. } => Some(&d.id),
            Op::Patch { id, .. }
            | Op::Scale { id, .. }
            | Op::Restart { id }
            | Op::Rollback { id, .. }
            | Op::Remove { id }
            | Op::Promote { id } => Some(id),
            Op::CancelDeployment { .. } | Op::Step { .. } => None,
        }
    }
}

/// An operation and Marathon's `force`.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The operation.
    pub op: Op,
    /// Cancel the running deployment (for `CancelDeployment`: stop without
    /// going back).
    pub force: bool,
}

/// What an operation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    /// Nothing (the definition is the same, or a step changed nothing).
    None,
    /// A new app, starting.
    Start,
    /// Instances added or removed, none replaced.
    Scale,
    /// Every instance replaced.
    Restart,
    /// Stopping every instance (removal, or the revert of an add).
    Stop,
    /// A paused deployment let go on.
    Promote,
    /// A deployment stopped without going back.
    Cancel,
    /// A deployment's progress recorded.
    Progress,
    /// A deployment ended (moved to the history).
    Finish,
    /// The app and its versions were dropped.
    Drop,
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpOutcome {
    /// The app.
    pub app: AppId,
    /// What changed.
    pub effect: Effect,
    /// The app's current version afterwards (`None` once it is being
    /// removed or gone).
    pub current: Option<AppVersion>,
    /// Whether the operation made a new version.
    pub new_version: bool,
    /// The deployment it started.
    pub deployment: Option<DeploymentId>,
    /// The deployment it ended (superseded, cancelled or finished).
    pub ended: Option<DeploymentId>,
    /// When the operation was applied.
    pub at: Timestamp,
}

/// The result of [`Services::apply`]: apply it with [`Services::commit`]
/// after persisting [`Applied::writes`].
#[derive(Clone, Debug)]
pub struct Applied {
    generation: u64,
    app: AppId,
    before: Option<AppState>,
    after: Option<AppState>,
    /// What the operation did.
    pub outcome: OpOutcome,
}

impl Applied {
    /// The app's state after the operation (`None`: dropped).
    pub fn after(&self) -> Option<&AppState> {
        self.after.as_ref()
    }
}

/// [`Services::commit`] was given an [`Applied`] computed against another
/// state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the operation was planned against an older state; apply it again")]
pub struct Stale;

/// The framework's intent: every app.
#[derive(Clone, Debug, Default)]
pub struct Services {
    apps: BTreeMap<AppId, AppState>,
    /// Bumped by every commit; not stored.
    generation: u64,
}

impl PartialEq for Services {
    fn eq(&self, other: &Self) -> bool {
        self.apps == other.apps
    }
}

impl Services {
    /// No apps.
    pub fn new() -> Services {
        Services::default()
    }

    /// Every app, those being removed included.
    pub fn all(&self) -> impl Iterator<Item = &AppState> {
        self.apps.values()
    }

    /// The apps the API shows (not being removed), by id.
    pub fn apps(&self) -> impl Iterator<Item = &AppState> {
        self.apps.values().filter(|a| !a.removing())
    }

    /// An app the API shows.
    pub fn app(&self, id: &AppId) -> Option<&AppState> {
        self.apps.get(id).filter(|a| !a.removing())
    }

    /// An app, also while it is being removed.
    pub fn get(&self, id: &AppId) -> Option<&AppState> {
        self.apps.get(id)
    }

    /// Every running deployment with its app.
    pub fn deployments(&self) -> impl Iterator<Item = (&AppState, &RunningDeployment)> {
        self.apps
            .values()
            .filter_map(|a| a.deployment.as_ref().map(|d| (a, d)))
    }

    /// The running deployment `id` and its app.
    pub fn deployment(&self, id: &DeploymentId) -> Option<(&AppState, &RunningDeployment)> {
        self.deployments().find(|(_, d)| d.id == *id)
    }

    /// Checks `req` against the whole set; changes nothing.
    pub fn apply(
        &self,
        req: &Request,
        now: Timestamp,
        new_id: DeploymentId,
    ) -> Result<Applied, OpError> {
        ops::apply(self, req, now, new_id)
    }

    /// Applies what [`Services::apply`] computed against this same state.
    pub fn commit(&mut self, applied: Applied) -> Result<OpOutcome, Stale> {
        if applied.generation != self.generation {
            return Err(Stale);
        }
        Ok(self.install(applied))
    }

    /// [`Services::apply`] then [`Services::commit`], for callers that
    /// persist nothing (tests, the in-memory backend).
    pub fn apply_now(
        &mut self,
        req: &Request,
        now: Timestamp,
        new_id: DeploymentId,
    ) -> Result<OpOutcome, OpError> {
        let applied = self.apply(req, now, new_id)?;
        Ok(self.install(applied))
    }

    fn install(&mut self, applied: Applied) -> OpOutcome {
        self.generation += 1;
        match applied.after {
            Some(st) => {
                self.apps.insert(applied.app, st);
            }
            None => {
                self.apps.remove(&applied.app);
            }
        }
        applied.outcome
    }

    /// What `req` would do, without doing it.
    pub fn plan(
        &self,
        req: &Request,
        now: Timestamp,
        new_id: DeploymentId,
    ) -> Result<PlanView, OpError> {
        let applied = self.apply(req, now, new_id)?;
        Ok(plan::view(&applied))
    }
}

/// The [`Outcome`] of a finished planner state, if it has finished.
fn finished_outcome(plan: &Deployment) -> Option<Outcome> {
    match &plan.state {
        State::Running | State::Paused => None,
        State::Succeeded => Some(Outcome::Succeeded),
        State::Failed(why) => Some(Outcome::Failed { why: why.clone() }),
        State::RolledBack(why) => Some(Outcome::RolledBack { why: why.clone() }),
    }
}
