//! `berth master`, `berth agent` and `berth dev`.
//!
//! Every daemon listens on loopback unless `--insecure` is given:
//! [`check_exposure`] refuses anything else, for `master`, `agent`, `dev`,
//! `ci serve` and `ci run`, before anything starts. A daemon installs its
//! signal handlers first ([`shutdown_signal`]), so a SIGTERM while it
//! starts is a graceful stop. [`Embedded`] (a master and an agent in one
//! process) is shared by `berth dev` and `berth ci run`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use berth_scheduler_core::{Resources, Role};
use clap::Args;
use tokio::net::TcpListener;

use crate::berth_dir;

/// `--insecure`: what a daemon needs to listen beyond loopback until berth
/// has authentication.
#[derive(Debug, Clone, Args)]
pub(crate) struct Exposure {
    /// Allow listening on (or advertising) an address other than loopback.
    /// berth has no authentication yet: anyone who can reach an API can use
    /// it, and through the master run any command as root on every agent.
    /// Give it only on a network where everyone who can connect is trusted;
    /// a warning says so at every start.
    #[arg(long)]
    pub(crate) insecure: bool,
}

/// One of a daemon's APIs: where it can be reached, and what anyone who
/// reaches it can do.
#[derive(Debug)]
pub(crate) struct Api<'a> {
    /// "the master API".
    pub(crate) name: &'static str,
    /// What anyone who reaches it can do ("run any command ...").
    pub(crate) risk: &'static str,
    /// The address it listens on.
    pub(crate) listen: SocketAddr,
    /// The address (or URL) others are told to reach it at, if given.
    pub(crate) advertise: Option<&'a str>,
}

/// What reaching the master gives.
pub(crate) const MASTER_RISK: &str = "run any command as root on every agent";
/// What reaching an agent gives.
pub(crate) const AGENT_RISK: &str = "read the output of every task on the agent";

