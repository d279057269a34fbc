//! A batch-job framework on the SDK's runtime: runs `--tasks` copies of a
//! shell command, retries each failed one up to `--retries` times (every
//! attempt a new task id), and exits 0 when all succeeded, 1 if one ran out
//! of retries, 2 if the framework was removed or its state could not be
//! saved.
//!
//! With `--state FILE` it survives its own restart: it saves its framework
//! id and every launch before it is sent, and a new process started with
//! the same file resumes the framework, reconciles the launches it saved
//! and goes on from there; nothing is launched twice.
//!
//! ```text
//! cargo run -p berth-sdk --example runtime_jobs -- --master 127.0.0.1:5050 \
//!     --tasks 5 --command 'echo hello from $BERTH_TASK_ID' --state jobs.state
//! ```
//!
//! The shape to copy: the framework's state is plain data (`Jobs`); the
//! intent is computed from it (`Scheduler::intent`); the hooks change it
//! and save it; the runtime does all the talking to the master.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_sdk::proto::{TaskInfo, TaskState, TaskStatus};
use berth_sdk::runtime::{Control, Intent, Runtime, Scheduler, Stopped, Wanted};
use berth_sdk::{BoxError, FrameworkConfig, shell_task};
use clap::Parser;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Run a batch of shell tasks on a berth cluster, with retries")]
struct Args {
    /// A master's address (repeatable).
    #[arg(long = "master", default_value = "127.0.0.1:5050")]
    masters: Vec<String>,
    /// How many copies of the command to run.
    #[arg(long, default_value_t = 5)]
    tasks: u32,
    /// The shell command each task runs.
    #[arg(long, default_value = "echo hello from $BERTH_TASK_ID")]
    command: String,
    /// Each task's resources, in the Mesos text form.
    #[arg(long, default_value = "cpus:0.1;mem:32")]
    resources: String,
    /// Attempts after the first for a task that fails.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Where to save the framework's state, to survive a restart.
    #[arg(long)]
    state: Option<PathBuf>,
}

/// One job (a copy of the command) and its attempts.
#[derive(Debug, Clone, Default)]
struct Job {
    /// The current attempt (0 first).
    attempt: u32,
    /// The current attempt may have been launched.
    launched: bool,
    /// How it ended, once it did for good.
    done: Option<TaskState>,
}

/// The framework's whole state.
struct Jobs {
    args: Args,
    framework_id: Option<String>,
    jobs: BTreeMap<u32, Job>,
}

impl Jobs {
    fn task_id(job: u32, attempt: u32) -> String {
        format!("job-{job}-try-{attempt}")
    }

    /// The job and attempt a task id names, if it is one of ours.
    fn parse(task_id: &str) -> Option<(u32, u32)> {
        let rest = task_id.strip_prefix("job-")?;
        let (job, attempt) = rest.split_once("-try-")?;
        Some((job.parse().ok()?, attempt.parse().ok()?))
    }

    fn task(&self, job: u32, attempt: u32) -> Result<TaskInfo, BoxError> {
        let id = Self::task_id(job, attempt);
        Ok(shell_task(
            id.clone(),
            id,
            self.args.command.clone(),
            &self.args.resources,
        )?)
    }

