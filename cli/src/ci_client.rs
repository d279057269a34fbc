//! `berth ci serve` (the CI framework as a daemon) and the commands that
//! talk to it over its HTTP/JSON API: `trigger`, `list`, `show`,
//! `cancel`, `retry` (a pipeline's failed jobs, or one job), `play` and
//! `repo add|list|show|remove` (`logs` is in [`crate::ci_logs`]), through
//! a small hyper client.
//!
//! On SIGTERM or Ctrl-C, `serve` cancels the token of the gRPC streams and
//! gives open requests [`SHUTDOWN_GRACE`] before it stops anyway.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use berth_ci::exec::api::{PipelineSummary, PipelineView, Trigger, TriggerVariable};
use berth_ci::exec::repos::{self, NewRepo, RepoView, ReposConfig};
use berth_ci::exec::runner::{self, RunnerConfig};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// `berth ci serve` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    masters: crate::daemons::MasterList,
    /// Where the API and the agents' file routes are served. Anything but
    /// loopback needs --insecure.
    #[arg(long, default_value = "127.0.0.1:5080")]
    listen: std::net::SocketAddr,
    /// The URL agents reach this address at (default: http://LISTEN).
    /// Anything but loopback needs --insecure.
    #[arg(long)]
    advertise: Option<String>,
    /// Pipelines, artifacts, caches, logs and mirrors of registered
    /// repositories.
    #[arg(long, default_value = ".berth/ci")]
    data_dir: PathBuf,
    /// Serve at most this many bytes of a job's log, then a line saying
    /// where it was cut and how to get all of it (`?full=true`); the whole
    /// log is always stored.
    #[arg(long, default_value_t = berth_ci::exec::log::DEFAULT_MAX_LOG_BYTES, value_parser = crate::ci::parse_log_bytes)]
    max_log_bytes: u64,
    /// Do not auto-cancel superseded pipelines (by default a new pipeline
    /// for a branch other than the default one cancels the older unfinished
    /// ones of that branch whose started jobs are all `interruptible`).
    #[arg(long)]
    no_auto_cancel: bool,
    /// Seconds a clone or fetch of a registered repository may take.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    git_timeout: u64,
    /// How long job logs are kept after the job ended (`30d`, `12h`, …;
    /// `never` keeps them). Artifacts follow their `expire_in` (30 days
    /// when a job gives none).
    #[arg(long, default_value = "90d", value_parser = parse_retention)]
    log_retention: Retention,
    /// How long a finished pipeline's source archive is kept once none of
    /// its jobs is left to run or play (`7d`, `12h`, …; `never` keeps
    /// them). A job retried after that fails with
    /// `missing_dependency_failure`.
    #[arg(long, default_value = "7d", value_parser = parse_retention)]
    source_retention: Retention,
    #[command(flatten)]
    exposure: crate::daemons::Exposure,
}

impl ServeArgs {
    /// Its API, and whether `--insecure` was given.
    pub(crate) fn apis(&self) -> (Vec<crate::daemons::Api<'_>>, bool) {
        (
            vec![crate::daemons::Api {
                name: "the CI API",
                risk: "run pipelines (any command, on the cluster's agents) and read every job's log and artifacts",
                listen: self.listen,
                advertise: self.advertise.as_deref(),
            }],
            self.exposure.insecure,
        )
    }
}

/// A retention: a duration, or for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retention(Option<Duration>);

/// Parses `--log-retention` and `--source-retention`: a GitLab duration of at least a second, or
/// `never`.
fn parse_retention(text: &str) -> Result<Retention, String> {
    if text.trim() == "never" {
        return Ok(Retention(None));
    }
    let d = berth_ci::parse_duration(text)?;
    if d.is_zero() {
        return Err("a retention must be at least 1 second (or `never`)".into());
    }
    Ok(Retention(Some(d)))
}