/// The host of an address or URL (`http://h:1/x`, `h:1`, `[::1]:1`, `h`).
fn host_of(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map_or(v6, |(h, _)| h);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// Whether a host name or address is this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses APIs that listen on (or advertise) an address other than
/// loopback, unless `--insecure` was given: an unauthenticated API must not
/// be reachable from the network by accident.
///
/// # Errors
/// The message saying which address, why, and what `--insecure` means.
pub(crate) fn check_exposure(apis: &[Api<'_>], insecure: bool) -> Result<(), String> {
    if insecure {
        return Ok(());
    }
    for api in apis {
        let exposed = if !api.listen.ip().is_loopback() {
            Some(("listen on", api.listen.to_string()))
        } else {
            api.advertise
                .filter(|a| !is_loopback_host(host_of(a)))
                .map(|a| ("advertise", a.to_string()))
        };
        if let Some((verb, address)) = exposed {
            let address = berth_proto::quoted(&address);
            return Err(format!(
                "refusing to {verb} {address} for {}: it is not a loopback address, and berth has \
                 no authentication yet: anyone who can reach {} can {}. Use a 127.0.0.1 \
                 address (the default), or add --insecure to accept that on a network where \
                 everyone who can connect is trusted",
                api.name, api.name, api.risk
            ));
        }
    }
    Ok(())
}

/// The warnings `--insecure` prints at every start, one per API.
pub(crate) fn insecure_warnings(apis: &[Api<'_>]) -> Vec<String> {
    apis.iter()
        .map(|api| {
            format!(
                "berth: WARNING: --insecure: {} on {} is unauthenticated: anyone who can reach it can {}",
                api.name, api.listen, api.risk
            )
        })
        .collect()
}

/// Options of `berth master`.
#[derive(Debug, Args)]
pub(crate) struct MasterArgs {
    /// Address to listen on (gRPC: scheduler, agent and operator APIs).
    /// Anything but loopback needs --insecure.
    #[arg(long, default_value = "127.0.0.1:5050")]
    listen: SocketAddr,
    /// Directory for the registry.
    #[arg(long, default_value = ".berth/master")]
    data_dir: PathBuf,
    /// Address others reach this master at (defaults to the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// This master's Raft id.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Every master of the group at bootstrap, this one included:
    /// "1=host:port,2=host:port,3=host:port". Omit for a one-master group.
    #[arg(long, value_parser = parse_peer, value_delimiter = ',')]
    peers: Vec<(u64, String)>,
    /// Join an existing group instead of bootstrapping one: wait to be added
    /// with `berth master add`.
    #[arg(long)]
    join: bool,
    #[command(flatten)]
    tuning: MasterTuning,
    #[command(flatten)]
    exposure: Exposure,
}

impl MasterArgs {
    /// Its API, and whether `--insecure` was given.
    pub(crate) fn apis(&self) -> (Vec<Api<'_>>, bool) {
        (
            vec![Api {
                name: "the master API",
                risk: MASTER_RISK,
                listen: self.listen,
                advertise: self.advertise.as_deref(),
            }],
            self.exposure.insecure,
        )
    }
}

fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("peer {s:?} must look like ID=HOST:PORT"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("peer id {id:?} must be a positive integer"))?;
    let addr = addr.trim();
    if id == 0 {
        return Err("peer ids start at 1".into());
    }
    if addr.is_empty() || addr.contains(char::is_whitespace) || !addr.contains(':') {
        return Err(format!("peer address {addr:?} must look like HOST:PORT"));
    }
    Ok((id, addr.to_string()))
}

/// Master timing settings shared by `berth master` and `berth dev`.
#[derive(Debug, Args)]
pub(crate) struct MasterTuning {
    /// Seconds between pings to each agent (agents take a master that
    /// stays silent for their --master-timeout as lost).
    #[arg(long, value_parser = parse_seconds, default_value = "1", allow_negative_numbers = true)]
    agent_ping_interval: Duration,
    /// Seconds without a pong before an agent is unreachable.
    #[arg(long, value_parser = parse_seconds, default_value = "15", allow_negative_numbers = true)]
    agent_ping_timeout: Duration,
    /// Seconds a new leader gives the agents it inherits to register with
    /// it before their ping timeout starts to count (at least the ping
    /// timeout), so that a master failover does not make agents
    /// unreachable.
    #[arg(long, value_parser = parse_seconds, default_value = "30", allow_negative_numbers = true)]
    agent_reregister_timeout: Duration,
    /// Seconds between HEARTBEAT events on framework streams (frameworks
    /// take a stream that stays silent for their heartbeat timeout as
    /// lost; the SDK's is 4 s).
    #[arg(long, value_parser = parse_seconds, default_value = "1", allow_negative_numbers = true)]
    heartbeat_interval: Duration,
    /// Seconds before an unused offer is rescinded.
    #[arg(long, value_parser = parse_seconds, default_value = "60", allow_negative_numbers = true)]
    offer_timeout: Duration,
    /// How many completed tasks the registry keeps for `berth task list --all`.
    #[arg(long, default_value_t = 1000)]
    max_completed_tasks: usize,
    /// Most offers one framework holds at once, or "none" for no limit (as
    /// in Mesos). A framework at its limit is offered more once it accepts
    /// or declines some; without a limit every allocation cycle offers each
    /// free agent to some framework, and frameworks that use an agent or
    /// two at a time decline the rest.
    #[arg(long, value_parser = parse_offer_limit,
          default_value_t = OfferLimit(Some(berth_master::DEFAULT_OFFER_LIMIT)))]
    offer_limit: OfferLimit,
}

/// `--offer-limit`: a number of offers, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OfferLimit(Option<usize>);

impl std::fmt::Display for OfferLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("none"),
        }
    }
}

fn parse_offer_limit(s: &str) -> Result<OfferLimit, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(OfferLimit(None));
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(OfferLimit(Some(n))),
        _ => Err(format!(
            "{} must be a number of offers (1 or more) or \"none\"",
            berth_agent::error::shown(s)
        )),
    }
}