    /// Saves the state (framework id, and each job's attempt, launched
    /// flag and end) as lines of text, replacing the file atomically.
    fn save(&self) -> Result<(), BoxError> {
        let Some(path) = &self.args.state else {
            return Ok(());
        };
        let mut text = format!(
            "framework {}\n",
            self.framework_id.as_deref().unwrap_or("-")
        );
        for (n, job) in &self.jobs {
            let done = job.done.map_or("-", |s| s.as_str_name());
            text.push_str(&format!(
                "job {n} {} {} {done}\n",
                job.attempt, job.launched
            ));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Loads the state saved by an earlier run, if there is one.
    fn load(args: Args) -> Result<Jobs, BoxError> {
        let mut jobs = Jobs {
            jobs: (0..args.tasks).map(|n| (n, Job::default())).collect(),
            framework_id: None,
            args,
        };
        let Some(path) = &jobs.args.state else {
            return Ok(jobs);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(jobs),
            Err(e) => return Err(e.into()),
        };
        for (i, line) in text.lines().enumerate() {
            let bad = || format!("{}:{}: cannot read {line:?}", path.display(), i + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["framework", "-"] => {}
                ["framework", id] => jobs.framework_id = Some((*id).to_owned()),
                ["job", n, attempt, launched, done] => {
                    let job = Job {
                        attempt: attempt.parse().map_err(|_| bad())?,
                        launched: launched.parse().map_err(|_| bad())?,
                        done: match *done {
                            "-" => None,
                            name => Some(TaskState::from_str_name(name).ok_or_else(bad)?),
                        },
                    };
                    jobs.jobs.insert(n.parse().map_err(|_| bad())?, job);
                }
                _ => return Err(bad().into()),
            }
        }
        Ok(jobs)
    }

    fn finished(&self) -> bool {
        self.jobs.values().all(|j| j.done.is_some())
    }
}

impl Scheduler for Jobs {
    fn intent(&self) -> Intent {
        let wanted = self
            .jobs
            .iter()
            .filter(|(_, job)| job.done.is_none())
            .filter_map(|(n, job)| {
                // Built from checked arguments: cannot fail after the first.
                let task = self.task(*n, job.attempt).ok()?;
                Some(if job.launched {
                    Wanted::recovered(task)
                } else {
                    Wanted::new(task)
                })
            })
            .collect();
        Intent::new(wanted)
    }

    async fn on_update(&mut self, status: &TaskStatus) -> Result<Control, BoxError> {
        let state = status.state();
        println!(
            "{}: {} {}",
            status.task_id,
            state.as_str_name(),
            status.message
        );
        let Some((n, attempt)) = Self::parse(&status.task_id) else {
            return Ok(Control::Continue);
        };
        let retries = self.args.retries;
        let Some(job) = self.jobs.get_mut(&n) else {
            return Ok(Control::Continue);
        };
        if attempt != job.attempt || !state.is_terminal() || job.done.is_some() {
            return Ok(Control::Continue);
        }
        if state == TaskState::TaskFinished || job.attempt >= retries {
            job.done = Some(state);
        } else {
            job.attempt += 1;
            job.launched = false;
        }
        self.save()?;
        Ok(if self.finished() {
            Control::Teardown
        } else {
            Control::Continue
        })
    }

    async fn before_launch(&mut self, tasks: &[TaskInfo]) -> Result<(), BoxError> {
        for task in tasks {
            if let Some((n, _)) = Self::parse(&task.task_id)
                && let Some(job) = self.jobs.get_mut(&n)
            {
                job.launched = true;
            }
        }
        self.save()
    }

    async fn on_subscribed(&mut self, framework_id: &str) -> Result<(), BoxError> {
        println!("subscribed as framework {framework_id}");
        self.framework_id = Some(framework_id.to_owned());
        self.save()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Check the task once, with a readable error, before anything starts.
    if let Err(e) = shell_task(
        "job-0-try-0",
        "check",
        args.command.clone(),
        &args.resources,
    ) {
        eprintln!("runtime_jobs: {e}");
        return ExitCode::from(64);
    }
    let mut jobs = match Jobs::load(args) {
        Ok(jobs) => jobs,
        Err(e) => {
            eprintln!("runtime_jobs: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config =
        FrameworkConfig::new("runtime-jobs").failover_timeout(Duration::from_secs(300));
    if let Some(id) = &jobs.framework_id {
        config = config.framework_id(id.clone());
    }
    let runtime = Runtime::new(jobs.args.masters.clone(), config);
    match runtime.run(&mut jobs).await {
        Ok(Stopped::TornDown) | Ok(Stopped::Left) => {}
        Err(e) => {
            eprintln!("runtime_jobs: {e}");
            return ExitCode::from(2);
        }
    }
    let failed: Vec<_> = jobs
        .jobs
        .iter()
        .filter(|(_, j)| j.done != Some(TaskState::TaskFinished))
        .collect();
    if failed.is_empty() {
        println!("all {} jobs finished", jobs.jobs.len());
        ExitCode::SUCCESS
    } else {
        for (n, job) in failed {
            eprintln!("job {n}: {:?} after {} attempts", job.done, job.attempt + 1);
        }
        ExitCode::FAILURE
    }
}
