//! The service framework at scale: apps of long-running instances on
//! simulated agents, deployed through the Marathon API; time until every
//! instance runs, failure → replacement latency, and the framework's CPU
//! and memory.
//!
//! ```sh
//! cargo build --release -p berth-cli -p berth-benches
//! target/release/service_scale --berth target/release/berth \
//!     --agents 1000 --apps 1000 --instances 10
//! ```
//!
//! The run:
//!
//! 1. starts `--masters` masters (with `--berth PATH`, `berth master`
//!    processes; otherwise in this process) and waits for a leader that
//!    commits;
//! 2. connects `--agents` simulated agents ([`berth_benches::agents`] in
//!    service mode: a task runs until it is killed, every state reported
//!    is also sent to this bench, which follows them in [`tracker`]);
//! 3. starts the service framework: with `--berth`, a `berth service
//!    serve --no-router` process (its CPU, from `/proc/PID/stat`, and RSS
//!    are its own); otherwise `berth_service::serve::serve` in this
//!    process (then CPU and RSS are the whole process's, agents and
//!    masters included);
//! 4. deploys `--apps` apps of `--instances` instances each (`POST
//!    /v2/apps`, `--deploy-concurrency` at a time; no health checks,
//!    `backoffSeconds` `--backoff-seconds`) and measures the time from the
//!    first request until every instance runs on an agent, then until the
//!    framework has no deployment left;
//! 5. lets it idle `--steady-seconds` and measures its CPU and RSS with
//!    every instance running;
//! 6. fails `--failures` running instances, `--fail-rate` per second, each
//!    on its agent (TASK_FAILED, exit code 1), and measures for each the
//!    time from the agent's failure report to the agent's TASK_RUNNING of
//!    its next attempt (both stamped by the simulated agents, in this
//!    process), and the framework's CPU meanwhile;
//! 7. checks what the framework says (`GET /v2/apps`: running tasks) and
//!    reads what its state takes in the key-value store.
//!
//! `--smoke` is a small run for the tests. A watchdog ends the process if
//! the run takes longer than its budget. Results are in
//! docs/benchmarks.md.

mod framework;
mod run;
mod tracker;

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;

/// The service framework at scale on simulated agents.
#[derive(Debug, Parser)]
#[command(name = "service_scale")]
pub(crate) struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Apps deployed.
    #[arg(long, default_value_t = 1000)]
    apps: usize,
    /// Instances of each app.
    #[arg(long, default_value_t = 10)]
    instances: u32,
    /// Masters in the Raft group.
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Run the masters and the framework as processes of this `berth`
    /// binary instead of in this process.
    #[arg(long)]
    berth: Option<PathBuf>,
    /// App deployments sent at once.
    #[arg(long, default_value_t = 8)]
    deploy_concurrency: usize,
    /// The apps' `backoffSeconds`: the delay before an instance that
    /// failed is launched again (Marathon's default is 1).
    #[arg(long, default_value_t = 0)]
    backoff_seconds: u64,
    /// Seconds the framework idles, measured, with every instance running.
    #[arg(long, default_value_t = 30)]
    steady_seconds: u64,
    /// Instances failed on purpose.
    #[arg(long, default_value_t = 600)]
    failures: usize,
    /// Failures per second.
    #[arg(long, default_value_t = 10.0)]
    fail_rate: f64,
    /// Resources each agent advertises.
    #[arg(
        long,
        default_value = "cpus:16;mem:65536;disk:100000;ports:[31000-32000]"
    )]
    agent_resources: String,
    /// Agents sharing one HTTP/2 connection to a master.
    #[arg(long, default_value_t = 100)]
    agents_per_connection: usize,
    /// Seconds to wait for every agent to register.
    #[arg(long, default_value_t = 120)]
    register_timeout: u64,
    /// Seconds to wait for every instance to run after the deployments.
    #[arg(long, default_value_t = 900)]
    deploy_timeout: u64,
    /// Seconds to wait for the last replacements after the last failure.
    #[arg(long, default_value_t = 120)]
    replace_timeout: u64,
    /// Directory to create the run's temporary directory in (default: the
    /// system temp directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also print the results as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// A small run for the tests: 1 master, 20 agents, 10 apps of 3
    /// instances, 1 s steady, 10 failures at 20 per second (overrides
    /// those options).
    #[arg(long)]
    smoke: bool,
}

impl Args {
    fn validate(mut self) -> anyhow::Result<Self> {
        if self.smoke {
            self.masters = 1;
            self.agents = 20;
            self.apps = 10;
            self.instances = 3;
            self.steady_seconds = 1;
            self.failures = 10;
            self.fail_rate = 20.0;
            self.agents_per_connection = 10;
        }
        for (name, v) in [
            ("agents", self.agents),
            ("apps", self.apps),
            ("masters", self.masters),
            ("deploy-concurrency", self.deploy_concurrency),
            ("agents-per-connection", self.agents_per_connection),
        ] {
            if v == 0 {
                bail!("--{name} must be at least 1");
            }
        }
        if self.instances == 0 || self.instances > 10_000 {
            bail!("--instances must be 1 to 10,000");
        }
        if self.agents > 100_000 || self.apps > 100_000 || self.masters > 7 {
            bail!("at most 100,000 agents, 100,000 apps and 7 masters");
        }
        if !self.fail_rate.is_finite() || self.fail_rate <= 0.0 || self.fail_rate > 10_000.0 {
            bail!("--fail-rate must be above 0 and at most 10,000 per second");
        }
        berth_benches::at_most_a_day(&[
            ("backoff-seconds", self.backoff_seconds),
            ("steady-seconds", self.steady_seconds),
            ("register-timeout", self.register_timeout),
            ("deploy-timeout", self.deploy_timeout),
            ("replace-timeout", self.replace_timeout),
        ])?;
        berth_benches::check_berth(self.berth.as_deref())?;
        Ok(self)
    }

    /// Seconds the whole run may take before the watchdog ends it.
    fn budget(&self) -> u64 {
        berth_benches::cluster::LEADER_TIMEOUT.as_secs()
            + self.register_timeout
            + 60 // the framework starting
            + self.deploy_timeout
            + 120 // deployments ending
            + self.steady_seconds
            + (self.failures as f64 / self.fail_rate).ceil() as u64
            + self.replace_timeout
            + 120 // checks, stopping
            + berth_benches::cluster::STOP_TIMEOUT.as_secs() * self.masters as u64
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse().validate()?;
    berth_benches::watchdog("service_scale", args.budget());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run::run(args))
}
