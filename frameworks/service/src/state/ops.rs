//! Each operation of [`super::Op`], checked against the whole set. See the
//! parent module for the rules.

use serde_json::Value;

use super::{
    AppState, Applied, Cause, DeploymentId, Effect, FinishedDeployment, MAX_HISTORY,
    MAX_OLD_VERSIONS, Op, OpOutcome, Outcome, Request, RunningDeployment, Services, checks,
    finished_outcome,
};
use crate::app::{AppDefinition, AppId, AppVersion, Change, VersionInfo};
use crate::deploy::Deployment;
use crate::error::{Invalid, OpError};
use crate::time::Timestamp;

pub(super) fn apply(
    s: &Services,
    req: &Request,
    now: Timestamp,
    new_id: DeploymentId,
) -> Result<Applied, OpError> {
    if s.deployment(&new_id).is_some() {
        return Err(OpError::DuplicateDeploymentId(new_id));
    }
    let cx = Cx {
        s,
        force: req.force,
        now,
        new_id,
    };
    match &req.op {
        Op::Add(def) => cx.add(def.clone()),
        Op::Update { definition, create } => cx.update(definition.clone(), *create, Cause::Update),
        Op::Patch { id, patch, create } => cx.patch(id, patch, *create),
        Op::Scale { id, instances } => {
            let mut patch = serde_json::Map::new();
            patch.insert("instances".into(), Value::from(*instances));
            let def = cx.patched(id, &Value::Object(patch))?;
            cx.update(def, false, Cause::Scale)
        }
        Op::Restart { id } => cx.restart(id),
        Op::Rollback { id, version } => cx.rollback(id, *version),
        Op::Remove { id } => cx.remove(id),
        Op::Promote { id } => cx.promote(id),
        Op::CancelDeployment { id } => cx.cancel(id),
        Op::Step { id, plan } => cx.step(id, plan),
    }
}

struct Cx<'a> {
    s: &'a Services,
    force: bool,
    now: Timestamp,
    new_id: DeploymentId,
}

