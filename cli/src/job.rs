//! `berth job ...`: the client of the job framework's Metronome-compatible
//! HTTP API (`/v1/jobs`): add, update, list, show, run (and follow a run
//! with `--wait`), runs, logs, kill, remove and schedules.
//!
//! Exit codes: 0 done; 1 the framework refused the request (its message,
//! with each field's JSON path, is printed); 2 bad arguments, or the
//! framework could not be reached. `berth job run --wait` exits with the
//! run's result instead ([`RUN_EXIT_CODES_HELP`]). A 503 (a standby
//! instance, or the framework cannot answer now) is asked again for up to
//! [`crate::api_call::STANDBY_PATIENCE`]: a 503 means nothing was done.
//!
//! What is printed from the API's JSON is in [`render`]; following a run
//! and reading its tasks' logs from their agents (found through the
//! masters, as `berth service logs`) in [`follow`].

mod follow;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use berth_scheduler_core::quoted;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::api_call::definition;
use crate::ci_client::Reply;

/// Where the commands find the job framework, and how they print.
#[derive(Debug, Clone, Args)]
pub(crate) struct JobsOpts {
    /// The job framework's API.
    #[arg(
        long,
        env = "BERTH_JOBS",
        default_value = "http://127.0.0.1:8090",
        global = true
    )]
    jobs: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

/// Where a run's tasks are found (their agents, for their logs).
#[derive(Debug, Clone, Args)]
pub(crate) struct MasterOpts {
    /// Master address(es), comma-separated: where the tasks' agents are
    /// found.
    #[arg(
        long,
        env = "BERTH_MASTER",
        default_value = "127.0.0.1:5050",
        value_delimiter = ','
    )]
    master: Vec<String>,
}

/// `berth job run`'s exit codes (its `--help`).
pub(crate) const RUN_EXIT_CODES_HELP: &str = "\
Exit codes:
  without --wait: 0 the run was started (its id is printed); 1 the job
  framework refused it (unknown job, too many active runs); 2 bad arguments
  or the framework could not be reached.
  with --wait:
  0       the run succeeded (SUCCESS)
  1..255  it failed (FAILED): the failed task's exit code, or 1 when the
          task ended without one (killed, lost, a deadline)
  1       it was not run (MISSED, SKIPPED)
  2       berth's own errors: bad arguments, the framework unreachable or
          refusing the request, the run gone, or --timeout passed first
          (the run goes on; `berth job kill` stops it)";

/// The exit codes of the other commands (their `--help`).
const EXIT_CODES_HELP: &str = "\
Exit codes: 0 done; 1 the job framework refused the request (the reason is
printed, with each field's JSON path); 2 bad arguments or the framework
could not be reached.";

/// A job or run id given on the command line: not empty, and nothing that
/// would change the request's path.
fn parse_id(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an id cannot be empty".into());
    }
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, '/' | '?' | '#' | '%' | '&') || c.is_whitespace())
    {
        return Err(format!("{} has a {c:?}, which no id has", quoted(text)));
    }
    Ok(text.to_owned())
}

