//! The service framework on the SDK runtime: the runtime's [`Scheduler`]
//! over the apps ([`Services`]), their instances ([`Instances`]) and the
//! router.
//!
//! Every change is stored before it has effects: an operation before it
//! is answered, a deployment step (with the slots it creates or kills)
//! before the next decision, a launch's attempt before its accept
//! (`before_launch`), an attempt's end before its update is acknowledged.
//! A write that fails stops the framework (fail closed); the next active
//! instance reads the stored state back and goes on.
//!
//! What runs when: the runtime asks [`Scheduler::intent`] before every
//! decision; [`ServiceFramework::drive`] steps the deployments, keeps apps
//! without one at their count, replaces instances on unreachable agents,
//! ends drains, probes readiness and gives the router its table. It looks
//! at every app once a second and after a request, but after a task's
//! update only at that task's app: the update changes nothing else, and
//! with a thousand apps a round over all of them per update would cost
//! more than the update itself.
//!
//! Cost: an update is `O(instances of its app)` plus the runtime's
//! decision, which is linear in all instances ([`Scheduler::intent`] and
//! the runtime's `decide`); apps are found by name in a map kept beside
//! [`Services`] (rebuilt when an operation is committed) and instances by
//! app in [`Instances`]' index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_proto as pb;
use berth_router::{DrainOutcome, Router};
use berth_sdk::BoxError;
use berth_sdk::kv::{KvClient, LeaseRef};
use berth_sdk::runtime::{Control, Intent, Scheduler};
use tokio::sync::mpsc;

use super::handle::Req;
use super::store::{self, FRAMEWORK_ID_KEY};
use crate::api::{
    AppStatus, BackendError, DeploymentInfo, FrameworkInfo, InstanceInfo, LastFailure,
    OneDeployment, app_status, deployment_info, find_deployment,
};
use crate::app::{AppId, AppVersion};
use crate::deploy::RouterStats;
use crate::run::agents::{self, Agents};
use crate::run::instances::{Instances, Killing, Seen, Slot};
use crate::run::readiness;
use crate::run::routes::{RoutedApp, route_table, service_name};
use crate::run::steer::{Traffic, keep_count, steer};
use crate::state::{AppState, DeploymentId, Op, Request, Services};
use crate::time::Timestamp;

/// How often the framework looks at its deployments without a reason.
const TICK: Duration = Duration::from_secs(1);
/// How often the agents are listed again.
const AGENTS_EVERY: Duration = Duration::from_secs(30);
/// Most API requests answered in one round.
const REQUEST_BATCH: usize = 64;
/// How long a removed instance may take to finish its requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The wall clock as a [`Timestamp`].
pub(crate) fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_millis(ms)
}

/// A random id: deployments get UUID-shaped ones, instances `i` and 16
/// hex digits.
fn random_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

fn new_instance_id() -> String {
    format!("i{:016x}", random_u128() as u64)
}

/// What `changed` received, for `on_changed` to handle.
#[derive(Debug)]
enum Woken {
    Request(Box<Req>),
    Tick,
    Ready(String),
    Drained(String),
    Lost,
}

/// The framework. See the module docs.
pub struct ServiceFramework {
    pub(super) services: Services,
    pub(super) instances: Instances,
    pub(super) traffic: BTreeMap<String, Traffic>,
    pub(super) agents: Agents,
    agents_at: Option<tokio::time::Instant>,
    kv: KvClient,
    lease: LeaseRef,
    lost: tokio::sync::watch::Receiver<berth_sdk::kv::LeaseStatus>,
    masters: Vec<String>,
    router: Option<Router>,
    requests: mpsc::Receiver<Req>,
    tick: tokio::time::Interval,
    woken: Vec<Woken>,
    /// Readiness results and finished drains from spawned tasks.
    events_tx: mpsc::UnboundedSender<Woken>,
    events_rx: mpsc::UnboundedReceiver<Woken>,
    /// Instances with a readiness probe in flight.
    probing: std::collections::HashSet<String>,
    /// Instances with a drain wait in flight.
    draining: std::collections::HashSet<String>,
    /// Per app with a canary being analysed: the start of its analysis
    /// window and the router's snapshot at that moment.
    baselines: HashMap<String, (Timestamp, super::edge::Sources)>,
    /// The published route table and the standalone routers' records.
    edge: super::edge::Edge,
    pub(super) framework_id: Option<String>,
    address: Option<String>,
    /// The apps (removing ones included) by their id's text, which is
    /// what instances name them by.
    names: BTreeMap<String, AppId>,
}

