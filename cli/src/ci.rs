//! `berth ci ...`: the CI framework's commands and their arguments, and
//! `berth ci lint`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use berth_ci::{Config, Diagnostic, ParseOptions};
use clap::{Args, Subcommand};

/// `berth ci` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CiCommand {
    /// Check a .gitlab-ci.yml: print errors and unsupported keywords.
    ///
    /// Exits 0 when there is no error (warnings allowed), 1 when there are
    /// errors, 2 when the file cannot be read.
    Lint(LintArgs),
    /// Run a repository's pipeline on a cluster and show its progress.
    ///
    /// Without --master, starts a master and an agent in this process for
    /// the run (as `berth dev` does) and stops them afterwards. Exits 0 when
    /// the pipeline passes, 1 when it fails or is canceled, 2 when it cannot
    /// run. Ctrl-C cancels the pipeline (its jobs' after_script runs) and
    /// waits for its jobs to end; a second Ctrl-C stops waiting.
    Run(Box<RunArgs>),
    /// Run the CI framework as a daemon: the runner on the cluster, its
    /// HTTP/JSON API and the files agents fetch and upload, on one port.
    Serve(crate::ci_client::ServeArgs),
    /// Run a repository's pipeline on the CI framework (`berth ci serve`)
    /// of this machine; prints the new pipeline.
    Trigger {
        /// The repository (any directory inside it).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The branch, tag or commit to run (default: HEAD).
        #[arg(long = "ref")]
        reference: Option<String>,
        /// Run the working tree as it is.
        #[arg(long, conflicts_with = "reference")]
        dirty: bool,
        /// A pipeline variable NAME=VALUE (repeatable).
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// A masked variable NAME=VALUE (repeatable).
        #[arg(long = "secret", value_parser = parse_var)]
        secrets: Vec<(String, String)>,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// Pipelines, newest first (the newest 100 unless --limit).
    List {
        /// How many pipelines at most (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only pipelines whose ids are below this one (the next page).
        #[arg(long)]
        before: Option<u64>,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// A pipeline and its jobs.
    Show {
        /// The pipeline.
        id: u64,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// A job's log (masked), or every job's log of a pipeline; -f follows.
    ///
    /// `berth ci logs 12/build` (or `12 build`) prints the latest attempt's
    /// log of job build; -f follows it until the job has ended (a job
    /// waiting to run again, after a retry, is waited for).
    ///
    /// `berth ci logs 12` prints every job's log, job by job in plan
    /// order, each attempt under a line `== build (stage build, attempt
    /// 1) ==`. With -f it follows the pipeline until it is finished: the
    /// log of each job as it runs; while one job's section is open, the
    /// output of jobs running at the same time is printed line by line,
    /// prefixed with `[job] `.
    ///
    /// Exits 0 once printed, whatever the pipeline's result; 1 for an
    /// unknown pipeline or job or an unreachable server.
    Logs {
        /// PIPELINE or PIPELINE/JOB, e.g. 12 (every job) or 12/build; the
        /// job is everything after the first `/`.
        #[arg(value_name = "PIPELINE[/JOB]", value_parser = crate::ci_logs::parse_job_ref)]
        target: crate::ci_logs::JobRef,
        /// The job's name, as a second argument (`12 build` is `12/build`).
        #[arg(value_name = "JOB")]
        job: Option<String>,
        /// Keep printing until the job (or the pipeline) has ended.
        #[arg(short, long)]
        follow: bool,
        /// The whole log, also past the server's --max-log-bytes.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// Cancel a pipeline: running jobs get SIGTERM (after_script runs),
    /// then SIGKILL; jobs not started never start.
    Cancel {
        /// The pipeline.
        id: u64,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// Run a pipeline's failed and canceled jobs again (`12`), or one job
    /// (`12/test`), keeping the artifacts of those that passed.
    ///
    /// One job is GitLab's "retry job": a job that has ended (failed,
    /// canceled, or passed) gets a new attempt, and the jobs its failure
    /// skipped wait for it again. A job still to run or running is refused.
    Retry {
        /// PIPELINE or PIPELINE/JOB, e.g. 12 or 12/test.
        #[arg(value_name = "PIPELINE[/JOB]", value_parser = crate::ci_logs::parse_job_ref)]
        target: crate::ci_logs::JobRef,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// Start a manual job.
    Play {
        /// PIPELINE/JOB, e.g. 12/deploy; the job is everything after the
        /// first `/`.
        #[arg(value_name = "PIPELINE/JOB", value_parser = crate::ci_logs::parse_job_ref)]
        target: crate::ci_logs::JobRef,
        /// The job's name, as a second argument (`12 deploy` is
        /// `12/deploy`).
        #[arg(value_name = "JOB")]
        job: Option<String>,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// Environments and their last successful deployments, per project
    /// (name, state available/stopped, pipeline, job, ref, commit, when,
    /// URL); `environments stop NAME` plays the stop job (`on_stop`) of
    /// the last deployment.
    Environments {
        #[command(subcommand)]
        command: Option<EnvironmentCommand>,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// Registered repositories: the CI framework polls their branches (and
    /// takes push webhooks) and runs a pipeline for every new commit.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
}

/// `berth ci environments` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum EnvironmentCommand {
    /// Stop an environment: play (or run again) the `on_stop` job of its
    /// last deployment, in that deployment's pipeline.
    Stop {
        /// The environment's name.
        name: String,
        /// Its project's name, when several projects have the name.
        #[arg(long)]
        project: Option<String>,
    },
}

/// `berth ci repo` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RepoCommand {
    /// Register a repository; its branches' current heads run at once.
    Add {
        /// A path on the CI framework's machine, or a URL git can fetch
        /// (file://, http(s)://, ssh://, git://, user@host:path).
        url: String,
        /// A branch to watch (repeatable; default: the repository's default
        /// branch).
        #[arg(long = "branch")]
        branches: Vec<String>,
        /// Time between polls, e.g. 30s or 5m (1 s to 24 h; default 60 s).
        #[arg(long, value_parser = parse_interval)]
        poll_interval: Option<u64>,
        /// A file holding the webhook secret (16 to 256 printable ASCII
        /// characters; `-` reads standard input). Without one the
        /// repository takes no webhooks.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// Registered repositories, their last pipelines and polling errors.
    List {
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// One registered repository and its recent triggers.
    Show {
        /// The repository.
        id: u64,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
    /// Unregister a repository (its pipelines stay).
    Remove {
        /// The repository.
        id: u64,
        #[command(flatten)]
        server: crate::ci_client::ServerOpts,
    },
}

fn parse_interval(s: &str) -> Result<u64, String> {
    berth_ci::parse_duration(s).map(|d| d.as_secs())
}

fn parse_stuck_timeout(s: &str) -> Result<std::time::Duration, String> {
    berth_ci::parse_duration(s)
}

/// `berth ci run` arguments.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The repository (any directory inside it).
    #[arg(default_value = ".")]
    pub(crate) dir: PathBuf,
    /// The branch, tag or commit to run (default: HEAD).
    #[arg(long = "ref")]
    pub(crate) reference: Option<String>,
    /// Run the working tree as it is, uncommitted changes included.
    #[arg(long, conflicts_with = "reference")]
    pub(crate) dirty: bool,
    /// A pipeline variable NAME=VALUE (repeatable).
    #[arg(long = "var", value_parser = parse_var)]
    pub(crate) vars: Vec<(String, String)>,
    /// A masked variable NAME=VALUE: its value never appears in logs
    /// (repeatable; at least 8 characters).
    #[arg(long = "secret", value_parser = parse_var)]
    pub(crate) secrets: Vec<(String, String)>,
    /// Play this manual job when it waits (repeatable; a job's name, or
    /// the name in the file for all of its `parallel` instances).
    #[arg(long = "play", value_name = "JOB")]
    pub(crate) play: Vec<String>,
    /// Run on this cluster (master addresses, comma-separated) instead of
    /// an embedded one; the agents must reach --listen.
    #[arg(long, value_delimiter = ',')]
    pub(crate) master: Vec<String>,
    /// Where the CI framework serves sources and artifacts to the agents.
    /// Anything but loopback (for the agents of another machine) needs
    /// --insecure.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) listen: std::net::SocketAddr,
    /// Keep the run's data (cluster, pipelines, logs) here instead of a
    /// temporary directory removed at the end.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Show at most this many bytes of a failed job's log, then a line
    /// saying where it was cut (the whole log is kept with --data-dir).
    #[arg(long, default_value_t = berth_ci::exec::log::DEFAULT_MAX_LOG_BYTES, value_parser = parse_log_bytes)]
    pub(crate) max_log_bytes: u64,
    /// Fail a job that is stuck (no agent has its `tags`) after this long,
    /// e.g. 60s or 5m, with `stuck_or_timeout_failure` (which `retry:when`
    /// can name).
    #[arg(long, default_value = "60s", value_parser = parse_stuck_timeout)]
    pub(crate) stuck_timeout: std::time::Duration,
    #[command(flatten)]
    pub(crate) tuning: crate::daemons::MasterTuning,
    #[command(flatten)]
    pub(crate) shape: crate::daemons::AgentShape,
    #[command(flatten)]
    pub(crate) exposure: crate::daemons::Exposure,
}

impl RunArgs {
    /// The APIs the run serves (its file server, and the embedded
    /// cluster's agent), and whether `--insecure` was given.
    pub(crate) fn apis(&self) -> (Vec<crate::daemons::Api<'_>>, bool) {
        let mut apis = vec![crate::daemons::Api {
            name: "the CI file server",
            risk: "download the pipeline's source and artifacts, and upload artifacts",
            listen: self.listen,
            advertise: None,
        }];
        if self.master.is_empty() {
            // The embedded agent listens on loopback (`ci_run.rs`).
            apis.push(
                self.shape
                    .api(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            );
        }
        (apis, self.exposure.insecure)
    }
}

/// `--max-log-bytes`: a number of bytes, at least 1.
pub(crate) fn parse_log_bytes(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of bytes of at least 1 (e.g. 4194304 for 4 MiB)"
        )),
    }
}

pub(crate) fn parse_var(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if !berth_ci::is_name(name) {
        return Err(format!("{name:?} is not a variable name"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `berth ci lint` arguments.
#[derive(Debug, Args)]
pub(crate) struct LintArgs {
    /// The pipeline file; `-` reads standard input.
    #[arg(default_value = ".gitlab-ci.yml")]
    file: PathBuf,
    /// The largest file accepted, in bytes.
    #[arg(long, default_value_t = ParseOptions::default().max_bytes)]
    max_bytes: usize,
}

/// Runs a `berth ci` command; returns the process exit code.
pub(crate) async fn run(command: CiCommand) -> ExitCode {
    match command {
        CiCommand::Lint(args) => lint(&args),
        CiCommand::Run(args) => crate::ci_run::run(*args).await,
        CiCommand::Serve(args) => report(crate::ci_client::serve(args).await),
        CiCommand::Trigger {
            dir,
            reference,
            dirty,
            vars,
            secrets,
            server,
        } => report(
            crate::ci_client::trigger(&server, &dir, reference, dirty, &vars, &secrets).await,
        ),
        CiCommand::List {
            limit,
            before,
            server,
        } => report(crate::ci_client::list(&server, limit, before).await),
        CiCommand::Environments { command, server } => match command {
            None => report(crate::ci_reports::environments(&server).await),
            Some(EnvironmentCommand::Stop { name, project }) => report(
                crate::ci_reports::stop_environment(&server, &name, project.as_deref()).await,
            ),
        },
        CiCommand::Show { id, server } => {
            report(crate::ci_client::pipeline_action(&server, id, None).await)
        }
        CiCommand::Cancel { id, server } => {
            report(crate::ci_client::pipeline_action(&server, id, Some("cancel")).await)
        }
        CiCommand::Retry { target, server } => match target.job {
            None => report(
                crate::ci_client::pipeline_action(&server, target.pipeline, Some("retry")).await,
            ),
            Some(job) => report(crate::ci_client::retry_job(&server, target.pipeline, &job).await),
        },
        CiCommand::Play {
            target,
            job,
            server,
        } => {
            let id = target.pipeline;
            match one_job("play", target, job) {
                Ok(Some(job)) => report(crate::ci_client::play(&server, id, &job).await),
                Ok(None) => usage_error(
                    "play",
                    "which job? give PIPELINE/JOB (or PIPELINE JOB)".into(),
                ),
                Err(code) => code,
            }
        }
        CiCommand::Logs {
            target,
            job,
            follow,
            full,
            server,
        } => {
            let id = target.pipeline;
            let job = match one_job("logs", target, job) {
                Ok(job) => job,
                Err(code) => return code,
            };
            match job {
                Some(job) => report(crate::ci_logs::job_log(&server, id, &job, follow, full).await),
                None => report(crate::ci_logs::pipeline_logs(&server, id, follow, full).await),
            }
        }
        CiCommand::Repo { command } => report(crate::ci_client::repo(command).await),
    }
}

/// The job of `PIPELINE[/JOB] [JOB]`: from either place, not both; a
/// usage error (printed, exit 2) otherwise.
fn one_job(
    subcommand: &str,
    target: crate::ci_logs::JobRef,
    job: Option<String>,
) -> Result<Option<String>, ExitCode> {
    match (target.job, job) {
        (Some(first), Some(second)) => Err(usage_error(
            subcommand,
            format!(
                "the job is given twice ({}/{first} and {second:?}): give PIPELINE/JOB or PIPELINE JOB",
                target.pipeline
            ),
        )),
        (None, Some(second)) => match crate::ci_logs::check_job_name(&second) {
            Ok(_) => Ok(Some(second)),
            Err(e) => Err(usage_error(subcommand, format!("invalid JOB: {e}"))),
        },
        (first, None) => Ok(first),
    }
}

/// A usage error found after parsing (as clap prints its own): the
/// message, the subcommand's usage, exit 2.
fn usage_error(subcommand: &str, message: String) -> ExitCode {
    use clap::CommandFactory as _;
    let mut cli = crate::Cli::command();
    cli.build();
    let error = match cli
        .find_subcommand_mut("ci")
        .and_then(|ci| ci.find_subcommand_mut(subcommand))
    {
        Some(command) => command.error(clap::error::ErrorKind::ArgumentConflict, message),
        None => cli.error(clap::error::ErrorKind::ArgumentConflict, message),
    };
    let _ = error.print();
    ExitCode::from(2)
}

/// Exit 0, or print the error and exit 1 (a closed stdout is a quiet 0:
/// see [`crate::out`]).
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if crate::out::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn lint(args: &LintArgs) -> ExitCode {
    let is_stdin = args.file.as_os_str() == "-";
    let name = if is_stdin {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    let options = ParseOptions {
        max_bytes: args.max_bytes,
        ..ParseOptions::default()
    };
    // Read at most one byte more than the limit, so an endless input is not
    // read whole.
    let limit = u64::try_from(options.max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut bytes = Vec::new();
    let read = if is_stdin {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(&args.file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    if let Err(e) = read {
        eprintln!("berth: cannot read {name}: {e}");
        return ExitCode::from(2);
    }
    if bytes.len() > options.max_bytes {
        // The real size of a file; standard input is not read to its end.
        let size = match std::fs::metadata(&args.file) {
            Ok(m) if !is_stdin && m.is_file() => format!("{} bytes", m.len()),
            _ => format!("more than {} bytes", options.max_bytes),
        };
        let _ = outln!(
            "{name}:1:1: error: the file is {size}, more than the limit of {} bytes (--max-bytes)",
            options.max_bytes
        );
        let _ = outln!("{name}: 0 jobs in 0 stages, 1 error, 0 warnings");
        return ExitCode::from(1);
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let _ = outln!(
                "{name}:1:1: error: the file is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            );
            let _ = outln!("{name}: 0 jobs in 0 stages, 1 error, 0 warnings");
            return ExitCode::from(1);
        }
    };
    let repo = crate::ci_repo::LintRepository::find(if is_stdin { None } else { Some(&args.file) });
    let parsed = Config::parse_in(
        &text,
        &repo.path,
        &options,
        repo.repository(),
        &repo.context,
    );
    let (config, diags): (Option<Config>, Vec<Diagnostic>) = match parsed {
        Ok((c, d)) => (Some(c), d),
        Err(d) => (None, d),
    };
    for d in &diags {
        let _ = outln!("{}", d.located(&name));
    }
    if let Some(c) = &config {
        if !c.included_files().is_empty() {
            let _ = outln!(
                "{name}: includes {} from {}",
                c.included_files().join(", "),
                repo.shown_root
            );
        }
        if c.has_include_rules() {
            let _ = outln!("{name}: include rules evaluated for {}", repo.described);
        }
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    let (jobs, stages) = config
        .as_ref()
        .map_or((0, 0), |c| (c.job_names().count(), c.used_stages().len()));
    let _ = outln!(
        "{name}: {} in {}, {}, {}",
        plural(jobs, "job"),
        plural(stages, "stage"),
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
