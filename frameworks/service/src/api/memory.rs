//! [`InMemory`]: a [`ServiceBackend`] over a [`Services`] held in memory,
//! with fake instances made from the deployments' actions. Used by the
//! API's tests, and the reference behaviour for the runtime's backend.
//!
//! The fake runtime: after each operation, and at [`InMemory::advance`],
//! every running deployment is stepped with the planner
//! ([`crate::deploy::step`]) until it asks for nothing more; `Launch`
//! adds staging instances, `Kill` removes an instance at once. Staging
//! instances start (healthy, ready) only at [`InMemory::advance`], so a
//! test sees a deployment running until it advances the clock. There are
//! no router statistics: a canary's analysis never has enough requests.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::backend::{
    AppStatus, BackendError, DeploymentInfo, FrameworkInfo, InstanceInfo, OneDeployment,
    ServiceBackend, app_status, deployment_info, find_deployment,
};
use crate::app::{AppId, AppVersion};
use crate::deploy::{Action, Instance, InstanceState, RouterStats, Target, step};
use crate::state::{AppState, DeploymentId, Op, OpOutcome, PlanView, Request, Services};
use crate::time::Timestamp;

/// Most planner rounds per settle (each round steps every deployment).
const MAX_ROUNDS: usize = 64;

/// The in-memory backend. See the module docs.
#[derive(Debug)]
pub struct InMemory {
    inner: Mutex<Mem>,
}

#[derive(Debug)]
struct Mem {
    services: Services,
    instances: BTreeMap<AppId, Vec<Instance>>,
    now: Timestamp,
    next_deployment: u128,
    next_instance: u64,
}

impl InMemory {
    /// No apps; the clock starts at `start`.
    pub fn new(start: Timestamp) -> InMemory {
        InMemory {
            inner: Mutex::new(Mem {
                services: Services::new(),
                instances: BTreeMap::new(),
                now: start,
                next_deployment: 0,
                next_instance: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mem> {
        // A panic while holding the lock leaves plain data; go on with it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the state.
    pub fn services(&self) -> Services {
        self.lock().services.clone()
    }

    /// The clock.
    pub fn now(&self) -> Timestamp {
        self.lock().now
    }

    /// Moves the clock by `d`: staging instances start (healthy and ready),
    /// then deployments are stepped until they ask for nothing more.
    pub fn advance(&self, d: Duration) {
        let mut m = self.lock();
        m.now = m.now.plus(d);
        let now = m.now;
        for list in m.instances.values_mut() {
            for i in list
                .iter_mut()
                .filter(|i| i.state == InstanceState::Staging)
            {
                i.state = InstanceState::Ready;
                i.healthy_since = Some(now);
                i.agent = "agent-1".into();
            }
        }
        m.settle();
    }
}

impl Mem {
    /// Steps every running deployment until none asks for anything.
    fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let running: Vec<(AppId, DeploymentId, crate::deploy::Deployment)> = self
                .services
                .deployments()
                .map(|(a, d)| (a.id().clone(), d.id.clone(), d.plan.clone()))
                .collect();
            let mut changed = false;
            for (app, id, plan) in running {
                let observed = self.instances.get(&app).cloned().unwrap_or_default();
                let (next, actions) = step(&plan, &observed, &RouterStats::new(), self.now);
                self.act(&app, &actions);
                if next != plan {
                    changed = true;
                    let req = Request {
                        op: Op::Step { id, plan: next },
                        force: false,
                    };
                    let fresh = self.fresh_id();
                    // A step of a deployment just read cannot be refused.
                    if self.services.apply_now(&req, self.now, fresh).is_err() {
                        return;
                    }
                }
                changed |= !actions.is_empty();
            }
            let gone: Vec<AppId> = self
                .instances
                .keys()
                .filter(|a| self.services.get(a).is_none())
                .cloned()
                .collect();
            for a in gone {
                self.instances.remove(&a);
            }
            if !changed {
                return;
            }
        }
    }

    fn act(&mut self, app: &AppId, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Launch { version, count } => {
                    for _ in 0..*count {
                        self.next_instance += 1;
                        let id = format!(
                            "{}.instance-{:08x}",
                            app.segments().join("_"),
                            self.next_instance
                        );
                        self.instances
                            .entry(app.clone())
                            .or_default()
                            .push(Instance {
                                id,
                                version: *version,
                                state: InstanceState::Staging,
                                healthy_since: None,
                                launched_at: self.now,
                                agent: String::new(),
                            });
                    }
                }
                Action::Kill { instance, .. } => {
                    if let Some(list) = self.instances.get_mut(app) {
                        list.retain(|i| i.id != *instance);
                    }
                }
                _ => {}
            }
        }
    }

    fn fresh_id(&mut self) -> DeploymentId {
        self.next_deployment += 1;
        DeploymentId::from_u128(self.next_deployment)
    }

    fn status(&self, st: &AppState) -> AppStatus {
        let observed = self.instances.get(st.id()).map_or(&[][..], Vec::as_slice);
        app_status(st, observed)
    }

    fn instance_info(&self, st: &AppState, i: &Instance) -> InstanceInfo {
        let def = st
            .by_config_version(i.version)
            .map_or(&st.current.definition, |v| &v.definition);
        let staging = i.state == InstanceState::Staging;
        let n = u16::try_from(i.id.len() % 1000).unwrap_or(0);
        InstanceInfo {
            id: i.id.clone(),
            app: st.id().clone(),
            host: if staging {
                String::new()
            } else {
                "localhost".into()
            },
            agent_id: i.agent.clone(),
            ports: def
                .port_names()
                .iter()
                .enumerate()
                .map(|(k, _)| 31_000 + n + u16::try_from(k).unwrap_or(0))
                .collect(),
            service_ports: def.service_ports(),
            state: i.state,
            healthy: (!def.health_checks.is_empty()).then(|| Target::of(&st.current).healthy(i)),
            version: i.version,
            staged_at: i.launched_at,
            started_at: i.healthy_since,
        }
    }
}

impl ServiceBackend for InMemory {
    async fn apps(&self) -> Result<Vec<AppStatus>, BackendError> {
        let m = self.lock();
        Ok(m.services.apps().map(|st| m.status(st)).collect())
    }