impl MasterTuning {
    fn config(&self, data_dir: PathBuf, advertise: Option<String>) -> berth_master::MasterConfig {
        let mut config = berth_master::MasterConfig::new(data_dir);
        config.advertise_address = advertise;
        config.agent_ping_interval = self.agent_ping_interval;
        config.agent_ping_timeout = self.agent_ping_timeout;
        config.agent_reregister_timeout = self.agent_reregister_timeout;
        config.heartbeat_interval = self.heartbeat_interval;
        config.max_completed_tasks = self.max_completed_tasks;
        config.offer_timeout = Some(self.offer_timeout);
        config.offer_limit = self.offer_limit.0;
        config
    }
}

/// The masters a daemon (an agent, the CI framework) connects to.
#[derive(Debug, Args)]
pub(crate) struct MasterList {
    /// Master address(es), comma-separated.
    #[arg(
        long,
        env = "BERTH_MASTER",
        default_value = "127.0.0.1:5050",
        value_delimiter = ','
    )]
    pub(crate) master: Vec<String>,
}

/// Options of `berth agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    masters: MasterList,
    /// Address to listen on (the agent's log API). Anything but loopback
    /// needs --insecure.
    #[arg(long, default_value = "127.0.0.1:5051")]
    listen: SocketAddr,
    /// Directory for sandboxes.
    #[arg(long, default_value = ".berth/agent")]
    work_dir: PathBuf,
    #[command(flatten)]
    shape: AgentShape,
    #[command(flatten)]
    exposure: Exposure,
}

impl AgentArgs {
    /// Its API, and whether `--insecure` was given.
    pub(crate) fn apis(&self) -> (Vec<Api<'_>>, bool) {
        let mut apis = vec![self.shape.api(self.listen)];
        apis.extend(self.shape.task_ports());
        (apis, self.exposure.insecure)
    }
}

/// What an agent offers; shared by `berth agent` and `berth dev`.
#[derive(Debug, Args)]
pub(crate) struct AgentShape {
    /// Resources to offer, e.g. "cpus:4;mem:8192;disk:10000;ports:[31000-32000]":
    /// each one given replaces the detected amount, the others stay
    /// detected ("ports:[40000-40099]" alone keeps the detected cpus,
    /// memory and disk).
    #[arg(long, value_parser = parse_resource_overrides)]
    resources: Option<berth_agent::ResourceOverrides>,
    /// A static reservation "ROLE=RESOURCES"; repeatable.
    #[arg(long, value_parser = parse_reservation)]
    reserve: Vec<(Role, Resources)>,
    /// Attributes "name:value;name:value".
    #[arg(long, value_parser = parse_attributes, default_value = "")]
    attributes: Attributes,
    /// Hostname to report (defaults to the system's).
    #[arg(long)]
    hostname: Option<String>,
    /// Address others reach the agent's API at (defaults to the listen
    /// address, or hostname:port when listening on all interfaces).
    /// Anything but loopback needs --insecure.
    #[arg(long)]
    advertise: Option<String>,
    /// Run process tasks only, even when a Docker daemon answers.
    #[arg(long)]
    no_docker: bool,
    /// Seconds one Docker Engine call may take before the daemon counts as
    /// not answering.
    #[arg(long, default_value = "10", value_parser = parse_positive_seconds)]
    docker_timeout: Duration,
    /// Host address Docker tasks' ports are published on (defaults to the
    /// listen address when it and --advertise are loopback, else every
    /// interface). Anything
    /// but loopback needs --insecure.
    #[arg(long, value_name = "IP")]
    task_bind: Option<IpAddr>,
    /// Kill every task when the agent stops (by default tasks keep running
    /// and the agent re-adopts them when it starts again).
    #[arg(long)]
    pub(crate) kill_tasks_on_shutdown: bool,
    /// Largest file a task may fetch (one of its command's URIs), in bytes;
    /// also the most a fetched archive may unpack to.
    #[arg(long, default_value_t = berth_agent::DEFAULT_FETCH_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    fetch_max_bytes: u64,
    /// Seconds fetching one URI (download and extraction) may take.
    #[arg(long, default_value = "300", value_parser = parse_positive_seconds)]
    fetch_timeout: Duration,
    /// Seconds archiving and uploading one task output may take.
    #[arg(long, default_value = "300", value_parser = parse_positive_seconds)]
    upload_timeout: Duration,
    /// Seconds a fetch or upload is tried again (with backoff) after its
    /// server refused or dropped the connection, timed out or answered
    /// 408, 429 or 5xx; 0 never retries (at most 3600).
    #[arg(long, default_value = "300", value_parser = parse_retry_seconds)]
    transfer_retry: Duration,
    /// Refuse tasks' file:// URIs and outputs (paths of this host, read and
    /// written with the agent's rights): for clusters whose frameworks are
    /// not trusted with the host's files.
    #[arg(long)]
    no_file_urls: bool,
    /// Seconds a finished task's sandbox is kept after it last changed
    /// (a week by default).
    #[arg(long, default_value = "604800", value_parser = parse_gc_delay)]
    sandbox_gc_delay: Duration,
    /// Share of the disk to keep free (0 to 1): the fuller the disk, the
    /// sooner finished sandboxes go (the delay times 1 - headroom - used,
    /// at least 10 minutes).
    #[arg(long, default_value = "0.1", value_parser = parse_fraction)]
    sandbox_gc_disk_headroom: f64,
    /// Seconds without any message from the master (it pings every second)
    /// before the agent takes it as lost (frozen or cut off) and attaches
    /// to whichever master leads; at least two of the master's ping
    /// intervals.
    #[arg(long, default_value = "4", value_parser = parse_positive_seconds)]
    master_timeout: Duration,
}

fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    seconds_up_to(s, 3600.0)
}

/// Seconds from 0 to an hour (0: no retries).
fn parse_retry_seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{} must be a number of seconds from 0 to 3600",
            berth_agent::error::shown(s)
        )),
    }
}

/// A fraction from 0 to 1.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} is not between 0 and 1"))
    }
}

/// A sandbox garbage-collection delay: up to a year.
fn parse_gc_delay(s: &str) -> Result<Duration, String> {
    seconds_up_to(s, 365.0 * 86_400.0)
}

fn seconds_up_to(s: &str, max: f64) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > max {
        return Err(format!(
            "{s:?} must be more than 0 and at most {max} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Attributes(Vec<(String, String)>);

impl AgentShape {
    /// The API of an agent of this shape listening on `listen`.
    pub(crate) fn api(&self, listen: SocketAddr) -> Api<'_> {
        Api {
            name: "the agent API",
            risk: AGENT_RISK,
            listen,
            advertise: self.advertise.as_deref(),
        }
    }

    /// Where `--task-bind` publishes Docker tasks' ports, when given (the
    /// default follows the listen address, checked as the API).
    pub(crate) fn task_ports(&self) -> Option<Api<'_>> {
        self.task_bind.map(|ip| Api {
            name: "Docker tasks' published ports",
            risk: "reach every Docker task's ports",
            listen: SocketAddr::new(ip, 0),
            advertise: None,
        })
    }

    fn config(
        &self,
        masters: Vec<String>,
        work_dir: PathBuf,
        local: SocketAddr,
    ) -> anyhow::Result<berth_agent::AgentConfig> {
        let mut config = berth_agent::AgentConfig::new(masters, work_dir);
        config.resource_overrides = self.resources.clone();
        let mut reserved = BTreeMap::new();
        for (role, r) in &self.reserve {
            if reserved.insert(role.clone(), r.clone()).is_some() {
                bail!("role {role} is reserved twice");
            }
        }
        config.reserved = reserved;
        config.attributes = self.attributes.0.clone();
        config.hostname = self.hostname.clone();
        config.docker = !self.no_docker;
        config.docker_timeout = self.docker_timeout;
        config.task_bind = self.task_bind;
        config.kill_tasks_on_shutdown = self.kill_tasks_on_shutdown;
        config.fetch_max_bytes = self.fetch_max_bytes;
        config.fetch_timeout = self.fetch_timeout;
        config.upload_timeout = self.upload_timeout;
        config.transfer_retry = self.transfer_retry;
        config.master_timeout = self.master_timeout;
        config.file_urls = !self.no_file_urls;
        config.sandbox_gc_delay = self.sandbox_gc_delay;
        config.sandbox_gc_disk_headroom = self.sandbox_gc_disk_headroom;
        // Every process task runs under a `berth task-supervisor`, which
        // outlives an agent restart and records the task's exit status.
        config.task_supervisor = berth_agent::supervisor::TaskSupervisor::Program {
            program: std::env::current_exe()
                .context("cannot find this berth executable (for its task supervisor)")?,
            args: vec!["task-supervisor".into()],
        };
        config.advertise_address = Some(match &self.advertise {
            Some(a) => a.clone(),
            None if local.ip().is_unspecified() => {
                let host = match &self.hostname {
                    Some(h) => h.clone(),
                    None => hostname_or_localhost(),
                };
                format!("{host}:{}", local.port())
            }
            None => local.to_string(),
        });
        Ok(config)
    }
}

fn hostname_or_localhost() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Options of `berth dev`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Directory for the master's registry and the agent's sandboxes.
    #[arg(long, default_value_os_t = berth_dir())]
    data_dir: PathBuf,
    /// Master address. Anything but loopback needs --insecure.
    #[arg(long, default_value = "127.0.0.1:5050")]
    listen: SocketAddr,
    /// Agent API address. Anything but loopback needs --insecure.
    #[arg(long, default_value = "127.0.0.1:5051")]
    agent_listen: SocketAddr,
    /// The service framework's API (Marathon's /v2). Anything but loopback
    /// needs --insecure.
    #[arg(long, default_value = "127.0.0.1:8080")]
    service_listen: SocketAddr,
    /// The router's admin endpoint (/metrics, /healthz, /v1/routes).
    #[arg(long, default_value = "127.0.0.1:9090")]
    router_admin: SocketAddr,
    /// Do not start the service framework and its router.
    #[arg(long)]
    no_service: bool,
    /// The job framework's API (Metronome's /v1). Anything but loopback
    /// needs --insecure.
    #[arg(long, default_value = "127.0.0.1:8090")]
    jobs_listen: SocketAddr,
    /// Do not start the job framework.
    #[arg(long)]
    no_jobs: bool,
    #[command(flatten)]
    tuning: MasterTuning,
    #[command(flatten)]
    shape: AgentShape,
    #[command(flatten)]
    exposure: Exposure,
}