/// Where the `berth ci` client commands find the CI framework.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerOpts {
    /// The CI framework's address (`berth ci serve`).
    #[arg(
        long,
        env = "BERTH_CI",
        default_value = "http://127.0.0.1:5080",
        global = true
    )]
    server: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// How long `berth ci serve` waits, after SIGTERM or Ctrl-C, for open
/// requests to end before it stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the CI framework until SIGTERM or Ctrl-C. Open requests then get
/// [`SHUTDOWN_GRACE`] to end (log streams end at once) before the server
/// stops anyway.
pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let base = args.advertise.unwrap_or_else(|| format!("http://{local}"));
    if !base.starts_with("http://") {
        bail!(
            "--advertise must be an http:// URL, not {}",
            berth_scheduler_core::quoted(&base)
        );
    }
    let mut config = RunnerConfig::new(args.masters.master, args.data_dir.clone(), base.clone());
    config.max_log_bytes = args.max_log_bytes;
    config.auto_cancel = !args.no_auto_cancel;
    config.log_retention = args.log_retention.0;
    config.source_retention = args.source_retention.0;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle, mut runner_task) = runner::start(config, async {
        let _ = stop_rx.await;
    })
    .await?;
    let (repos_stop_tx, repos_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let repos_config = ReposConfig {
        fetch_timeout: Duration::from_secs(args.git_timeout),
    };
    let (repos, repos_task) = repos::start(handle.clone(), repos_config, async {
        let _ = repos_stop_rx.await;
    })
    .await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = handle
        .router()
        .merge(berth_ci::exec::api::router(handle.clone()))
        .merge(berth_ci::exec::api::repos_router(repos))
        // The gRPC API (HTTP/2) on the same port; its log streams end
        // when the server shuts down.
        .merge(berth_ci::exec::grpc::router(
            handle.clone(),
            shutdown.clone(),
        ));
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "berth ci serve is running\n  api and files: http://{local}   (export BERTH_CI=http://{local})\n  agents use:    {base}\n  data:          {}",
            args.data_dir.display()
        );
        let _ = out.flush();
    }
    let graceful = shutdown.clone();
    let server = std::future::IntoFuture::into_future(
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move { graceful.cancelled().await }),
    );
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        // The runner stops on its own only when it must (a failed write of
        // its state): so does the process, non-zero, with the reason.
        _ = &mut runner_task => {
            shutdown.cancel();
            let _ = repos_stop_tx.send(());
            let _ = repos_task.await;
            let why = handle
                .failure()
                .unwrap_or_else(|| "the CI runner stopped".to_owned());
            bail!("{why}");
        }
        () = crate::daemons::shutdown_signal() => {
            shutdown.cancel();
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(result) => result?,
                Err(_) => tracing::warn!(
                    "requests still open {}s after the signal; stopping anyway",
                    SHUTDOWN_GRACE.as_secs()
                ),
            }
        }
    }
    let _ = repos_stop_tx.send(());
    let _ = repos_task.await;
    let _ = stop_tx.send(());
    let _ = runner_task.await;
    match handle.failure() {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

/// A response: status and body.
pub(crate) struct Reply {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The body.
    pub(crate) body: Vec<u8>,
    /// `x-berth-job-finished: true`: a log read reached the end of an
    /// attempt that has ended.
    pub(crate) finished: bool,
}

/// One request to the CI framework's HTTP API (30 s at most).
pub(crate) async fn request(
    opts: &ServerOpts,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Reply> {
    let body = body.map(|v| ("application/json", v.to_string()));
    request_to(
        &opts.server,
        "--server",
        "the CI framework",
        method,
        path,
        body,
    )
    .await
}

/// One request to a framework's HTTP API at `base` (30 s at most): `flag`
/// is the option that gave `base`, `what` names the framework in errors,
/// `body` is a content type and the body.
pub(crate) async fn request_to(
    base: &str,
    flag: &str,
    what: &str,
    method: &str,
    path: &str,
    body: Option<(&str, String)>,
) -> anyhow::Result<Reply> {
    let base = base.trim_end_matches('/');
    if !base.starts_with("http://") {
        bail!(
            "{flag} must be an http:// URL, not {}",
            berth_scheduler_core::quoted(base)
        );
    }
    let uri: hyper::Uri = format!("{base}{path}")
        .parse()
        .with_context(|| format!("{base:?} is not a valid URL"))?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut builder = hyper::Request::builder().method(method).uri(uri);
    let payload = match body {
        Some((content_type, text)) => {
            builder = builder.header("content-type", content_type);
            Bytes::from(text)
        }
        None => Bytes::new(),
    };
    let req = builder.body(Full::new(payload))?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| anyhow!("{what} at {base} did not answer in 30 s"))?
        .with_context(|| format!("cannot reach {what} at {base}"))?;
    let status = response.status().as_u16();
    let finished = response
        .headers()
        .get("x-berth-job-finished")
        .is_some_and(|v| v == "true");
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok(Reply {
        status,
        body,
        finished,
    })
}

/// The reply's JSON, or the API's error message.
pub(crate) fn json<T: serde::de::DeserializeOwned>(reply: Reply) -> anyhow::Result<T> {
    if reply.status >= 400 {
        let message = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
        bail!("{message}");
    }
    serde_json::from_slice(&reply.body)
        .context("the CI framework's answer is not the expected JSON")
}

fn print_view(opts: &ServerOpts, view: &PipelineView) -> anyhow::Result<()> {
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(view)?)?;
        return Ok(());
    }
    let s = &view.summary;
    outln!(
        "pipeline #{}: {} {} ({}) {}{}{}{}{}",
        s.id,
        s.project,
        s.ref_name,
        s.sha.get(..8).unwrap_or(&s.sha),
        s.status,
        if s.warnings {
            " (with allowed failures)"
        } else {
            ""
        },
        s.auto_canceled_by
            .map(|by| format!(" (auto-canceled by #{by})"))
            .unwrap_or_default(),
        if s.source_expired {
            " (source expired)"
        } else {
            ""
        },
        s.parent
            .as_ref()
            .map(|p| format!(" (child pipeline of #{}, job {})", p.pipeline, p.job))
            .unwrap_or_default()
    )?;
    let rows: Vec<Vec<String>> = view
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.name.clone(),
                j.stage.clone(),
                j.status.clone(),
                j.attempts.to_string(),
                why(j),
            ]
        })
        .collect();
    out!(
        "{}",
        crate::table::render(&["JOB", "STAGE", "STATUS", "ATTEMPTS", "WHY"], &rows)
    )?;
    for line in crate::ci_reports::report_lines(view) {
        outln!("{line}")?;
    }
    Ok(())
}