    async fn app(&self, id: &AppId) -> Result<Option<AppStatus>, BackendError> {
        let m = self.lock();
        Ok(m.services.app(id).map(|st| m.status(st)))
    }

    async fn versions(&self, id: &AppId) -> Result<Option<Vec<AppVersion>>, BackendError> {
        let m = self.lock();
        Ok(m.services
            .app(id)
            .map(|st| st.versions().into_iter().cloned().collect()))
    }

    async fn apply(&self, req: Request) -> Result<OpOutcome, BackendError> {
        let mut m = self.lock();
        m.now = m.now.plus(Duration::from_millis(1));
        let (now, id) = (m.now, m.fresh_id());
        let outcome = m.services.apply_now(&req, now, id)?;
        m.settle();
        Ok(outcome)
    }

    async fn plan(&self, req: Request) -> Result<PlanView, BackendError> {
        let mut m = self.lock();
        let (now, id) = (m.now.plus(Duration::from_millis(1)), m.fresh_id());
        Ok(m.services.plan(&req, now, id)?)
    }

    async fn instances(&self, app: Option<&AppId>) -> Result<Vec<InstanceInfo>, BackendError> {
        let m = self.lock();
        let mut out = Vec::new();
        for (id, list) in &m.instances {
            if app.is_some_and(|a| a != id) {
                continue;
            }
            let Some(st) = m.services.get(id) else {
                continue;
            };
            out.extend(list.iter().map(|i| m.instance_info(st, i)));
        }
        Ok(out)
    }

    async fn deployments(&self) -> Result<Vec<DeploymentInfo>, BackendError> {
        let m = self.lock();
        Ok(m.services
            .deployments()
            .map(|(st, d)| {
                let observed = m.instances.get(st.id()).map_or(&[][..], Vec::as_slice);
                deployment_info(st, d, observed, m.now)
            })
            .collect())
    }

    async fn deployment(&self, id: &DeploymentId) -> Result<Option<OneDeployment>, BackendError> {
        let m = self.lock();
        let observed = |st: &AppState| m.instances.get(st.id()).cloned().unwrap_or_default();
        Ok(find_deployment(&m.services, id, observed, m.now))
    }

    async fn info(&self) -> Result<FrameworkInfo, BackendError> {
        Ok(FrameworkInfo {
            framework_id: None,
            elected: true,
            leader: None,
        })
    }
}