impl DevArgs {
    /// Its master's and agent's APIs, and whether `--insecure` was given.
    pub(crate) fn apis(&self) -> (Vec<Api<'_>>, bool) {
        (
            vec![
                Api {
                    name: "the master API",
                    risk: MASTER_RISK,
                    listen: self.listen,
                    advertise: None,
                },
                self.shape.api(self.agent_listen),
                Api {
                    name: "the service API",
                    risk: "run any app (any command, on the cluster's agents)",
                    listen: self.service_listen,
                    advertise: None,
                },
                Api {
                    name: "the router's admin endpoint",
                    risk: "read the routes and statistics of every app",
                    listen: self.router_admin,
                    advertise: None,
                },
                Api {
                    name: "the job API",
                    risk: "run any job (any command, on the cluster's agents)",
                    listen: self.jobs_listen,
                    advertise: None,
                },
            ]
            .into_iter()
            .chain(self.shape.task_ports())
            .collect(),
            self.exposure.insecure,
        )
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 365.0 * 24.0 * 3600.0 {
        return Err(format!(
            "{s:?} must be a positive number of seconds (at most a year)"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_resources(s: &str) -> Result<Resources, String> {
    s.parse::<Resources>().map_err(|e| e.to_string())
}

fn parse_resource_overrides(s: &str) -> Result<berth_agent::ResourceOverrides, String> {
    s.parse()
        .map_err(|e: berth_scheduler_core::ResourceError| e.to_string())
}

fn parse_reservation(s: &str) -> Result<(Role, Resources), String> {
    let (role, resources) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} must look like ROLE=RESOURCES"))?;
    let role = Role::new(role.trim()).map_err(|e| e.to_string())?;
    Ok((role, parse_resources(resources)?))
}

fn parse_attributes(s: &str) -> Result<Attributes, String> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once(':')
            .ok_or_else(|| format!("attribute {part:?} must look like name:value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || k.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "attribute name {k:?} must be non-empty, without spaces"
            ));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(Attributes(out))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed
/// when this is called, not when the future is first polled: a daemon
/// calls it first, so that a SIGTERM while it starts stops it gracefully
/// instead of killing it.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = signal(SignalKind::terminate())
        .and_then(|term| signal(SignalKind::interrupt()).map(|interrupt| (term, interrupt)));
    async move {
        match handlers {
            Ok((mut term, mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutting down");
    }
}

pub(crate) async fn master(args: MasterArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let listener = bind(args.listen, "master").await?;
    let mut config = args.tuning.config(args.data_dir, args.advertise);
    config.id = args.id;
    config.peers = args.peers;
    config.join = args.join;
    eprintln!("berth master listening on {}", listener.local_addr()?);
    berth_master::run(listener, config, shutdown).await?;
    Ok(())
}

pub(crate) async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let listener = bind(args.listen, "agent").await?;
    let local = listener.local_addr()?;
    let config = args
        .shape
        .config(args.masters.master, args.work_dir, local)?;
    eprintln!("berth agent listening on {local}");
    berth_agent::run(listener, config, shutdown).await?;
    Ok(())
}

/// A master and an agent running in this process (`berth dev`, and the
/// cluster `berth ci run` starts for its pipeline), through the launcher
/// the tests and benchmarks use too ([`berth_local`]).
pub(crate) struct Embedded {
    pub(crate) master_addr: SocketAddr,
    pub(crate) agent_addr: SocketAddr,
    master: berth_local::Master,
    agent: berth_local::Agent,
}

impl Embedded {
    /// Starts a master and an agent with their data under `data_dir`.
    pub(crate) async fn start(
        data_dir: &std::path::Path,
        listen: SocketAddr,
        agent_listen: SocketAddr,
        tuning: &MasterTuning,
        shape: &AgentShape,
    ) -> anyhow::Result<Embedded> {
        let master_listener = bind(listen, "master").await?;
        let agent_listener = bind(agent_listen, "agent").await?;
        let master_addr = master_listener.local_addr()?;
        let agent_addr = agent_listener.local_addr()?;
        let master_config = tuning.config(data_dir.join("master"), None);
        let agent_config = shape.config(
            vec![master_addr.to_string()],
            data_dir.join("agent"),
            agent_addr,
        )?;
        Ok(Embedded {
            master_addr,
            agent_addr,
            master: berth_local::master(master_listener, master_config)?,
            agent: berth_local::agent(agent_listener, agent_config)?,
        })
    }

    /// Runs until `shutdown` (then stops both) or until either daemon ends
    /// by itself, which it does only when it fails (a failed durable write,
    /// say): then the other is stopped too and the failure is returned, so
    /// `berth dev` exits non-zero with the reason rather than going on half
    /// alive.
    pub(crate) async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            () = shutdown => self.stop().await,
            ended = self.master.wait() => {
                let _ = self.agent.stop().await;
                ended.context("the embedded master stopped")?;
                anyhow::bail!("the embedded master stopped")
            }
            ended = self.agent.wait() => {
                let _ = self.master.stop().await;
                ended.context("the embedded agent stopped")?;
                anyhow::bail!("the embedded agent stopped")
            }
        }
    }

    /// Stops both, the agent first so its final updates reach the master.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let agent_result = self.agent.stop().await;
        let master_result = self.master.stop().await;
        agent_result?;
        master_result?;
        Ok(())
    }
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let cluster = Embedded::start(
        &args.data_dir,
        args.listen,
        args.agent_listen,
        &args.tuning,
        &args.shape,
    )
    .await?;
    // The frameworks, on the embedded master.
    let mut frameworks = Vec::new();
    let mut lines = String::new();
    if !args.no_service {
        let listener = bind(args.service_listen, "service framework").await?;
        let local = listener.local_addr()?;
        let config = berth_service::serve::ServeConfig {
            masters: vec![cluster.master_addr.to_string()],
            name: "service".into(),
            holder: format!("dev-{}", std::process::id()),
            listen: local,
            router: Some(crate::service::router_config(
                args.service_listen.ip(),
                args.router_admin,
            )),
        };
        frameworks.push(Framework::spawn(
            "the service framework",
            |stop| async move {
                berth_service::serve::serve(config, listener, stop)
                    .await
                    .map_err(|e| e.to_string())
            },
        ));
        // Port 0 is bound inside the framework once it is active: the
        // router logs the address it got.
        let admin = if args.router_admin.port() == 0 {
            "a free port (logged when the router starts)".to_owned()
        } else {
            format!("http://{}", args.router_admin)
        };
        lines.push_str(&format!(
            "  service: http://{local}   (export BERTH_SERVICE=http://{local}); router admin {admin}\n"
        ));
    }
    if !args.no_jobs {
        let listener = bind(args.jobs_listen, "job framework").await?;
        let local = listener.local_addr()?;
        let config = berth_jobs::serve::ServeConfig {
            masters: vec![cluster.master_addr.to_string()],
            name: "jobs".into(),
            holder: format!("dev-{}", std::process::id()),
            listen: local,
        };
        frameworks.push(Framework::spawn("the job framework", |stop| async move {
            berth_jobs::serve::serve(config, listener, stop)
                .await
                .map_err(|e| e.to_string())
        }));
        lines.push_str(&format!(
            "  jobs:    http://{local}   (export BERTH_JOBS=http://{local})\n"
        ));
    }
    // One write, errors ignored: a closed stdout must not stop the daemons.
    let banner = format!(
        "berth dev is running\n  master: {m}   (export BERTH_MASTER={m})\n  agent:  {a}\n{lines}  data:   {}\ntry: berth run -- echo hello\n",
        args.data_dir.display(),
        m = cluster.master_addr,
        a = cluster.agent_addr,
    );
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    if frameworks.is_empty() {
        return cluster.run_until(shutdown).await;
    }
    // On shutdown the frameworks stop first (their tasks keep running),
    // then the agent and the master.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asked_by_signal = asked.clone();
    let (stops, dones): (Vec<_>, Vec<_>) = frameworks.into_iter().map(|f| (f.stop, f.done)).unzip();
    let mut stopped = dones.clone();
    let all = async move {
        shutdown.await;
        asked_by_signal.store(true, std::sync::atomic::Ordering::SeqCst);
        for tx in stops {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            futures::future::join_all(stopped.iter_mut().map(|d| d.wait_for(Option::is_some))),
        )
        .await;
    };
    // A framework stops on its own only when it must (a failed write of its
    // state): so does berth dev, with the reason.
    let unasked = async move {
        let waits = dones.into_iter().map(|mut d| {
            Box::pin(async move {
                d.wait_for(Option::is_some).await.map_or_else(
                    |_| "a framework stopped".to_owned(),
                    |w| w.clone().unwrap_or_default(),
                )
            })
        });
        let (why, _, _) = futures::future::select_all(waits).await;
        if asked.load(std::sync::atomic::Ordering::SeqCst) {
            // Stopped because berth dev is stopping: not a failure.
            std::future::pending::<()>().await;
        }
        why
    };
    tokio::select! {
        r = cluster.run_until(all) => r,
        why = unasked => anyhow::bail!("{why}"),
    }
}

/// A framework `berth dev` runs on its embedded master.
struct Framework {
    /// Asks it to stop.
    stop: tokio::sync::oneshot::Sender<()>,
    /// Its end: `Some` with why once it stopped.
    done: tokio::sync::watch::Receiver<Option<String>>,
}

impl Framework {
    /// Runs `serve` (given the future that completes when asked to stop)
    /// on a task of its own.
    fn spawn<F>(
        what: &'static str,
        serve: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
    ) -> Framework
    where
        F: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::watch::channel::<Option<String>>(None);
        let run = serve(Box::pin(async move {
            let _ = rx.await;
        }));
        tokio::spawn(async move {
            let result = run.await;
            let _ = done_tx.send(Some(match result {
                Ok(()) => format!("{what} stopped"),
                Err(e) => format!("{what} stopped: {e}"),
            }));
        });
        Framework { stop, done }
    }
}

#[cfg(test)]
mod tests;