impl std::fmt::Debug for ServiceFramework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceFramework")
            .field("apps", &self.services.all().count())
            .field("instances", &self.instances.slots().len())
            .finish_non_exhaustive()
    }
}

/// What a new framework is made of.
#[derive(Debug)]
pub struct Parts {
    /// The stored state, read back.
    pub loaded: store::Loaded,
    /// The store.
    pub kv: KvClient,
    /// The lease held, and its status.
    pub lease: LeaseRef,
    /// Flips when the lease is lost.
    pub lost: tokio::sync::watch::Receiver<berth_sdk::kv::LeaseStatus>,
    /// The masters (for the agents' list).
    pub masters: Vec<String>,
    /// The router, if this process runs one.
    pub router: Option<Router>,
    /// The API's requests.
    pub requests: mpsc::Receiver<Req>,
    /// This instance's HTTP address, for `/v2/info`.
    pub address: Option<String>,
}

impl ServiceFramework {
    /// A framework from `parts`.
    #[must_use]
    pub fn new(parts: Parts) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let edge = super::edge::Edge::start(parts.kv.clone());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let names = names_of(&parts.loaded.services);
        ServiceFramework {
            names,
            services: parts.loaded.services,
            instances: parts.loaded.instances,
            traffic: BTreeMap::new(),
            agents: Agents::default(),
            agents_at: None,
            kv: parts.kv,
            lease: parts.lease,
            lost: parts.lost,
            masters: parts.masters,
            router: parts.router,
            requests: parts.requests,
            tick,
            woken: Vec::new(),
            events_tx,
            events_rx,
            probing: std::collections::HashSet::new(),
            draining: std::collections::HashSet::new(),
            baselines: HashMap::new(),
            edge,
            framework_id: parts.loaded.framework_id,
            address: parts.address,
        }
    }

    /// The app (removing ones included) whose id's text is `name`.
    fn app_named(&self, name: &str) -> Option<&AppState> {
        named(&self.names, &self.services, name)
    }

    /// Stores `writes` and the changed instance records.
    async fn store(&mut self, writes: Vec<crate::state::Write>) -> Result<(), BoxError> {
        let instances = store::instance_writes(&mut self.instances);
        if writes.is_empty() && instances.is_empty() {
            return Ok(());
        }
        store::write(&self.kv, &self.lease, store::batches(instances, writes)).await?;
        Ok(())
    }

    /// Applies and stores an operation.
    async fn apply(
        &mut self,
        req: &Request,
    ) -> Result<Result<crate::state::OpOutcome, BackendError>, BoxError> {
        let id = DeploymentId::from_u128(random_u128());
        let applied = match self.services.apply(req, now(), id) {
            Ok(a) => a,
            Err(e) => return Ok(Err(BackendError::Op(e))),
        };
        if let Op::Add(def) = &req.op {
            // A new app of an old id starts without the old one's failure.
            self.instances.forget_failure(&def.id.to_string());
        }
        self.store(applied.writes()).await?;
        match self.services.commit(applied) {
            Ok(outcome) => {
                self.names = names_of(&self.services);
                Ok(Ok(outcome))
            }
            Err(stale) => Ok(Err(BackendError::Unavailable(stale.to_string()))),
        }
    }

    /// Answers a request of the API.
    async fn answer(&mut self, req: Req) -> Result<(), BoxError> {
        let now = now();
        match req {
            Req::Apps(r) => {
                let list = self.services.apps().map(|st| self.app_status(st)).collect();
                let _ = r.send(list);
            }
            Req::App(id, r) => {
                let one = self.services.app(&id).map(|st| self.app_status(st));
                let _ = r.send(one);
            }
            Req::Versions(id, r) => {
                let v = self
                    .services
                    .app(&id)
                    .map(|st| st.versions().into_iter().cloned().collect());
                let _ = r.send(v);
            }
            Req::Apply(op, r) => {
                let outcome = self.apply(&op).await?;
                let _ = r.send(outcome);
            }
            Req::Plan(op, r) => {
                let id = DeploymentId::from_u128(random_u128());
                let plan = self.services.plan(&op, now, id).map_err(BackendError::Op);
                let _ = r.send(plan);
            }
            Req::Instances(app, r) => {
                let _ = r.send(self.instance_infos(app.as_ref()));
            }
            Req::Deployments(r) => {
                let list = self
                    .services
                    .deployments()
                    .map(|(st, d)| {
                        let observed = self.instances.planner_view(&st.id().to_string());
                        self.with_failure(deployment_info(st, d, &observed, now))
                    })
                    .collect();
                let _ = r.send(list);
            }
            Req::Deployment(id, r) => {
                let instances = &self.instances;
                let observed = |st: &AppState| instances.planner_view(&st.id().to_string());
                let found = match find_deployment(&self.services, &id, observed, now) {
                    Some(OneDeployment::Running(d)) => {
                        Some(OneDeployment::Running(self.with_failure(d)))
                    }
                    other => other,
                };
                let _ = r.send(found);
            }
            Req::Info(r) => {
                let _ = r.send(FrameworkInfo {
                    framework_id: self.framework_id.clone(),
                    elected: true,
                    leader: self.address.clone(),
                });
            }
        }
        Ok(())
    }

    /// App `st` as the API shows it, with its last failure.
    fn app_status(&self, st: &AppState) -> AppStatus {
        let name = st.id().to_string();
        AppStatus {
            last_failure: self.last_failure(&name),
            ..app_status(st, &self.instances.planner_view(&name))
        }
    }

    /// Running deployment `d` with its app's last failure since it started.
    fn with_failure(&self, d: DeploymentInfo) -> DeploymentInfo {
        let last_failure = self
            .last_failure(&d.app.to_string())
            .filter(|f| f.task.at >= d.started_at)
            .map(Box::new);
        DeploymentInfo { last_failure, ..d }
    }

    /// `app`'s last failed task, with its agent's host name.
    fn last_failure(&self, app: &str) -> Option<LastFailure> {
        let task = self.instances.last_failure(app)?.clone();
        let host = self
            .agents
            .places
            .get(&task.agent_id)
            .map(|p| p.hostname.clone())
            .unwrap_or_default();
        Some(LastFailure { task, host })
    }

    fn instance_infos(&self, only: Option<&AppId>) -> Vec<InstanceInfo> {
        let mut out = Vec::new();
        for st in self.services.apps() {
            if only.is_some_and(|id| id != st.id()) {
                continue;
            }
            let name = st.id().to_string();
            for i in self.instances.planner_view(&name) {
                let def = st
                    .by_config_version(i.version)
                    .map_or(&st.current.definition, |v| &v.definition);
                let slot = self.instances.slots().get(&i.id);
                let run = slot.and_then(|s| s.run.as_ref());
                out.push(InstanceInfo {
                    id: run.map_or_else(|| i.id.clone(), |r| r.task_id.clone()),
                    app: st.id().clone(),
                    host: self
                        .agents
                        .places
                        .get(&i.agent)
                        .map(|p| p.hostname.clone())
                        .unwrap_or_default(),
                    agent_id: i.agent.clone(),
                    ports: run.map(|r| r.ports.clone()).unwrap_or_default(),
                    service_ports: def.service_ports(),
                    state: i.state,
                    healthy: (!def.health_checks.is_empty()).then_some(i.healthy_since.is_some()),
                    version: i.version,
                    staged_at: i.launched_at,
                    started_at: i.healthy_since,
                });
            }
        }
        out
    }

    /// Keeps the router's snapshot of `app` at the start of its canary's
    /// analysis `window` (taken now when the window is new); none without
    /// a window.
    fn rebase(&mut self, app: &str, window: Option<Timestamp>) {
        let Some(start) = window else {
            self.baselines.remove(app);
            return;
        };
        if self.baselines.get(app).is_some_and(|(at, _)| *at == start) {
            return;
        }
        let now = super::edge::sources(
            self.router.as_ref(),
            &self.edge.records(),
            &service_name(app, 0),
        );
        self.baselines.insert(app.to_owned(), (start, now));
    }

    /// The router's statistics of `app` since the start of its canary's
    /// analysis window, by config version (none without a window).
    fn router_stats(&self, app: &str) -> RouterStats {
        let Some((_, baseline)) = self.baselines.get(app) else {
            return RouterStats::new();
        };
        let now = super::edge::sources(
            self.router.as_ref(),
            &self.edge.records(),
            &service_name(app, 0),
        );
        super::edge::interval(&now, baseline)
    }

    /// One round of the framework's own work over `apps` (`None`: every
    /// app); see the module docs.
    async fn drive(&mut self, apps: Option<&BTreeSet<String>>) -> Result<(), BoxError> {
        let now = now();
        self.refresh_agents(apps).await;
        {
            let (names, services) = (&self.names, &self.services);
            let strategy = |app: &str| {
                named(names, services, app)
                    .map(|a| a.current.definition.unreachable_strategy)
                    .unwrap_or_default()
            };
            self.instances.replace_unreachable(&strategy, now);
        }
        let chosen: Vec<String> = match apps {
            Some(apps) => apps.iter().cloned().collect(),
            None => self.names.keys().cloned().collect(),
        };
        for name in chosen {
            let Some(st) = self.app_named(&name) else {
                continue;
            };
            match &st.deployment {
                Some(d) => {
                    let (id, plan) = (d.id.clone(), d.plan.clone());
                    // The analysis judges the requests since its window
                    // began (a baseline taken now after a failover).
                    self.rebase(&name, plan.analysis_window());
                    let stats = self.router_stats(&name);
                    let traffic = self.traffic.entry(name.clone()).or_default();
                    let mut ids = new_instance_id;
                    let s = steer(
                        &name,
                        &plan,
                        &mut self.instances,
                        traffic,
                        &stats,
                        &mut ids,
                        now,
                    );
                    for e in &s.events {
                        tracing::warn!(app = %name, "{e}");
                    }
                    self.rebase(&name, s.deployment.analysis_window());
                    if s.changed {
                        let req = Request {
                            op: Op::Step {
                                id,
                                plan: s.deployment,
                            },
                            force: false,
                        };
                        if let Err(e) = self.apply(&req).await? {
                            tracing::warn!(app = %name, "deployment step not taken: {e}");
                        }
                    }
                }
                None if !st.removing() => {
                    let def = &st.current.definition;
                    let (version, count) = (st.current.config_version(), def.instances);
                    let youngest_first =
                        def.kill_selection == crate::app::KillSelection::YoungestFirst;
                    self.baselines.remove(&name);
                    let mut ids = new_instance_id;
                    keep_count(
                        &name,
                        version,
                        count,
                        youngest_first,
                        &mut self.instances,
                        &mut ids,
                        now,
                    );
                }
                None => {
                    self.baselines.remove(&name);
                }
            }
        }
        self.store(Vec::new()).await?;
        self.probe_readiness(apps);
        self.wait_drains(apps);
        self.route().await;
        Ok(())
    }

    /// Lists the agents again every [`AGENTS_EVERY`], or at once when an
    /// instance (of `apps`, or of any app) runs on one the framework does
    /// not know.
    async fn refresh_agents(&mut self, apps: Option<&BTreeSet<String>>) {
        let unknown = self
            .slots_of(apps)
            .filter_map(|(_, s)| s.run.as_ref())
            .any(|r| !r.agent_id.is_empty() && !self.agents.places.contains_key(&r.agent_id));
        let due = self.agents_at.is_none_or(|at| at.elapsed() >= AGENTS_EVERY);
        if !(unknown || due) {
            return;
        }
        self.agents_at = Some(tokio::time::Instant::now());
        if let Some(views) = berth_sdk::agents::list_agents(&self.masters).await {
            self.agents = Agents::from_views(&views, agents::resolve).await;
        }
    }

    /// The slots of `apps` (`None`: of every app).
    fn slots_of<'a>(
        &'a self,
        apps: Option<&'a BTreeSet<String>>,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a Slot)> + 'a> {
        match apps {
            Some(apps) => Box::new(apps.iter().flat_map(|a| self.instances.of_app(a))),
            None => Box::new(self.instances.slots().iter()),
        }
    }

    /// Starts a readiness probe for every healthy, unready instance of an
    /// app (of `apps`, or any) with a readiness check.
    fn probe_readiness(&mut self, only: Option<&BTreeSet<String>>) {
        let mut probes = Vec::new();
        let names: Vec<&String> = match only {
            Some(only) => only.iter().collect(),
            None => self.names.keys().collect(),
        };
        for name in names {
            let Some(st) = self.app_named(name) else {
                continue;
            };
            for (id, run) in self.instances.unready(name) {
                if self.probing.contains(&run.task_id) {
                    continue;
                }
                let Some(slot) = self.instances.slots().get(id) else {
                    continue;
                };
                let Some(version) = st.by_config_version(slot.version) else {
                    continue;
                };
                let Some((check, index)) = readiness::check_of(&version.definition) else {
                    continue;
                };
                let (Some(ip), Some(port)) =
                    (self.agents.ips.get(&run.agent_id), run.ports.get(index))
                else {
                    continue;
                };
                probes.push((
                    run.task_id.clone(),
                    check.clone(),
                    std::net::SocketAddr::new(*ip, *port),
                ));
            }
        }
        for (task, check, addr) in probes {
            self.probing.insert(task.clone());
            let tx = self.events_tx.clone();
            tokio::spawn(async move {
                let ready = readiness::probe(&check, addr).await;
                if !ready {
                    tokio::time::sleep(check.interval).await;
                }
                let _ = tx.send(if ready {
                    Woken::Ready(task)
                } else {
                    Woken::Ready(format!("!{task}"))
                });
            });
        }
    }

    /// Waits (on a task of its own) for every draining instance (of
    /// `apps`, or of any app) to have no request in flight, or for
    /// [`DRAIN_TIMEOUT`].
    fn wait_drains(&mut self, apps: Option<&BTreeSet<String>>) {
        let draining: Vec<String> = self
            .slots_of(apps)
            .filter(|(_, s)| matches!(s.killing, Some(Killing::Draining(_))))
            .map(|(id, _)| id.clone())
            .filter(|id| !self.draining.contains(id))
            .collect();
        for id in draining {
            self.draining.insert(id.clone());
            let tx = self.events_tx.clone();
            let router = self.router.clone();
            let edge = self.edge.clone();
            tokio::spawn(async move {
                // The route table without it is applied and published
                // first (route()).
                tokio::time::sleep(Duration::from_millis(100)).await;
                let started = tokio::time::Instant::now();
                if let Some(router) = router {
                    let outcome = router.wait_drained(&id, DRAIN_TIMEOUT).await;
                    if let DrainOutcome::TimedOut { in_flight } = outcome {
                        tracing::warn!(instance = %id, in_flight, "drain timed out; killing it");
                    }
                }
                let left = DRAIN_TIMEOUT.saturating_sub(started.elapsed());
                let in_flight = edge.wait_drained(&id, left).await;
                if in_flight > 0 {
                    tracing::warn!(instance = %id, in_flight, "drain in the standalone routers timed out; killing it");
                }
                let _ = tx.send(Woken::Drained(id));
            });
        }
    }

    /// Gives the router its table.
    async fn route(&mut self) {
        let mut apps = BTreeMap::new();
        for st in self.services.all() {
            apps.insert(
                st.id().to_string(),
                RoutedApp {
                    definition: &st.current.definition,
                    traffic: self.traffic.get(&st.id().to_string()),
                },
            );
        }
        let table = route_table(&apps, &self.instances, &self.agents.ips);
        // Running, not being killed, health not known (again) yet.
        let settling = |id: &str| {
            self.instances.slots().get(id).is_some_and(|s| {
                s.killing.is_none() && s.run.as_ref().is_some_and(|r| r.healthy_since.is_none())
            })
        };
        if let Err(e) = self
            .edge
            .publish(&self.kv, &self.lease, &table, settling)
            .await
        {
            tracing::warn!("publishing the route table: {e}");
        }
        let Some(router) = &self.router else { return };
        if let Err(e) = router.apply(table).await {
            tracing::warn!("the router refused the table: {e}");
        }
    }

    fn versions_lookup<'a>(&'a self) -> impl Fn(&str, Timestamp) -> Option<&'a AppVersion> + 'a {
        move |app: &str, v: Timestamp| self.app_named(app)?.by_config_version(v)
    }
}