/// The WHY column: the failure reason, and what expired.
fn why(job: &berth_ci::exec::api::JobView) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(stuck) = &job.stuck {
        parts.push(stuck.clone());
    }
    if let Some(child) = job.child_pipeline {
        parts.push(match &job.child_status {
            Some(status) => format!("-> child pipeline #{child}: {status}"),
            None => format!("-> child pipeline #{child}"),
        });
    }
    if let Some(r) = &job.failure_reason {
        parts.push(format!("{r}: {}", job.message));
    }
    if job.artifacts_expired {
        parts.push("artifacts expired".into());
    }
    if job.log_expired {
        parts.push("log expired".into());
    }
    parts.join("; ")
}

/// `berth ci trigger`.
pub(crate) async fn trigger(
    opts: &ServerOpts,
    dir: &std::path::Path,
    reference: Option<String>,
    dirty: bool,
    vars: &[(String, String)],
    secrets: &[(String, String)],
) -> anyhow::Result<()> {
    let repository = std::path::absolute(dir)
        .with_context(|| format!("{}", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let mut variables: Vec<TriggerVariable> = vars
        .iter()
        .map(|(name, value)| TriggerVariable {
            name: name.clone(),
            value: value.clone(),
            masked: false,
        })
        .collect();
    variables.extend(secrets.iter().map(|(name, value)| TriggerVariable {
        name: name.clone(),
        value: value.clone(),
        masked: true,
    }));
    let body = serde_json::to_value(Trigger {
        repository,
        reference,
        dirty,
        variables,
    })?;
    let view: PipelineView = json(request(opts, "POST", "/ci/v1/pipelines", Some(body)).await?)?;
    print_view(opts, &view)
}

/// `berth ci list [--limit N] [--before ID]`.
pub(crate) async fn list(opts: &ServerOpts, limit: u32, before: Option<u64>) -> anyhow::Result<()> {
    let mut path = format!("/ci/v1/pipelines?limit={limit}");
    if let Some(before) = before {
        path.push_str(&format!("&before={before}"));
    }
    let all: Vec<PipelineSummary> = json(request(opts, "GET", &path, None).await?)?;
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.project.clone(),
                p.ref_name.clone(),
                p.sha.get(..8).unwrap_or(&p.sha).to_string(),
                p.source.clone(),
                p.status.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        crate::table::render(
            &["ID", "PROJECT", "REF", "COMMIT", "SOURCE", "STATUS"],
            &rows
        )
    )?;
    Ok(())
}

/// `berth ci show|cancel|retry`.
pub(crate) async fn pipeline_action(
    opts: &ServerOpts,
    id: u64,
    action: Option<&str>,
) -> anyhow::Result<()> {
    let reply = match action {
        None => request(opts, "GET", &format!("/ci/v1/pipelines/{id}"), None).await?,
        Some(a) => request(opts, "POST", &format!("/ci/v1/pipelines/{id}/{a}"), None).await?,
    };
    let view: PipelineView = json(reply)?;
    print_view(opts, &view)
}

/// `berth ci retry PIPELINE/JOB`: one job runs again.
pub(crate) async fn retry_job(opts: &ServerOpts, id: u64, job: &str) -> anyhow::Result<()> {
    let path = format!("/ci/v1/pipelines/{id}/jobs/{}/retry", encode(job));
    let view: PipelineView = json(request(opts, "POST", &path, None).await?)?;
    print_view(opts, &view)
}

/// `berth ci play`.
pub(crate) async fn play(opts: &ServerOpts, id: u64, job: &str) -> anyhow::Result<()> {
    let path = format!("/ci/v1/pipelines/{id}/jobs/{}/play", encode(job));
    let view: PipelineView = json(request(opts, "POST", &path, None).await?)?;
    print_view(opts, &view)
}

/// `berth ci repo ...`.
pub(crate) async fn repo(command: crate::ci::RepoCommand) -> anyhow::Result<()> {
    use crate::ci::RepoCommand;
    match command {
        RepoCommand::Add {
            url,
            branches,
            poll_interval,
            secret_file,
            server,
        } => {
            let webhook_secret = match secret_file {
                None => None,
                Some(path) => Some(read_secret(&path)?),
            };
            let new = NewRepo {
                url: repository_url(&url)?,
                branches,
                poll_interval_secs: poll_interval,
                webhook_secret,
            };
            let body = serde_json::to_value(&new)?;
            let view: RepoView = json(request(&server, "POST", "/ci/v1/repos", Some(body)).await?)?;
            print_repo(&server, &view)
        }
        RepoCommand::List { server } => {
            let all: Vec<RepoView> = json(request(&server, "GET", "/ci/v1/repos", None).await?)?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&all)?)?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.project.clone(),
                        r.url.clone(),
                        r.branches.join(","),
                        format!("{}s", r.poll_interval_secs),
                        if r.webhook { "yes" } else { "no" }.to_string(),
                        r.last_pipeline.map(|p| format!("#{p}")).unwrap_or_default(),
                        r.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out!(
                "{}",
                crate::table::render(
                    &[
                        "ID",
                        "PROJECT",
                        "REPOSITORY",
                        "BRANCHES",
                        "POLL",
                        "WEBHOOK",
                        "PIPELINE",
                        "ERROR"
                    ],
                    &rows
                )
            )?;
            Ok(())
        }
        RepoCommand::Show { id, server } => {
            let view: RepoView =
                json(request(&server, "GET", &format!("/ci/v1/repos/{id}"), None).await?)?;
            print_repo(&server, &view)
        }
        RepoCommand::Remove { id, server } => {
            let view: RepoView =
                json(request(&server, "DELETE", &format!("/ci/v1/repos/{id}"), None).await?)?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                outln!(
                    "repository #{} ({}) removed; its pipelines stay",
                    view.id,
                    view.url
                )?;
            }
            Ok(())
        }
    }
}