/// A job named on the command line, and where its framework is.
#[derive(Debug, Clone, Args)]
pub(crate) struct JobArg {
    /// The job's id.
    #[arg(value_parser = parse_id)]
    id: String,
    #[command(flatten)]
    opts: JobsOpts,
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Add a job from a file (Metronome's job definition, JSON or YAML;
    /// inline `schedules` allowed).
    #[command(after_help = EXIT_CODES_HELP)]
    Add {
        /// The file (`-` for stdin: JSON, or YAML when it does not start
        /// with `{`).
        file: PathBuf,
        #[command(flatten)]
        opts: JobsOpts,
    },
    /// Replace a job's definition with a file's (the id is the file's).
    #[command(after_help = EXIT_CODES_HELP)]
    Update {
        /// The file (`-` for stdin).
        file: PathBuf,
        #[command(flatten)]
        opts: JobsOpts,
    },
    /// The jobs: schedules, active runs, last success and failure.
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        opts: JobsOpts,
    },
    /// One job: its definition, schedules, active runs and recent history.
    #[command(after_help = EXIT_CODES_HELP)]
    Show(JobArg),
    /// Start a run of a job now; with --wait, print its tasks' output and
    /// exit with its result.
    #[command(after_help = RUN_EXIT_CODES_HELP)]
    Run {
        #[command(flatten)]
        job: JobArg,
        /// Follow the run to its end, printing its tasks' stdout and
        /// stderr (prefixed with the task's index when the run has
        /// several), and exit with its result.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 2; the run
        /// goes on).
        #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=604_800))]
        timeout: u64,
        /// With --wait: do not print the tasks' output, only follow the
        /// run's status.
        #[arg(long)]
        no_logs: bool,
        #[command(flatten)]
        masters: MasterOpts,
    },
    /// A job's runs: the active ones and the kept history.
    #[command(after_help = EXIT_CODES_HELP)]
    Runs(JobArg),
    /// Print a run's task output (stdout, or stderr with --stderr), read
    /// from the tasks' agents: of an active run, or a finished one whose
    /// tasks the masters still know (recently completed tasks).
    #[command(after_help = EXIT_CODES_HELP)]
    Logs {
        #[command(flatten)]
        job: JobArg,
        /// The run's id (`berth job runs ID`).
        #[arg(value_parser = parse_id)]
        run: String,
        /// Keep printing new output until the tasks end.
        #[arg(long, short)]
        follow: bool,
        /// Only this index's task (its latest attempt); default: every
        /// index's latest attempt, lines prefixed with the index when
        /// there are several.
        #[arg(long, value_name = "INDEX")]
        task: Option<u32>,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        #[command(flatten)]
        masters: MasterOpts,
    },
    /// Stop a run (it ends FAILED).
    #[command(after_help = EXIT_CODES_HELP)]
    Kill {
        #[command(flatten)]
        job: JobArg,
        /// The run's id.
        #[arg(value_parser = parse_id)]
        run: String,
    },
    /// Remove a job (refused while it has active runs, unless
    /// --stop-runs).
    #[command(after_help = EXIT_CODES_HELP)]
    Remove {
        #[command(flatten)]
        job: JobArg,
        /// Stop the job's active runs and remove it.
        #[arg(long)]
        stop_runs: bool,
    },
    /// A job's schedules: list, add, replace, remove.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// The job framework's secret store (a job's `run.secrets.NAME.source`
    /// names a path in it): set, list, remove.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Store a secret's value, read from stdin (or --from-file) without
    /// its final line break: 8 to 4096 bytes, no line breaks.
    #[command(after_help = EXIT_CODES_HELP)]
    Set {
        /// The secret's path (`db/password`).
        #[arg(value_parser = parse_secret_path)]
        path: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
        #[command(flatten)]
        opts: JobsOpts,
    },
    /// The secrets' paths (never their values).
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        opts: JobsOpts,
    },
    /// Remove a secret.
    #[command(after_help = EXIT_CODES_HELP)]
    Remove {
        /// The secret's path.
        #[arg(value_parser = parse_secret_path)]
        path: String,
        #[command(flatten)]
        opts: JobsOpts,
    },
}

/// A secret's path from the command line: `/`-separated segments of
/// letters, digits, `.`, `_`, `-` (the framework checks the rest).
fn parse_secret_path(s: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    if s.is_empty() || !s.chars().all(ok) {
        return Err(format!(
            "{} is not a secret path: letters, digits, '.', '_', '-' in '/'-separated segments",
            quoted(s)
        ));
    }
    Ok(s.to_owned())
}