/// The apps of `services` by their id's text.
fn names_of(services: &Services) -> BTreeMap<String, AppId> {
    services
        .all()
        .map(|a| (a.id().to_string(), a.id().clone()))
        .collect()
}

/// The app of `services` whose id's text is `name`, by `names`.
fn named<'a>(
    names: &BTreeMap<String, AppId>,
    services: &'a Services,
    name: &str,
) -> Option<&'a AppState> {
    services.get(names.get(name)?)
}

impl Scheduler for ServiceFramework {
    fn intent(&self) -> Intent {
        let lookup = self.versions_lookup();
        let (tasks, stop) = self.instances.intent(&lookup, &self.agents.places, now());
        let mut intent = Intent::new(tasks);
        intent.stop = stop;
        intent
    }

    async fn on_update(&mut self, status: &pb::TaskStatus) -> Result<Control, BoxError> {
        let app = self
            .instances
            .app_of_task(&status.task_id)
            .map(str::to_owned);
        let (names, services) = (&self.names, &self.services);
        let definition = |app: &str| named(names, services, app).map(|a| &a.current.definition);
        let seen = self.instances.on_status(
            status,
            &|app| definition(app).map(|d| d.backoff).unwrap_or_default(),
            &|app| definition(app).is_some_and(|d| !d.health_checks.is_empty()),
            now(),
        );
        if let Seen::Gone { instance } = &seen {
            self.draining.remove(instance);
        }
        self.store(Vec::new()).await?;
        if let (false, Some(app)) = (matches!(seen, Seen::Unknown), app) {
            // Only this app's instances changed.
            self.drive(Some(&BTreeSet::from([app]))).await?;
        }
        Ok(Control::Continue)
    }

