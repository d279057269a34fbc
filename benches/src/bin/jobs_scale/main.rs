//! The job framework at scale: `--jobs` cron jobs (10,000) whose
//! schedules together fire `--runs-per-minute` runs (1,000) evenly, on
//! simulated agents through real masters; how long creating them takes,
//! the framework's memory per job, how late each run starts after its
//! tick, runs missed or failed, and the framework's CPU per run.
//!
//! ```sh
//! cargo build --release -p berth-cli -p berth-benches
//! target/release/jobs_scale --berth target/release/berth \
//!     --jobs 10000 --runs-per-minute 1000 --minutes 5
//! ```
//!
//! The run:
//!
//! 1. starts `--masters` masters (with `--berth PATH`, `berth master`
//!    processes; otherwise in this process) and waits for a leader that
//!    commits;
//! 2. connects `--agents` simulated agents ([`berth_benches::agents`]: a
//!    task runs for its `duration_ms` label, then finishes; every state
//!    they report is sent to this bench, which follows runs in
//!    [`tracker`]);
//! 3. starts the job framework: with `--berth`, a `berth jobs serve`
//!    process (its CPU, from `/proc/PID/stat`, and RSS are its own);
//!    otherwise `berth_jobs::serve::serve` in this process (then CPU and
//!    RSS are the whole process's);
//! 4. creates the jobs (`POST /v1/jobs`, `--create-concurrency` at a
//!    time), each with one six-field cron schedule ([`spread`]), labels
//!    `{"duration_ms": …}`, cpus 0.01, mem 8; measures the time, the
//!    framework's RSS before and after (memory per job) and what its
//!    namespace takes in the key-value store;
//! 5. measures `--minutes` from the next whole second: the runs whose
//!    tick falls in that window and that ran (a run's tick is its task's
//!    `BERTH_JOB_TICK`; TASK_RUNNING is stamped by the simulated agent),
//!    against the ticks the schedules have in it; per minute; how late
//!    after its tick each ran (p50/p99/max); the framework's CPU (per run)
//!    and RSS, and the leading master's CPU;
//! 6. waits for the window's last runs, then reads the framework's
//!    history (`GET /v1/jobs?embed=history,activeRuns`, timed): the
//!    window's runs that succeeded, failed, were missed or skipped, or are
//!    still active; and the namespace's size again.
//!
//! `--smoke` is a small, quick run for the tests. A watchdog ends the
//! process if the run takes longer than its budget. Results are in
//! docs/benchmarks.md.

mod report;
mod run;
mod spread;
mod tracker;

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;

/// The job framework at scale on simulated agents.
#[derive(Debug, Parser)]
#[command(name = "jobs_scale")]
pub(crate) struct Args {
    /// Jobs created, each with one cron schedule.
    #[arg(long, default_value_t = 10_000)]
    jobs: u64,
    /// Runs all the jobs' schedules fire together per minute; each job
    /// fires every `jobs × 60 / runs-per-minute` seconds, which must
    /// divide a minute or be whole minutes that divide an hour.
    #[arg(long, default_value_t = 1000)]
    runs_per_minute: u64,
    /// Minutes measured (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// How long each run's task runs on its simulated agent, ms.
    #[arg(long, default_value_t = 1000)]
    duration_ms: u64,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Masters in the Raft group.
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Run the masters and the framework as processes of this `berth`
    /// binary instead of in this process.
    #[arg(long)]
    berth: Option<PathBuf>,
    /// Job creations sent at once.
    #[arg(long, default_value_t = 8)]
    create_concurrency: usize,
    /// Resources each agent advertises.
    #[arg(long, default_value = "cpus:16;mem:65536;disk:100000")]
    agent_resources: String,
    /// Agents sharing one HTTP/2 connection to a master.
    #[arg(long, default_value_t = 50)]
    agents_per_connection: usize,
    /// Seconds to wait for every agent to register.
    #[arg(long, default_value_t = 120)]
    register_timeout: u64,
    /// Seconds creating the jobs may take.
    #[arg(long, default_value_t = 1800)]
    create_timeout: u64,
    /// Seconds to wait after the window for its last runs to start and end.
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
    /// Where the framework process's log goes (default: `jobs.log` in the
    /// run's temporary directory, removed at the end); its level is
    /// `$JOBS_SCALE_LOG`, or `warn`.
    #[arg(long)]
    framework_log: Option<PathBuf>,
    /// Directory to create the run's temporary directory in (default: the
    /// system temp directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also print the results as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// A small run for the tests: 1 master, 10 agents, 40 jobs firing 240
    /// runs a minute (each every 10 s), 0.4 minutes measured, tasks of
    /// 500 ms (overrides those options).
    #[arg(long)]
    smoke: bool,
}

impl Args {
    fn validate(mut self) -> anyhow::Result<Self> {
        if self.smoke {
            self.masters = 1;
            self.agents = 10;
            self.jobs = 40;
            self.runs_per_minute = 240;
            self.minutes = 0.4;
            self.duration_ms = 500;
            self.agents_per_connection = 10;
            self.drain_timeout = 30;
        }
        for (name, v) in [
            ("agents", self.agents),
            ("masters", self.masters),
            ("create-concurrency", self.create_concurrency),
            ("agents-per-connection", self.agents_per_connection),
        ] {
            if v == 0 {
                bail!("--{name} must be at least 1");
            }
        }
        if self.jobs > 100_000 || self.agents > 100_000 || self.masters > 7 {
            bail!("at most 100,000 jobs, 100,000 agents and 7 masters");
        }
        if !self.minutes.is_finite() || self.minutes <= 0.0 || self.minutes > 24.0 * 60.0 {
            bail!("--minutes must be above 0 and at most a day");
        }
        if self.duration_ms > 3_600_000 {
            bail!("--duration-ms must be at most an hour (the simulated agents' limit)");
        }
        spread::Spread::new(self.jobs, self.runs_per_minute)?;
        berth_benches::at_most_a_day(&[
            ("register-timeout", self.register_timeout),
            ("create-timeout", self.create_timeout),
            ("drain-timeout", self.drain_timeout),
        ])?;
        berth_benches::check_berth(self.berth.as_deref())?;
        Ok(self)
    }

    /// The measured window, in seconds.
    fn window_secs(&self) -> u64 {
        (self.minutes * 60.0).ceil() as u64
    }

    /// Seconds the whole run may take before the watchdog ends it.
    fn budget(&self) -> u64 {
        berth_benches::cluster::LEADER_TIMEOUT.as_secs()
            + self.register_timeout
            + 60 // the framework starting
            + self.create_timeout
            + self.window_secs()
            + self.drain_timeout
            + 120 // checks, stopping
            + berth_benches::cluster::STOP_TIMEOUT.as_secs() * self.masters as u64
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse().validate()?;
    berth_benches::watchdog("jobs_scale", args.budget());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run::run(args))
}