impl Cx<'_> {
    fn applied(&self, app: &AppId, after: Option<AppState>, outcome: OpOutcome) -> Applied {
        Applied {
            generation: self.s.generation,
            app: app.clone(),
            before: self.s.apps.get(app).cloned(),
            after,
            outcome,
        }
    }

    fn outcome(&self, after: Option<&AppState>, app: &AppId, effect: Effect) -> OpOutcome {
        OpOutcome {
            app: app.clone(),
            effect,
            current: after.filter(|a| !a.removing()).map(|a| a.current.clone()),
            new_version: false,
            deployment: None,
            ended: None,
            at: self.now,
        }
    }

    /// An app the API shows, or 404.
    fn live(&self, id: &AppId) -> Result<&AppState, OpError> {
        self.s
            .app(id)
            .ok_or_else(|| OpError::UnknownApp(id.clone()))
    }

    /// Refuses a change while a deployment runs, unless forced.
    fn unlocked(&self, st: &AppState) -> Result<(), OpError> {
        match &st.deployment {
            Some(d) if !self.force => Err(OpError::Locked {
                app: st.id().clone(),
                deployment: d.id.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn add(&self, def: AppDefinition) -> Result<Applied, OpError> {
        let id = def.id.clone();
        if let Some(st) = self.s.apps.get(&id) {
            if !st.removing() {
                return Err(OpError::Exists(id));
            }
            // Added again while its removal runs: a forced update of the
            // app being stopped.
            self.unlocked(st)?;
            checks::check(self.s, &def)?;
            let st = st.clone();
            let v = AppVersion::first(def, st.next_stamp(self.now));
            let change = if st.current.config_version() == v.config_version() {
                Effect::Scale
            } else {
                Effect::Restart
            };
            return Ok(self.deploy(st, Some(v), true, Cause::Add, change));
        }
        checks::check(self.s, &def)?;
        let v = AppVersion::first(def, self.now);
        let st = AppState {
            current: v,
            older: Default::default(),
            deployment: None,
            history: Vec::new(),
        };
        let (after, mut outcome) = deploy(st, None, true, Cause::Add, self.now, &self.new_id);
        outcome.effect = Effect::Start;
        outcome.new_version = true;
        Ok(self.applied(&id, Some(after), outcome))
    }

    fn update(&self, def: AppDefinition, create: bool, cause: Cause) -> Result<Applied, OpError> {
        let Some(st) = self.s.app(&def.id) else {
            if create {
                return self.add(def);
            }
            return Err(OpError::UnknownApp(def.id));
        };
        self.unlocked(st)?;
        checks::check(self.s, &def)?;
        let (v, change) = st.current.next(def, st.next_stamp(self.now));
        let effect = match change {
            Change::None if st.deployment.is_none() => {
                let o = self.outcome(Some(st), st.id(), Effect::None);
                return Ok(self.applied(st.id(), Some(st.clone()), o));
            }
            // Forced with the same definition: restart the deployment to
            // the current version from what runs.
            Change::None => {
                return Ok(self.deploy(st.clone(), None, false, cause, Effect::Restart));
            }
            Change::Scale { .. } => Effect::Scale,
            Change::Restart => Effect::Restart,
        };
        Ok(self.deploy(st.clone(), Some(v), true, cause, effect))
    }

    /// The current definition of `id` with `patch`'s top-level fields
    /// replacing its own (`null` resets one to its default).
    fn patched(&self, id: &AppId, patch: &Value) -> Result<AppDefinition, OpError> {
        let st = self.live(id)?;
        let Value::Object(fields) = patch else {
            return Err(Invalid::at("/", "must be a JSON object").into());
        };
        let mut merged = match st.current.definition.to_marathon_json() {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        for (k, v) in fields {
            if v.is_null() {
                merged.remove(k);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        let merged = Value::Object(merged);
        let def = AppDefinition::from_value(&merged)?;
        if def.id != *id {
            return Err(
                Invalid::at("/id", format!("must be {id}, the app's id, or absent")).into(),
            );
        }
        Ok(def)
    }

    fn patch(&self, id: &AppId, patch: &Value, create: bool) -> Result<Applied, OpError> {
        if self.s.app(id).is_none() && create {
            let mut whole = patch.clone();
            if let Value::Object(m) = &mut whole {
                m.entry("id").or_insert_with(|| Value::from(id.to_string()));
            }
            let def = AppDefinition::from_value(&whole)?;
            if def.id != *id {
                return Err(
                    Invalid::at("/id", format!("must be {id}, the app's id, or absent")).into(),
                );
            }
            return self.add(def);
        }
        let def = self.patched(id, patch)?;
        self.update(def, false, Cause::Update)
    }

    fn restart(&self, id: &AppId) -> Result<Applied, OpError> {
        let st = self.live(id)?;
        self.unlocked(st)?;
        let at = st.next_stamp(self.now);
        let v = AppVersion {
            definition: st.current.definition.clone(),
            version: at,
            info: VersionInfo {
                last_scaling_at: at,
                last_config_change_at: at,
            },
        };
        Ok(self.deploy(st.clone(), Some(v), true, Cause::Restart, Effect::Restart))
    }

    fn rollback(&self, id: &AppId, version: Timestamp) -> Result<Applied, OpError> {
        let st = self.live(id)?;
        let Some(v) = st.version(version) else {
            return Err(OpError::UnknownVersion {
                app: id.clone(),
                version: version.to_string(),
            });
        };
        self.update(v.definition.clone(), false, Cause::Rollback)
    }

    fn remove(&self, id: &AppId) -> Result<Applied, OpError> {
        let st = self.live(id)?;
        self.unlocked(st)?;
        checks::removable(self.s, id)?;
        let st = st.clone();
        let superseded = st.deployment.clone();
        let (mut after, mut outcome) = deploy_to_none(st, self.now, &self.new_id, Cause::Remove);
        outcome.ended = superseded.map(|d| d.id);
        prune(&mut after);
        Ok(self.applied(id, Some(after), outcome))
    }

    fn promote(&self, id: &AppId) -> Result<Applied, OpError> {
        let st = self.live(id)?;
        let Some(run) = &st.deployment else {
            return Err(OpError::NotPaused {
                app: id.clone(),
                why: "no deployment is running".into(),
            });
        };
        let mut plan = run.plan.clone();
        plan.promote().map_err(|e| OpError::NotPaused {
            app: id.clone(),
            why: e.to_string(),
        })?;
        let mut after = st.clone();
        if let Some(d) = &mut after.deployment {
            d.plan = plan;
        }
        let o = self.outcome(Some(&after), id, Effect::Promote);
        Ok(self.applied(id, Some(after), o))
    }

    fn find(&self, id: &DeploymentId) -> Result<(&AppState, &RunningDeployment), OpError> {
        self.s.deployment(id).ok_or_else(|| {
            OpError::UnknownDeployment(berth_scheduler_core::error::quoted(id.as_str()).to_string())
        })
    }

    fn cancel(&self, id: &DeploymentId) -> Result<Applied, OpError> {
        let (st, run) = self.find(id)?;
        let app = st.id().clone();
        let mut st = st.clone();
        if self.force {
            st.deployment = None;
            finish(&mut st, run, self.now, Outcome::Cancelled { by: None });
            if run.to.is_none() {
                let mut o = self.outcome(None, &app, Effect::Drop);
                o.ended = Some(run.id.clone());
                return Ok(self.applied(&app, None, o));
            }
            let mut o = self.outcome(Some(&st), &app, Effect::Cancel);
            o.ended = Some(run.id.clone());
            return Ok(self.applied(&app, Some(st), o));
        }
        let (mut after, mut outcome) = match (run.from.and_then(|v| st.version(v)), run.to) {
            // A removal cancelled: the app comes back at its version.
            (_, None) => {
                let (a, mut o) = deploy(st, None, false, Cause::Revert, self.now, &self.new_id);
                o.effect = Effect::Scale;
                (a, o)
            }
            (Some(from), Some(_)) => {
                let from = from.clone();
                let effect =
                    if run.plan.to.as_ref().map(|t| t.version) == Some(from.config_version()) {
                        Effect::Scale
                    } else {
                        Effect::Restart
                    };
                let (a, mut o) =
                    deploy(st, Some(from), false, Cause::Revert, self.now, &self.new_id);
                o.effect = effect;
                (a, o)
            }
            // An add cancelled: stop what started.
            (None, Some(_)) => deploy_to_none(st, self.now, &self.new_id, Cause::Revert),
        };
        // `deploy` recorded the running one as superseded; it was cancelled.
        if let Some(last) = after.history.last_mut()
            && last.id == *id
        {
            last.result = Outcome::Cancelled {
                by: Some(self.new_id.clone()),
            };
        }
        prune(&mut after);
        outcome.ended = Some(id.clone());
        Ok(self.applied(&app, Some(after), outcome))
    }

    fn step(&self, id: &DeploymentId, plan: &Deployment) -> Result<Applied, OpError> {
        let (st, run) = self.find(id)?;
        let app = st.id().clone();
        let mut st = st.clone();
        let Some(result) = finished_outcome(plan) else {
            if let Some(d) = &mut st.deployment {
                d.plan = plan.clone();
            }
            let o = self.outcome(Some(&st), &app, Effect::Progress);
            return Ok(self.applied(&app, Some(st), o));
        };
        st.deployment = None;
        if run.to.is_none() {
            let mut o = self.outcome(None, &app, Effect::Drop);
            o.ended = Some(id.clone());
            return Ok(self.applied(&app, None, o));
        }
        if matches!(result, Outcome::RolledBack { .. })
            && let Some(from) = run.from.and_then(|v| st.version(v)).cloned()
            && from.version != st.current.version
        {
            let old = std::mem::replace(&mut st.current, from);
            st.older.remove(&st.current.version);
            st.older.insert(old.version, old);
        }
        finish(&mut st, run, self.now, result);
        prune(&mut st);
        let mut o = self.outcome(Some(&st), &app, Effect::Finish);
        o.ended = Some(id.clone());
        Ok(self.applied(&app, Some(st), o))
    }

    /// Starts a deployment of `st` to `to` (`None`: to its current
    /// version again), superseding the running one.
    fn deploy(
        &self,
        st: AppState,
        to: Option<AppVersion>,
        new_version: bool,
        cause: Cause,
        effect: Effect,
    ) -> Applied {
        let app = st.id().clone();
        let (mut after, mut outcome) = deploy(st, to, false, cause, self.now, &self.new_id);
        outcome.effect = effect;
        outcome.new_version = new_version;
        prune(&mut after);
        self.applied(&app, Some(after), outcome)
    }
}

/// Moves `run` into `st`'s history as ended with `result` at `now`.
fn finish(st: &mut AppState, run: &RunningDeployment, now: Timestamp, result: Outcome) {
    st.history.push(FinishedDeployment {
        id: run.id.clone(),
        cause: run.cause,
        from: run.from,
        to: run.to,
        started_at: run.started_at,
        finished_at: now,
        result,
    });
    let extra = st.history.len().saturating_sub(MAX_HISTORY);
    st.history.drain(..extra);
}

/// The version a new deployment to `to` (config version `to_config`;
/// `None`: removal) starts from, after `run` is cancelled: `run.from` when
/// its config differs from the target's, else `run.to` (see the parent
/// module).
fn start_from(st: &AppState, run: &RunningDeployment, to_config: Option<Timestamp>) -> AppVersion {
    let candidates = [run.from, run.to];
    let found = candidates
        .iter()
        .flatten()
        .filter_map(|v| st.version(*v))
        .find(|v| Some(v.config_version()) != to_config)
        .or_else(|| run.to.and_then(|v| st.version(v)));
    found.cloned().unwrap_or_else(|| st.current.clone())
}

/// Starts a deployment of `st` to `to` (`None`: its current version
/// again), from nothing when `fresh`, else from what runs.
fn deploy(
    mut st: AppState,
    to: Option<AppVersion>,
    fresh: bool,
    cause: Cause,
    now: Timestamp,
    id: &DeploymentId,
) -> (AppState, OpOutcome) {
    let target = to.unwrap_or_else(|| st.current.clone());
    let superseded = st.deployment.take();
    let from = if fresh {
        None
    } else {
        Some(match &superseded {
            Some(run) => start_from(&st, run, Some(target.config_version())),
            None => st.current.clone(),
        })
    };
    if let Some(run) = &superseded {
        finish(&mut st, run, now, Outcome::Superseded { by: id.clone() });
    }
    let plan = match (&from, cause) {
        (Some(from), Cause::Revert) => Deployment::switch_back(from, &target, now),
        _ => Deployment::new(from.as_ref(), Some(&target), now),
    };
    if target.version != st.current.version {
        st.older.remove(&target.version);
        let old = std::mem::replace(&mut st.current, target.clone());
        st.older.insert(old.version, old);
    }
    st.deployment = Some(RunningDeployment {
        id: id.clone(),
        cause,
        from: from.map(|v| v.version),
        to: Some(target.version),
        started_at: now,
        plan,
    });
    let outcome = OpOutcome {
        app: st.id().clone(),
        effect: Effect::Start,
        current: Some(st.current.clone()),
        new_version: false,
        deployment: Some(id.clone()),
        ended: superseded.map(|d| d.id),
        at: now,
    };
    (st, outcome)
}

/// Starts the deployment to zero instances (removal, or the revert of an
/// add), superseding the running one.
fn deploy_to_none(
    mut st: AppState,
    now: Timestamp,
    id: &DeploymentId,
    cause: Cause,
) -> (AppState, OpOutcome) {
    let superseded = st.deployment.take();
    let from = match &superseded {
        Some(run) => start_from(&st, run, None),
        None => st.current.clone(),
    };
    if let Some(run) = &superseded {
        finish(&mut st, run, now, Outcome::Superseded { by: id.clone() });
    }
    st.deployment = Some(RunningDeployment {
        id: id.clone(),
        cause,
        from: Some(from.version),
        to: None,
        started_at: now,
        plan: Deployment::new(Some(&from), None, now),
    });
    let outcome = OpOutcome {
        app: st.id().clone(),
        effect: Effect::Stop,
        current: None,
        new_version: false,
        deployment: Some(id.clone()),
        ended: superseded.map(|d| d.id),
        at: now,
    };
    (st, outcome)
}

/// Keeps the [`MAX_OLD_VERSIONS`] newest older versions and those the
/// running deployment names; drops the rest.
fn prune(st: &mut AppState) {
    let needed: Vec<Timestamp> = st
        .deployment
        .iter()
        .flat_map(|d| [d.from, d.to])
        .flatten()
        .collect();
    let drop: Vec<Timestamp> = st
        .older
        .keys()
        .rev()
        .skip(MAX_OLD_VERSIONS)
        .filter(|v| !needed.contains(v))
        .copied()
        .collect();
    for v in drop {
        st.older.remove(&v);
    }
}
