//! `berth ci run`: runs a local repository's pipeline on a cluster (an
//! embedded one by default), shows each job's progress
//! ([`crate::ci_progress`]), plays the `--play` manual jobs, cancels the
//! pipeline on Ctrl-C, shows the logs of failed jobs, and exits with the
//! pipeline's result.
//!
//! The embedded cluster is [`crate::daemons::Embedded`], the same code as
//! `berth dev`, with the runner's file routes on the `--listen` address;
//! `--master` runs on a real cluster instead. The runner has
//! `RunnerConfig::teardown_on_stop` and a 60 s failover timeout, and every
//! way out stops the runner and waits for it, so the framework is torn
//! down whether the run passed, failed, was canceled or ended in an error.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use berth_ci::exec::api::PipelineView;
use berth_ci::exec::runner::{self, PipelineRecord, RunnerConfig, Submission};
use berth_ci::exec::state::{JobStatus, PipelineStatus};
use berth_ci::exec::{log, source};
use berth_ci::{PipelineSource, SecretVariable};

use crate::ci::RunArgs;
use crate::ci_progress::{Mode, Progress};
use crate::daemons::Embedded;

/// Runs the command; 0 when the pipeline passed, 1 when it failed or was
/// canceled, 2 when it could not run.
pub(crate) async fn run(args: RunArgs) -> ExitCode {
    match run_inner(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run_inner(mut args: RunArgs) -> anyhow::Result<bool> {
    // The embedded agent lives for this run only: its jobs must not
    // outlive it (after a second Ctrl-C, say).
    args.shape.kill_tasks_on_shutdown = true;
    let dir = args.dir.clone();
    let reference = args.reference.clone();
    let dirty = args.dirty;
    let (revision, definition) = tokio::task::spawn_blocking(move || {
        let rev = source::resolve(&dir, reference.as_deref(), dirty)?;
        let text = source::read_file(&rev, ".gitlab-ci.yml")?;
        Ok::<_, anyhow::Error>((rev, text))
    })
    .await??;
    let Some(definition) = definition else {
        bail!(
            "{} has no .gitlab-ci.yml{}",
            revision.root.display(),
            if revision.dirty {
                ""
            } else {
                " in that commit"
            }
        );
    };
    let definition =
        String::from_utf8(definition).map_err(|_| anyhow!(".gitlab-ci.yml is not UTF-8 text"))?;
    {
        let (rev, text, play) = (revision.clone(), definition.clone(), args.play.clone());
        let variables = variables(&args);
        tokio::task::spawn_blocking(move || check_file(&rev, &text, variables, &play)).await??;
    }

    let temp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("berth-ci-run-")
                .tempdir()
                .context("cannot make a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let cluster = if args.master.is_empty() {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        Some(Embedded::start(&data_dir, loopback, loopback, &args.tuning, &args.shape).await?)
    } else {
        None
    };
    let masters = match &cluster {
        Some(c) => vec![c.master_addr.to_string()],
        None => args.master.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let mut config = RunnerConfig::new(masters, data_dir.join("ci"), format!("http://{local}"));
    config.max_log_bytes = args.max_log_bytes;
    config.stuck_timeout = Some(args.stuck_timeout);
    // A one-shot run: its framework goes when it ends, however it ends
    // (teardown at stop), and if this process dies the masters remove it
    // (killing its jobs) after a minute, as for `berth run`, instead of
    // keeping it for `berth ci serve`'s week.
    config.teardown_on_stop = true;
    config.failover_timeout = CI_RUN_FAILOVER_TIMEOUT;
    let keeps_logs = args.data_dir.is_some();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let result = async {
        let (handle, runner_task) = runner::start(config, async {
            let _ = stop_rx.await;
        })
        .await?;
        let server =
            tokio::spawn(axum::serve(listener, handle.router().into_make_service()).into_future());
        let passed = submit_and_follow(&handle, &args, &revision, definition, keeps_logs).await;
        server.abort();
        // Every way out (passed, failed, canceled, Ctrl-C twice, an error)
        // stops the runner and waits for it: it tears the framework down.
        let _ = stop_tx.send(());
        let _ = runner_task.await;
        // A runner that stopped on its own (a failed write of its state)
        // is the error to report, whatever following the pipeline said.
        if let Some(why) = handle.failure() {
            anyhow::bail!("{why}");
        }
        passed
    }
    .await;
    if let Some(cluster) = cluster {
        cluster.stop().await?;
    }
    result
}

/// How long the masters keep `berth ci run`'s framework when the command
/// dies without tearing it down.
const CI_RUN_FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Submits the pipeline and follows it to its end (see [`follow`]).
async fn submit_and_follow(
    handle: &runner::RunnerHandle,
    args: &RunArgs,
    revision: &source::Revision,
    definition: String,
    keeps_logs: bool,
) -> anyhow::Result<bool> {
    let variables = variables(args);
    let short = revision.sha.get(..8).unwrap_or(&revision.sha).to_string();
    let id = handle
        .submit(Submission {
            revision: revision.clone(),
            definition,
            source: PipelineSource::Web,
            variables,
        })
        .await?;
    // A closed stdout does not stop the pipeline (its result is the exit
    // status).
    let _ = outln!(
        "pipeline #{id}: {} {} ({short}{})",
        revision.project_name,
        revision.ref_name,
        if revision.dirty { ", working tree" } else { "" }
    );
    follow(handle, id, &args.play, keeps_logs).await
}

/// The pipeline's variables: `--var`s, then `--secret`s (masked).
fn variables(args: &RunArgs) -> Vec<SecretVariable> {
    let mut variables: Vec<SecretVariable> = args
        .vars
        .iter()
        .map(|(name, value)| SecretVariable {
            name: name.clone(),
            value: value.clone(),
            masked: false,
        })
        .collect();
    variables.extend(args.secrets.iter().map(|(name, value)| SecretVariable {
        name: name.clone(),
        value: value.clone(),
        masked: true,
    }));
    variables
}

/// Prints the pipeline file's lint warnings (what berth ignores or does
/// differently; with the files it includes, read from `rev` as the runner
/// will) and checks `--play` names against it before anything runs:
/// each must name a job of the file, or one of its `parallel` instances
/// (`deploy: [eu]`, `test 1/3`). A file that does not parse is left to the
/// runner, which says why.
fn check_file(
    rev: &source::Revision,
    definition: &str,
    variables: Vec<SecretVariable>,
    play: &[String],
) -> anyhow::Result<()> {
    let ctx = crate::ci_repo::context_of(rev, PipelineSource::Web, variables);
    let Ok((config, warnings)) = berth_ci::Config::parse_in(
        definition,
        ".gitlab-ci.yml",
        &berth_ci::ParseOptions::default(),
        rev,
        &ctx,
    ) else {
        return Ok(());
    };
    for w in &warnings {
        let _ = outln!("{}", w.located(".gitlab-ci.yml"));
    }
    let names: Vec<&str> = config.job_names().collect();
    for wanted in play {
        let known = names.iter().any(|n| {
            wanted == n
                || wanted.starts_with(&format!("{n}: ["))
                || wanted
                    .strip_prefix(&format!("{n} "))
                    .is_some_and(|rest| rest.contains('/'))
        });
        if !known {
            bail!(
                "--play {wanted:?}: .gitlab-ci.yml has no job of that name (its jobs: {})",
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// Says which `--play` jobs will not be played in this pipeline: left out
/// by its rules, or not manual.
fn play_notices(record: &PipelineRecord, play: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for wanted in play {
        let jobs: Vec<_> = record
            .plan
            .jobs
            .iter()
            .filter(|j| j.name == *wanted || j.base_name == *wanted)
            .collect();
        if jobs.is_empty() {
            out.push(format!(
                "berth: --play {wanted:?}: the job is not in this pipeline (its rules left it out)"
            ));
        } else if !jobs.iter().any(|j| j.when == berth_ci::When::Manual) {
            out.push(format!(
                "berth: --play {wanted:?}: not a manual job; it runs by itself"
            ));
        }
    }
    out
}

/// Shows every job's progress until the pipeline is finished, playing the
/// `--play` jobs when they wait; then prints the logs of the jobs that
/// failed. Ctrl-C (or SIGTERM) cancels the pipeline and waits for its jobs
/// to end; a second one stops waiting. Returns whether it passed.
async fn follow(
    handle: &runner::RunnerHandle,
    id: u64,
    play: &[String],
    keeps_logs: bool,
) -> anyhow::Result<bool> {
    let mut changes = handle.changes();
    let mut progress = Progress::new(Mode::detect());
    let mut played: BTreeSet<usize> = BTreeSet::new();
    let mut interrupt = Box::pin(crate::daemons::shutdown_signal());
    let mut canceled = false;
    if let Some(record) = handle.get(id).await? {
        for notice in play_notices(&record, play) {
            eprintln!("{notice}");
        }
    }
    let mut shown_children: BTreeMap<u64, Progress> = BTreeMap::new();
    let (record, family) = loop {
        let record = handle
            .get(id)
            .await?
            .ok_or_else(|| anyhow!("pipeline {id} disappeared"))?;
        let family = descendants(handle, &record).await?;
        for child in &family {
            progress.set_child_status(child.id, child.status());
        }
        progress.update(&record);
        for child in &family {
            let lines = shown_children
                .entry(child.id)
                .or_insert_with(|| Progress::child(child.id))
                .child_lines(child);
            for line in lines {
                progress.say(&line);
            }
        }
        let to_play: Vec<(usize, String)> = record
            .plan
            .jobs
            .iter()
            .zip(record.state.jobs())
            .enumerate()
            .filter(|(i, (planned, job))| {
                job.status == JobStatus::Manual
                    && !played.contains(i)
                    && play
                        .iter()
                        .any(|p| *p == planned.name || *p == planned.base_name)
            })
            .map(|(i, (planned, _))| (i, planned.name.clone()))
            .collect();
        if !canceled && !to_play.is_empty() {
            for (i, name) in to_play {
                played.insert(i);
                handle
                    .play(id, &name)
                    .await
                    .with_context(|| format!("cannot play {name}"))?;
            }
            // The record read above is from before: read it again.
            continue;
        }
        let ended = |r: &PipelineRecord| r.status().is_finished() && r.state.running().is_empty();
        // A child pipeline without `strategy: depend` can outlive its
        // trigger job: wait for it too.
        if ended(&record) && family.iter().all(|r| ended(r)) {
            progress.finish(&record);
            break (record, family);
        }
        // Wake on a change, and at least every second (the bars' times).
        tokio::select! {
            _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()) => {}
            () = &mut interrupt => {
                if canceled {
                    progress.finish(&record);
                    progress.note(
                        "berth: stopped waiting; jobs still running are killed as the CI framework is torn down",
                    );
                    return Ok(false);
                }
                canceled = true;
                progress.note(&format!(
                    "berth: canceling pipeline #{id}; waiting for its jobs to end (Ctrl-C again to stop waiting)"
                ));
                handle.cancel(id).await?;
                interrupt = Box::pin(crate::daemons::shutdown_signal());
            }
        }
    };
    // The logs are collected from the agents as the jobs run; wait (a
    // while at most) until the last chunks are stored.
    let collected = async {
        while std::iter::once(&*record)
            .chain(family.iter().map(|r| &**r))
            .flat_map(|r| r.state.jobs())
            .filter_map(|j| j.attempts.last())
            .any(|a| handle.is_collecting_log(&a.task_id))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), collected).await;
    // Coverage is searched in a job's whole log, just after it is stored.
    let record =
        match tokio::time::timeout(Duration::from_secs(5), coverage_searched(handle, id)).await {
            Ok(Ok(Some(newer))) => newer,
            _ => record,
        };
    for rec in std::iter::once(&*record).chain(family.iter().map(|r| &**r)) {
        let of = if rec.id == id {
            String::new()
        } else {
            format!("#{}/", rec.id)
        };
        for (i, (node, job)) in rec.state.nodes().iter().zip(rec.state.jobs()).enumerate() {
            if job.status == JobStatus::Failed {
                let _ = outln!("\n--- log of failed job {of}{} ---", node.name);
                print_log(handle, rec, i, job.attempts.len(), keeps_logs);
            }
        }
    }
    for child in &family {
        let _ = outln!("\nchild pipeline #{}: {}", child.id, child.status());
    }
    let status = record.status();
    let warnings = if record.state.has_warnings() {
        " (with allowed failures)"
    } else {
        ""
    };
    let reports = crate::ci_reports::report_lines(&PipelineView::of(&record));
    if !reports.is_empty() {
        let _ = outln!();
        for line in reports {
            let _ = outln!("{line}");
        }
    }
    let _ = outln!("\npipeline #{id}: {status}{warnings}");
    Ok(status == PipelineStatus::Success)
}

/// The pipeline once the coverage of every ended job with `coverage:` was
/// searched in its log.
async fn coverage_searched(
    handle: &runner::RunnerHandle,
    id: u64,
) -> anyhow::Result<Option<std::sync::Arc<PipelineRecord>>> {
    loop {
        let Some(record) = handle.get(id).await? else {
            return Ok(None);
        };
        let waiting = record
            .plan
            .jobs
            .iter()
            .zip(record.state.jobs())
            .enumerate()
            .any(|(i, (planned, job))| {
                let attempts = job.attempts.len();
                let launched = job.attempts.last().is_some_and(|a| !a.task_id.is_empty());
                planned.coverage.is_some()
                    && launched
                    && job.status.is_finished()
                    && !record
                        .reports
                        .get(&i)
                        .is_some_and(|r| r.attempt == attempts && r.coverage_searched)
            });
        if !waiting {
            return Ok(Some(record));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The child pipelines of `record`, their children, and so on (as
/// published now).
async fn descendants(
    handle: &runner::RunnerHandle,
    record: &PipelineRecord,
) -> anyhow::Result<Vec<std::sync::Arc<PipelineRecord>>> {
    let mut out: Vec<std::sync::Arc<PipelineRecord>> = Vec::new();
    let mut next: Vec<u64> = record.family.children.iter().map(|c| c.pipeline).collect();
    while let Some(id) = next.pop() {
        if out.iter().any(|r| r.id == id) {
            continue;
        }
        if let Some(child) = handle.get(id).await? {
            next.extend(child.family.children.iter().map(|c| c.pipeline));
            out.push(child);
        }
    }
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// Prints a job's stored log, cut at `--max-log-bytes` with a line that
/// says where the whole log is (or that it is not kept).
fn print_log(
    handle: &runner::RunnerHandle,
    record: &PipelineRecord,
    job: usize,
    attempt: usize,
    keeps_logs: bool,
) {
    let path = handle.log_path(record.id, job, attempt);
    if !path.exists() {
        let _ = outln!("(no log: {} does not exist)", path.display());
        return;
    }
    match log::read_part(&path, 0, handle.max_log_bytes()) {
        Ok(part) => {
            let bytes = part.into_bytes(|limit, total| {
                let location = if keeps_logs {
                    format!("is at {}", path.display())
                } else {
                    "is not kept (run with --data-dir to keep it)".to_string()
                };
                log::marker_line(limit, total, true, &location)
            });
            let _ = out!("{}", String::from_utf8_lossy(&bytes));
        }
        Err(e) => {
            let _ = outln!("(no log: {}: {e})", path.display());
        }
    }
}