async fn secret(command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Set {
            path,
            from_file,
            opts,
        } => {
            let mut value = match &from_file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
                None => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                        .context("cannot read stdin")?;
                    s
                }
            };
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            let body = Some(("text/plain", value));
            ask(&opts, "PUT", &format!("/v1/secrets/{path}"), body).await?;
            print(&opts, &Value::Null, |_| format!("secret {path} stored\n"))
        }
        SecretCommand::List { opts } => {
            let v = ask(&opts, "GET", "/v1/secrets", None).await?;
            print(&opts, &v, |v| {
                v["secrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|p| format!("{p}\n"))
                    .collect()
            })
        }
        SecretCommand::Remove { path, opts } => {
            ask(&opts, "DELETE", &format!("/v1/secrets/{path}"), None).await?;
            print(&opts, &Value::Null, |_| format!("secret {path} removed\n"))
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// A job's schedules and their next ticks.
    #[command(after_help = EXIT_CODES_HELP)]
    List(JobArg),
    /// Add a schedule from a file (Metronome's schedule: `id`, `cron`,
    /// `timezone`, ...).
    #[command(after_help = EXIT_CODES_HELP)]
    Add {
        #[command(flatten)]
        job: JobArg,
        /// The file (`-` for stdin).
        file: PathBuf,
    },
    /// Replace a schedule with a file's (the schedule's id is the file's).
    #[command(after_help = EXIT_CODES_HELP)]
    Replace {
        #[command(flatten)]
        job: JobArg,
        /// The file (`-` for stdin).
        file: PathBuf,
    },
    /// Remove a schedule.
    #[command(after_help = EXIT_CODES_HELP)]
    Remove {
        #[command(flatten)]
        job: JobArg,
        /// The schedule's id.
        #[arg(value_parser = parse_id)]
        schedule: String,
    },
}

/// The job framework answered with an error status: the request was
/// refused (exit 1).
#[derive(Debug)]
pub(crate) struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// One request; a 503 (a standby instance, or a framework that cannot
/// answer now: nothing was done) is asked again for up to
/// [`crate::api_call::STANDBY_PATIENCE`].
async fn call(
    opts: &JobsOpts,
    method: &str,
    path: &str,
    body: Option<(&str, String)>,
) -> anyhow::Result<Reply> {
    let api = crate::api_call::Framework {
        base: &opts.jobs,
        flag: "--jobs",
        what: "the job framework",
    };
    crate::api_call::call(
        &api,
        method,
        path,
        body,
        |r| r.status == 503,
        |r| format!("cannot answer now ({})", api_error(&r.body)),
    )
    .await
}

/// `call`, then [`answer`].
async fn ask(
    opts: &JobsOpts,
    method: &str,
    path: &str,
    body: Option<(&str, String)>,
) -> anyhow::Result<Value> {
    answer(&call(opts, method, path, body).await?)
}

/// Metronome's error body as lines: `PATH: ERROR` for each field error
/// (`{"message", "details": [{"path", "errors": [...]}]}`), the message
/// alone when there are none, the body's text when it is not such JSON.
pub(crate) fn api_error(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body).trim().to_owned();
        return if text.is_empty() {
            "no reason given".to_owned()
        } else {
            text
        };
    };
    let mut lines = Vec::new();
    let message = v["message"].as_str().unwrap_or("").trim();
    for d in v["details"].as_array().into_iter().flatten() {
        let path = d["path"].as_str().filter(|p| !p.is_empty()).unwrap_or("/");
        let errors: Vec<&str> = d["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if errors.is_empty() {
            lines.push(format!("{path}: invalid"));
        }
        lines.extend(errors.iter().map(|e| format!("{path}: {e}")));
    }
    // Metronome's generic message says nothing the details do not.
    if lines.is_empty() || !(message.is_empty() || message == "Object is not valid") {
        lines.insert(
            0,
            if message.is_empty() {
                v.to_string()
            } else {
                message.to_owned()
            },
        );
    }
    lines.join("\n")
}

/// The reply's JSON, or [`Refused`] with the API's error.
fn answer(reply: &Reply) -> anyhow::Result<Value> {
    if reply.status >= 400 {
        return Err(Refused(api_error(&reply.body)).into());
    }
    if reply.body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&reply.body).context("the job framework's answer is not JSON")
}

/// The `id` of a definition's text (a job's or a schedule's).
fn id_of(content_type: &str, text: &str, what: &str) -> anyhow::Result<String> {
    let v: Value = if content_type == "application/yaml" {
        yaml_serde::from_str(text).with_context(|| format!("the {what} file is not YAML"))?
    } else {
        serde_json::from_str(text).with_context(|| format!("the {what} file is not JSON"))?
    };
    match &v["id"] {
        Value::String(id) => {
            parse_id(id).map_err(|e| anyhow::anyhow!("/id: {e} (the {what}'s id)"))
        }
        Value::Null => bail!("/id: the {what} file has no id"),
        other => bail!("/id: must be a string, not {}", quoted(&other.to_string())),
    }
}

/// Prints `v` as JSON.
fn print_json(v: &Value) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// Prints `v` as JSON with `--json`, else `text` of it.
fn print(opts: &JobsOpts, v: &Value, text: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
    if opts.json {
        print_json(v)
    } else {
        out!("{}", text(v))?;
        Ok(())
    }
}

/// Runs a command; its exit code (errors printed).
pub(crate) async fn run(command: JobCommand) -> ExitCode {
    let waits = matches!(command, JobCommand::Run { wait: true, .. });
    match dispatch(command).await {
        Ok(code) => code,
        Err(e) if crate::out::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            for line in format!("{e:#}").lines() {
                eprintln!("berth: {line}");
            }
            // A refused request is 1, except where 1 is a run's result.
            if e.downcast_ref::<Refused>().is_some() && !waits {
                ExitCode::FAILURE
            } else {
                ExitCode::from(2)
            }
        }
    }
}

