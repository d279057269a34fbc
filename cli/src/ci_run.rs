//! `berth ci run`: runs a local repository's pipeline on a cluster (an
//! embedded one by default), prints each job's progress, shows the logs of
//! failed jobs, and exits with the pipeline's result.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use berth_ci::exec::runner::{self, PipelineRecord, RunnerConfig, Submission};
use berth_ci::exec::state::{JobStatus, PipelineStatus};
use berth_ci::exec::{log, source};
use berth_ci::{PipelineSource, SecretVariable};

use crate::ci::RunArgs;
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

async fn run_inner(args: RunArgs) -> anyhow::Result<bool> {
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
    let keeps_logs = args.data_dir.is_some();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let result = async {
        let (handle, runner_task) = runner::start(config, async {
            let _ = stop_rx.await;
        })
        .await?;
        let server =
            tokio::spawn(axum::serve(listener, handle.router().into_make_service()).into_future());
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
        let short = revision.sha.get(..8).unwrap_or(&revision.sha).to_string();
        let id = handle
            .submit(Submission {
                revision: revision.clone(),
                definition,
                source: PipelineSource::Web,
                variables,
            })
            .await?;
        println!(
            "pipeline #{id}: {} {} ({short}{})",
            revision.project_name,
            revision.ref_name,
            if revision.dirty { ", working tree" } else { "" }
        );
        let passed = follow(&handle, id, keeps_logs).await?;
        server.abort();
        let _ = stop_tx.send(());
        let _ = runner_task.await;
        Ok::<bool, anyhow::Error>(passed)
    }
    .await;
    if let Some(cluster) = cluster {
        cluster.stop().await?;
    }
    result
}

/// Prints every job's status change until the pipeline is finished;
/// then prints the logs of the jobs that failed. Returns whether it passed.
async fn follow(handle: &runner::RunnerHandle, id: u64, keeps_logs: bool) -> anyhow::Result<bool> {
    let mut changes = handle.changes();
    let mut shown: BTreeMap<usize, (JobStatus, usize)> = BTreeMap::new();
    let record = loop {
        let record = handle
            .get(id)
            .await?
            .ok_or_else(|| anyhow!("pipeline {id} disappeared"))?;
        for (i, (node, job)) in record
            .state
            .nodes()
            .iter()
            .zip(record.state.jobs())
            .enumerate()
        {
            let now = (job.status, job.attempts.len());
            if shown.get(&i) != Some(&now) && job.status != JobStatus::Created {
                shown.insert(i, now);
                println!(
                    "  {:<10} {:<30} {}",
                    job.status.as_str(),
                    node.name,
                    detail(job)
                );
            }
        }
        let status = record.status();
        if status.is_finished() && record.state.running().is_empty() {
            break record;
        }
        // Wake on a change, and at least every second.
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
    };
    // The logs are collected from the agents as the jobs run; give the
    // last chunks a moment to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, (node, job)) in record
        .state
        .nodes()
        .iter()
        .zip(record.state.jobs())
        .enumerate()
    {
        if job.status == JobStatus::Failed {
            println!("\n--- log of failed job {} ---", node.name);
            print_log(handle, &record, i, job.attempts.len(), keeps_logs);
        }
    }
    let status = record.status();
    let warnings = if record.state.has_warnings() {
        " (with allowed failures)"
    } else {
        ""
    };
    println!("\npipeline #{id}: {status}{warnings}");
    Ok(status == PipelineStatus::Success)
}

fn detail(job: &berth_ci::exec::state::JobState) -> String {
    let Some(attempt) = job.attempts.last() else {
        return String::new();
    };
    let mut out = String::new();
    if job.attempts.len() > 1 {
        out.push_str(&format!("attempt {} ", job.attempts.len()));
    }
    if let (Some(start), Some(end)) = (attempt.started, attempt.finished)
        && let Ok(took) = end.duration_since(start)
    {
        out.push_str(&format!("{:.1}s ", took.as_secs_f64()));
    }
    if let Some(end) = &attempt.end
        && let Some(reason) = end.reason
    {
        out.push_str(&format!("{reason}: {}", end.message));
    }
    out.trim_end().to_string()
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
        println!("(no log: {} does not exist)", path.display());
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
            print!("{}", String::from_utf8_lossy(&bytes));
        }
        Err(e) => println!("(no log: {}: {e})", path.display()),
    }
}