    async fn before_launch(&mut self, tasks: &[pb::TaskInfo]) -> Result<(), BoxError> {
        let (names, services) = (&self.names, &self.services);
        let lookup = |app: &str, v: Timestamp| named(names, services, app)?.by_config_version(v);
        self.instances.launching(tasks, &lookup);
        self.store(Vec::new()).await
    }

    async fn on_subscribed(&mut self, framework_id: &str) -> Result<(), BoxError> {
        if self.framework_id.as_deref() != Some(framework_id) {
            let id = (
                FRAMEWORK_ID_KEY.to_owned(),
                Some(framework_id.as_bytes().to_vec()),
            );
            store::write(&self.kv, &self.lease, vec![vec![id]]).await?;
            self.framework_id = Some(framework_id.to_owned());
        }
        self.drive(None).await
    }

    async fn changed(&mut self) -> Control {
        let woken = tokio::select! {
            req = self.requests.recv() => match req {
                Some(req) => Woken::Request(Box::new(req)),
                None => return Control::Stop,
            },
            Some(e) = self.events_rx.recv() => e,
            _ = self.lost.changed() => Woken::Lost,
            _ = self.tick.tick() => Woken::Tick,
        };
        self.woken.push(woken);
        // API requests already waiting are answered in the same round: one
        // decision of the runtime (linear in every instance) for them all.
        while self.woken.len() < REQUEST_BATCH {
            let Ok(req) = self.requests.try_recv() else {
                break;
            };
            self.woken.push(Woken::Request(Box::new(req)));
        }
        Control::Continue
    }

    async fn on_changed(&mut self) -> Result<Control, BoxError> {
        for woken in std::mem::take(&mut self.woken) {
            match woken {
                Woken::Request(req) => self.answer(*req).await?,
                Woken::Tick => {}
                Woken::Ready(task) => match task.strip_prefix('!') {
                    Some(task) => {
                        self.probing.remove(task);
                    }
                    None => {
                        self.probing.remove(&task);
                        self.instances.mark_ready(&task);
                    }
                },
                Woken::Drained(id) => {
                    self.draining.remove(&id);
                    self.instances.drained(&id);
                }
                Woken::Lost => {
                    if !matches!(*self.lost.borrow(), berth_sdk::kv::LeaseStatus::Held) {
                        tracing::error!("lost the lease of the active instance; stopping");
                        return Ok(Control::Stop);
                    }
                }
            }
        }
        self.drive(None).await?;
        Ok(Control::Continue)
    }
}