/// A local path made absolute (the CI framework reads it on its machine),
/// or a URL as it is.
fn repository_url(given: &str) -> anyhow::Result<String> {
    let looks_remote = given.contains("://")
        || given
            .split_once(':')
            .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'));
    if looks_remote && !std::path::Path::new(given).exists() {
        return Ok(given.to_string());
    }
    let path = std::path::absolute(given).with_context(|| given.to_string())?;
    Ok(path.to_string_lossy().into_owned())
}

/// The webhook secret from a file (or standard input for `-`), without its
/// line end.
fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    const LIMIT: u64 = 4096;
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(LIMIT + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the secret from standard input")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(LIMIT + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    }
    if bytes.len() as u64 > LIMIT {
        bail!("the secret file {} is over {LIMIT} bytes", path.display());
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("the secret file {} is not UTF-8 text", path.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        bail!("the secret file {} is empty", path.display());
    }
    Ok(secret)
}

fn print_repo(opts: &ServerOpts, view: &RepoView) -> anyhow::Result<()> {
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(view)?)?;
        return Ok(());
    }
    outln!(
        "repository #{}: {} ({}), branches {}, polled every {} s",
        view.id,
        view.project,
        view.url,
        view.branches.join(", "),
        view.poll_interval_secs
    )?;
    if view.webhook {
        outln!(
            "  webhook: POST {}/ci/v1/repos/{}/hook with its secret in X-Berth-Token (or X-Gitlab-Token)",
            opts.server.trim_end_matches('/'),
            view.id
        )?;
    } else {
        outln!("  webhook: none (no secret)")?;
    }
    if let Some(e) = &view.last_error {
        outln!("  error: {e}")?;
    }
    if !view.runs.is_empty() {
        let rows: Vec<Vec<String>> = view
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.branch.clone(),
                    r.sha.get(..8).unwrap_or(&r.sha).to_string(),
                    r.pipeline.map(|p| format!("#{p}")).unwrap_or_default(),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out!(
            "{}",
            crate::table::render(&["BRANCH", "COMMIT", "PIPELINE", "ERROR"], &rows)
        )?;
    }
    Ok(())
}

/// Percent-encodes a job name for a URL path segment.
pub(crate) fn encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Duration, Retention, encode, parse_retention};

    #[test]
    fn log_retention_is_a_duration_or_never() {
        assert_eq!(
            parse_retention("30d"),
            Ok(Retention(Some(Duration::from_secs(30 * 86_400))))
        );
        assert_eq!(
            parse_retention("1h 30m"),
            Ok(Retention(Some(Duration::from_secs(5400))))
        );
        assert_eq!(parse_retention("never"), Ok(Retention(None)));
        assert!(
            parse_retention("0")
                .unwrap_err()
                .contains("at least 1 second")
        );
        assert!(parse_retention("soon").is_err());
        assert!(parse_retention("").is_err());
    }

    #[test]
    fn job_names_are_encoded_for_paths() {
        assert_eq!(encode("build"), "build");
        assert_eq!(encode("unit: [a, b]"), "unit%3A%20%5Ba%2C%20b%5D");
        assert_eq!(encode("test 1/3"), "test%201%2F3");
    }
}