async fn dispatch(command: JobCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Add { file, opts } => {
            let body = definition(&file)?;
            let v = ask(&opts, "POST", "/v1/jobs", Some(body)).await?;
            print(&opts, &v, |v| changed(v, "added"))?;
        }
        JobCommand::Update { file, opts } => {
            let (ct, text) = definition(&file)?;
            let id = id_of(ct, &text, "job")?;
            let v = ask(&opts, "PUT", &format!("/v1/jobs/{id}"), Some((ct, text))).await?;
            print(&opts, &v, |v| changed(v, "updated"))?;
        }
        JobCommand::List { opts } => {
            let path = "/v1/jobs?embed=activeRuns&embed=schedules&embed=historySummary";
            let v = ask(&opts, "GET", path, None).await?;
            print(&opts, &v, render::jobs_table)?;
        }
        JobCommand::Show(JobArg { id, opts }) => {
            let path = format!("/v1/jobs/{id}?embed=activeRuns&embed=schedules&embed=history");
            let v = ask(&opts, "GET", &path, None).await?;
            print(&opts, &v, render::job_text)?;
        }
        JobCommand::Run {
            job: JobArg { id, opts },
            wait,
            timeout,
            no_logs,
            masters,
        } => {
            let body = Some(("application/json", "{}".to_owned()));
            let v = ask(&opts, "POST", &format!("/v1/jobs/{id}/runs"), body).await?;
            let Some(run) = v["id"].as_str().map(str::to_owned) else {
                bail!(
                    "the job framework's answer has no run id: {}",
                    quoted(&v.to_string())
                );
            };
            if !wait {
                print(&opts, &v, |_| format!("{run}\n"))?;
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("berth: run {run} of job {id} started");
            let follow = follow::Follow {
                opts: &opts,
                job: &id,
                run: &run,
                masters: (!no_logs).then_some(masters.master),
                timeout: Duration::from_secs(timeout),
            };
            return Ok(ExitCode::from(follow::wait(follow).await?));
        }
        JobCommand::Runs(JobArg { id, opts }) => {
            let active = ask(&opts, "GET", &format!("/v1/jobs/{id}/runs"), None).await?;
            let job = ask(&opts, "GET", &format!("/v1/jobs/{id}?embed=history"), None).await?;
            let v = serde_json::json!({ "activeRuns": active, "history": job["history"] });
            print(&opts, &v, |v| {
                render::runs_table(&v["activeRuns"], &v["history"])
            })?;
        }
        JobCommand::Logs {
            job: JobArg { id, opts },
            run,
            follow,
            task,
            stderr,
            masters,
        } => {
            if opts.json {
                bail!("--json does not apply to `berth job logs`: a log is text");
            }
            let v = ask(&opts, "GET", &format!("/v1/jobs/{id}/runs/{run}"), None).await?;
            let tasks = follow::latest_attempts(&v, task)?;
            // Only for tasks the masters no longer list: without it, those
            // are reported as not found.
            let info = ask(&opts, "GET", "/v1/info", None).await.ok();
            let framework = info.as_ref().and_then(|v| v["frameworkId"].as_str());
            follow::print_logs(&masters.master, &tasks, follow, stderr, framework).await?;
        }
        JobCommand::Kill {
            job: JobArg { id, opts },
            run,
        } => {
            let path = format!("/v1/jobs/{id}/runs/{run}/actions/stop");
            let v = ask(&opts, "POST", &path, None).await?;
            print(&opts, &v, |_| {
                format!("run {run} of job {id} is being stopped\n")
            })?;
        }
        JobCommand::Remove {
            job: JobArg { id, opts },
            stop_runs,
        } => {
            let path = format!("/v1/jobs/{id}?stopCurrentJobRuns={stop_runs}");
            let v = ask(&opts, "DELETE", &path, None).await?;
            print(&opts, &v, |_| format!("job {id} removed\n"))?;
        }
        JobCommand::Schedule { command } => schedule(command).await?,
        JobCommand::Secret { command } => secret(command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// After an add or update: `job ID added`, and its schedules' next ticks.
fn changed(v: &Value, what: &str) -> String {
    let mut out = format!("job {} {what}\n", v["id"].as_str().unwrap_or("?"));
    for s in v["schedules"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", render::schedule_line(s)));
    }
    out
}

async fn schedule(command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::List(JobArg { id, opts }) => {
            let v = ask(&opts, "GET", &format!("/v1/jobs/{id}/schedules"), None).await?;
            print(&opts, &v, render::schedules_table)
        }
        ScheduleCommand::Add {
            job: JobArg { id, opts },
            file,
        } => {
            let body = definition(&file)?;
            let v = ask(
                &opts,
                "POST",
                &format!("/v1/jobs/{id}/schedules"),
                Some(body),
            )
            .await?;
            print(&opts, &v, |v| {
                format!("schedule added: {}\n", render::schedule_line(v))
            })
        }
        ScheduleCommand::Replace {
            job: JobArg { id, opts },
            file,
        } => {
            let (ct, text) = definition(&file)?;
            let sid = id_of(ct, &text, "schedule")?;
            let path = format!("/v1/jobs/{id}/schedules/{sid}");
            let v = ask(&opts, "PUT", &path, Some((ct, text))).await?;
            print(&opts, &v, |v| {
                format!("schedule replaced: {}\n", render::schedule_line(v))
            })
        }
        ScheduleCommand::Remove {
            job: JobArg { id, opts },
            schedule,
        } => {
            let path = format!("/v1/jobs/{id}/schedules/{schedule}");
            let v = ask(&opts, "DELETE", &path, None).await?;
            print(&opts, &v, |_| {
                format!("schedule {schedule} of job {id} removed\n")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert_eq!(parse_id(" nightly.backup ").unwrap(), "nightly.backup");
        assert_eq!(parse_id("").unwrap_err(), "an id cannot be empty");
        assert_eq!(parse_id("   ").unwrap_err(), "an id cannot be empty");
        let e = parse_id("a/b").unwrap_err();
        assert!(e.contains("\"a/b\"") && e.contains("'/'"), "{e}");
        assert!(parse_id("a b").is_err());
        assert!(parse_id("a?x=1").is_err());
    }

    #[test]
    fn api_errors_are_rendered_with_their_paths() {
        let body = br#"{"message":"Object is not valid","details":[
            {"path":"/run/cpus","errors":["must be greater than 0"]},
            {"path":"/id","errors":["is required","and more"]}]}"#;
        assert_eq!(
            api_error(body),
            "/run/cpus: must be greater than 0\n/id: is required\n/id: and more"
        );
        let body = br#"{"message":"Job 'x' does not exist"}"#;
        assert_eq!(api_error(body), "Job 'x' does not exist");
        let body = br#"{"message":"refused","details":[{"path":"","errors":["bad"]}]}"#;
        assert_eq!(api_error(body), "refused\n/: bad");
        assert_eq!(api_error(b"gateway down\n"), "gateway down");
        assert_eq!(api_error(b""), "no reason given");
        assert_eq!(api_error(br#"{"code":7}"#), r#"{"code":7}"#);
    }

    #[test]
    fn a_refused_reply_is_refused() {
        let reply = Reply {
            status: 422,
            body: br#"{"message":"Object is not valid","details":[{"path":"/run/mem","errors":["too small"]}]}"#.to_vec(),
            finished: false,
        };
        let e = answer(&reply).unwrap_err();
        assert!(e.downcast_ref::<Refused>().is_some());
        assert_eq!(e.to_string(), "/run/mem: too small");
        let ok = Reply {
            status: 200,
            body: br#"{"id":"a"}"#.to_vec(),
            finished: false,
        };
        assert_eq!(answer(&ok).unwrap()["id"], "a");
    }

    #[test]
    fn the_id_is_read_from_the_file() {
        assert_eq!(
            id_of("application/json", r#"{"id":"backup"}"#, "job").unwrap(),
            "backup"
        );
        assert_eq!(
            id_of(
                "application/yaml",
                "id: nightly\ncron: '* * * * *'\n",
                "schedule"
            )
            .unwrap(),
            "nightly"
        );
        let e = id_of("application/json", r#"{"run":{}}"#, "job").unwrap_err();
        assert_eq!(e.to_string(), "/id: the job file has no id");
        let e = id_of("application/json", r#"{"id":5}"#, "job").unwrap_err();
        assert!(e.to_string().starts_with("/id: must be a string"), "{e}");
        let e = id_of("application/json", r#"{"id":"a/b"}"#, "job").unwrap_err();
        assert!(e.to_string().starts_with("/id: "), "{e}");
        assert!(id_of("application/json", "{", "job").is_err());
    }
}
