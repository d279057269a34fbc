//! `berth service ...`: the service framework (`serve`) and its client
//! commands over its Marathon-compatible HTTP API (`logs`, in
//! [`crate::service_logs`], also asks the masters and an agent).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::api_call::definition;
use crate::ci_client::Reply;

/// Where the client commands find the service framework.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServiceOpts {
    /// The service framework's API (`berth service serve`, `berth dev`).
    #[arg(
        long,
        env = "BERTH_SERVICE",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    service: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

/// How a change is made.
#[derive(Debug, Clone, Args)]
pub(crate) struct ChangeOpts {
    /// Cancel the app's running deployment and start this one from what
    /// runs (otherwise a running deployment refuses the change).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    follow: FollowOpts,
}

/// Whether and how long a change's deployment is followed.
#[derive(Debug, Clone, Args)]
pub(crate) struct FollowOpts {
    /// Follow the deployment to its end: exit 0 when it succeeded, 1 when
    /// it failed or rolled back.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Run the service framework and its router.
    Serve(ServeArgs),
    /// Add an app from a file (Marathon's app definition, JSON or YAML).
    Add {
        /// The file (`-` for stdin).
        file: PathBuf,
        #[command(flatten)]
        change: ChangeOpts,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Replace an app's definition with a file's (or add it).
    Update {
        /// The file (`-` for stdin).
        file: PathBuf,
        #[command(flatten)]
        change: ChangeOpts,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Show what an add or update from a file would do, changing nothing.
    Plan {
        /// The file (`-` for stdin).
        file: PathBuf,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// The apps.
    List {
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// One app's definition and state (its whole definition with --json).
    Show {
        /// The app's id (`/shop/web`).
        id: String,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Set an app's instance count.
    Scale {
        /// The app's id.
        id: String,
        /// The instance count.
        instances: u32,
        #[command(flatten)]
        change: ChangeOpts,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Replace every instance of an app (a new version of the same
    /// definition).
    Restart {
        /// The app's id.
        id: String,
        #[command(flatten)]
        change: ChangeOpts,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Go back to one of an app's kept versions (`berth service show ID`
    /// lists them).
    Rollback {
        /// The app's id.
        id: String,
        /// The version (as shown: `2026-12-07T10:41:49.321Z`).
        #[arg(value_name = "VERSION")]
        to: String,
        #[command(flatten)]
        change: ChangeOpts,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Remove an app (its instances are stopped).
    Remove {
        /// The app's id.
        id: String,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Let a canary deployment paused for promotion go on.
    Promote {
        /// The app's id.
        id: String,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// The running deployments (`deployments cancel` cancels one).
    Deployments {
        #[command(subcommand)]
        action: Option<DeploymentsCommand>,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// The instances of one app, or of all.
    Instances {
        /// The app's id.
        id: Option<String>,
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Print an app's instance's output (stdout, or stderr with --stderr),
    /// read from its agent.
    Logs {
        /// The app's id.
        id: String,
        /// The instance (`berth service instances ID`), or a unique prefix
        /// of its id; default: the app's newest running instance.
        #[arg(long)]
        instance: Option<String>,
        /// Keep printing new output until the instance ends.
        #[arg(long, short)]
        follow: bool,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Print only the last N lines (then, with --follow, what comes).
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Master address(es), comma-separated: where the instance's agent
        /// is found.
        #[arg(
            long,
            env = "BERTH_MASTER",
            default_value = "127.0.0.1:5050",
            value_delimiter = ','
        )]
        master: Vec<String>,
        #[command(flatten)]
        opts: ServiceOpts,
    },
}

/// `berth service deployments ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeploymentsCommand {
    /// Cancel a running deployment: a new deployment returns the app to the
    /// exact version it had before (Marathon's DELETE /v2/deployments/ID),
    /// keeping the old version's instances that still run (blue/green's
    /// switch back, a paused canary dropped).
    Cancel {
        /// The deployment's id (`berth service deployments`), or an app's
        /// id (`/shop/web`) for its running deployment.
        id: String,
        /// Stop the deployment where it is, reverting nothing (the app
        /// keeps the new version as its definition).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        follow: FollowOpts,
    },
}

/// Options of `berth service serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    masters: crate::daemons::MasterList,
    /// Where the API is served. Anything but loopback needs --insecure.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The framework's name with the masters.
    #[arg(long, default_value = "service")]
    name: String,
    /// This instance's name among the framework's instances (one is
    /// active, the others wait); default: the host name and process id.
    #[arg(long)]
    instance: Option<String>,
    /// Do not run the router: apps' service ports are not served by this
    /// process (run `berth router`s instead; the route table is published
    /// either way).
    #[arg(long)]
    no_router: bool,
    /// The address service ports are opened on. Anything but loopback
    /// needs --insecure.
    #[arg(long, default_value = "127.0.0.1")]
    router_bind: std::net::IpAddr,
    /// Where the router serves /metrics (Prometheus), /healthz and
    /// /v1/routes.
    #[arg(long, default_value = "127.0.0.1:9090")]
    router_admin: SocketAddr,
    #[command(flatten)]
    exposure: crate::daemons::Exposure,
}

impl ServeArgs {
    /// Its APIs, and whether `--insecure` was given.
    pub(crate) fn apis(&self) -> (Vec<crate::daemons::Api<'_>>, bool) {
        let mut apis = vec![crate::daemons::Api {
            name: "the service API",
            risk: "run any app (any command, on the cluster's agents)",
            listen: self.listen,
            advertise: None,
        }];
        if !self.no_router {
            apis.push(crate::daemons::Api {
                name: "the router's admin endpoint",
                risk: "read the routes and statistics of every app",
                listen: self.router_admin,
                advertise: None,
            });
            apis.push(crate::daemons::Api {
                name: "the router's service ports",
                risk: "reach every app's instances",
                listen: SocketAddr::new(self.router_bind, 0),
                advertise: None,
            });
        }
        (apis, self.exposure.insecure)
    }
}

/// The router's settings of `berth service serve` and `berth dev`.
pub(crate) fn router_config(
    bind: std::net::IpAddr,
    admin: SocketAddr,
) -> berth_router::RouterConfig {
    berth_router::RouterConfig {
        default_bind: bind,
        admin_addr: Some(admin),
        ..berth_router::RouterConfig::default()
    }
}

/// A process's default name among its peers: the host name and process id.
pub(crate) fn instance_name() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

/// Runs the service framework until SIGTERM or Ctrl-C.
pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let holder = args.instance.unwrap_or_else(instance_name);
    let config = berth_service::serve::ServeConfig {
        masters: args.masters.master,
        name: args.name,
        holder,
        listen: local,
        router: (!args.no_router).then(|| router_config(args.router_bind, args.router_admin)),
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "berth service serve is running\n  api: http://{local}   (export BERTH_SERVICE=http://{local})"
        );
        let _ = out.flush();
    }
    berth_service::serve::serve(config, listener, crate::daemons::shutdown_signal()).await?;
    Ok(())
}

async fn call(
    opts: &ServiceOpts,
    method: &str,
    path: &str,
    body: Option<(&str, String)>,
) -> anyhow::Result<Reply> {
    let api = crate::api_call::Framework {
        base: &opts.service,
        flag: "--service",
        what: "the service framework",
    };
    let standby =
        |r: &Reply| r.status == 503 && String::from_utf8_lossy(&r.body).contains("is a standby");
    crate::api_call::call(&api, method, path, body, standby, |_| {
        "is a standby instance".to_owned()
    })
    .await
}

/// The reply's JSON, or Marathon's error message (with its field paths).
fn answer(reply: &Reply) -> anyhow::Result<Value> {
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    if reply.status >= 400 {
        let mut message = v["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&reply.body).into_owned(),
            str::to_owned,
        );
        for d in v["details"].as_array().into_iter().flatten() {
            let errors: Vec<&str> = d["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            message.push_str(&format!(
                "\n  {}: {}",
                d["path"].as_str().unwrap_or("/"),
                errors.join("; ")
            ));
        }
        bail!("{message}");
    }
    Ok(v)
}

/// An app id as a path under `/v2/apps`.
fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_matches('/'))
}

fn force_query(force: bool) -> &'static str {
    if force { "?force=true" } else { "" }
}

/// Runs a client command; its exit code.
pub(crate) async fn run(command: ServiceCommand) -> anyhow::Result<ExitCode> {
    match command {
        ServiceCommand::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
        ServiceCommand::Add { file, change, opts } => {
            let body = definition(&file)?;
            let path = format!("/v2/apps{}", force_query(change.force));
            let v = answer(&call(&opts, "POST", &path, Some(body)).await?)?;
            let dep = v["deployments"][0]["id"].as_str().map(str::to_owned);
            changed(&opts, &change.follow, dep, &v).await
        }
        ServiceCommand::Update { file, change, opts } => {
            let (ct, text) = definition(&file)?;
            let id = berth_service::AppDefinition::from_value(&parse_any(ct, &text)?)
                .map(|d| d.id.to_string())
                .map_err(|e| anyhow::anyhow!("{}", e.to_marathon_json()))?;
            let path = format!(
                "{}?partialUpdate=false{}",
                app_path(&id),
                if change.force { "&force=true" } else { "" }
            );
            let v = answer(&call(&opts, "PUT", &path, Some((ct, text))).await?)?;
            let dep = v["deploymentId"].as_str().map(str::to_owned);
            changed(&opts, &change.follow, dep, &v).await
        }
        ServiceCommand::Plan { file, opts } => {
            let v = answer(&call(&opts, "POST", "/v2/plan", Some(definition(&file)?)).await?)?;
            outln!("{}", serde_json::to_string_pretty(&v)?)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::List { opts } => list(&opts).await.map(|()| ExitCode::SUCCESS),
        ServiceCommand::Show { id, opts } => {
            let v = answer(&call(&opts, "GET", &app_path(&id), None).await?)?;
            let mut versions =
                answer(&call(&opts, "GET", &format!("{}/versions", app_path(&id)), None).await?)?;
            let mut shown = v["app"].clone();
            shown["versions"] = versions["versions"].take();
            if opts.json {
                outln!("{}", serde_json::to_string_pretty(&shown)?)?;
            } else {
                outln!("{}", app_summary(&shown))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Scale {
            id,
            instances,
            change,
            opts,
        } => {
            let path = format!("{}{}", app_path(&id), force_query(change.force));
            let body = serde_json::json!({ "instances": instances });
            change_by(&opts, &change, "PUT", &path, Some(body)).await
        }
        ServiceCommand::Restart { id, change, opts } => {
            let path = format!("{}/restart{}", app_path(&id), force_query(change.force));
            change_by(&opts, &change, "POST", &path, None).await
        }
        ServiceCommand::Rollback {
            id,
            to,
            change,
            opts,
        } => {
            let path = format!("{}{}", app_path(&id), force_query(change.force));
            let body = serde_json::json!({ "version": to });
            change_by(&opts, &change, "PUT", &path, Some(body)).await
        }
        ServiceCommand::Remove { id, opts } => {
            let v = answer(&call(&opts, "DELETE", &app_path(&id), None).await?)?;
            print_change(&opts, v["deploymentId"].as_str(), &v)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Promote { id, opts } => {
            let v =
                answer(&call(&opts, "POST", &format!("{}/promote", app_path(&id)), None).await?)?;
            print_change(&opts, v["deploymentId"].as_str(), &v)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Deployments { action, opts } => match action {
            None => deployments(&opts).await.map(|()| ExitCode::SUCCESS),
            Some(DeploymentsCommand::Cancel { id, force, follow }) => {
                cancel(&opts, &id, force, &follow).await
            }
        },
        ServiceCommand::Instances { id, opts } => instances(&opts, id.as_deref())
            .await
            .map(|()| ExitCode::SUCCESS),
        ServiceCommand::Logs {
            id,
            instance,
            follow,
            stderr,
            tail,
            master,
            opts,
        } => {
            if opts.json {
                bail!("--json does not apply to `berth service logs`: a log is text");
            }
            let args = crate::service_logs::LogsArgs {
                app: id,
                instance,
                follow,
                stderr,
                tail,
                master,
            };
            let opts = &opts;
            let get = |path: String| async move { answer(&call(opts, "GET", &path, None).await?) };
            crate::service_logs::logs(args, get)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
    }
}

fn parse_any(content_type: &str, text: &str) -> anyhow::Result<Value> {
    if content_type == "application/yaml" {
        yaml_serde::from_str(text).context("the file is not YAML")
    } else {
        serde_json::from_str(text).context("the file is not JSON")
    }
}

fn print_change(opts: &ServiceOpts, deployment: Option<&str>, v: &Value) -> anyhow::Result<()> {
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(v)?)?;
    } else {
        match deployment {
            Some(d) => outln!("deployment {d}")?,
            None => outln!("nothing to change")?,
        }
    }
    Ok(())
}

/// Makes a change with one call and follows its deployment.
async fn change_by(
    opts: &ServiceOpts,
    change: &ChangeOpts,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<ExitCode> {
    let body = body.map(|b| ("application/json", b.to_string()));
    let v = answer(&call(opts, method, path, body).await?)?;
    changed(
        opts,
        &change.follow,
        v["deploymentId"].as_str().map(str::to_owned),
        &v,
    )
    .await
}

/// A deployment's `lastFailure` for its progress line: `; last failure:
/// TASK_FAILED on HOST: MESSAGE (TASK)`, or nothing.
fn failure_line(f: &Value) -> String {
    let Some(message) = f["message"].as_str() else {
        return String::new();
    };
    let host = f["host"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    format!(
        "; last failure: {}{host}: {message} ({})",
        f["state"].as_str().unwrap_or("?"),
        f["taskId"].as_str().unwrap_or("?"),
    )
}

/// After a change: its deployment, followed to its end with `--wait`.
async fn changed(
    opts: &ServiceOpts,
    follow: &FollowOpts,
    deployment: Option<String>,
    v: &Value,
) -> anyhow::Result<ExitCode> {
    print_change(opts, deployment.as_deref(), v)?;
    let (Some(id), true) = (deployment, follow.wait) else {
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(follow.timeout);
    let mut last = String::new();
    loop {
        let d = answer(&call(opts, "GET", &format!("/v2/deployments/{id}"), None).await?)?;
        let b = &d["berth"];
        if b["result"] == "running" {
            let line = format!(
                "{} {} step {}: {} old ({} healthy), {} new ({} healthy){}{}",
                b["strategy"].as_str().unwrap_or("?"),
                b["state"].as_str().unwrap_or("?"),
                b["step"].as_str().unwrap_or("?"),
                b["oldInstances"],
                b["oldHealthy"],
                b["newInstances"],
                b["newHealthy"],
                b["why"]
                    .as_str()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default(),
                failure_line(&b["lastFailure"]),
            );
            if line != last {
                eprintln!("{line}");
                last = line;
            }
        } else {
            let state = b["result"]["state"].as_str().unwrap_or("unknown");
            let why = b["result"]["why"]
                .as_str()
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            eprintln!("deployment {id} {state}{why}");
            return Ok(if state == "succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("deployment {id} still running after {} s", follow.timeout);
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Cancels deployment `id` (or app `id`'s running one); with `force` it
/// just stops, otherwise the revert's deployment is printed (and followed).
async fn cancel(
    opts: &ServiceOpts,
    id: &str,
    force: bool,
    follow: &FollowOpts,
) -> anyhow::Result<ExitCode> {
    let deployment = if id.starts_with('/') {
        let app = answer(&call(opts, "GET", &app_path(id), None).await?)?;
        match app["app"]["deployments"][0]["id"].as_str() {
            Some(d) => d.to_owned(),
            None => bail!("app {id} has no running deployment"),
        }
    } else {
        id.to_owned()
    };
    let path = format!("/v2/deployments/{deployment}{}", force_query(force));
    let v = answer(&call(opts, "DELETE", &path, None).await?)?;
    if force {
        if opts.json {
            outln!("{}", serde_json::json!({ "cancelled": deployment }))?;
        } else {
            outln!("deployment {deployment} stopped")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !opts.json {
        eprintln!("deployment {deployment} cancelled; the app goes back to its version before it");
    }
    changed(
        opts,
        follow,
        v["deploymentId"].as_str().map(str::to_owned),
        &v,
    )
    .await
}

/// `berth service show`'s text: one field a line, then the kept versions
/// (newest first).
fn app_summary(app: &Value) -> String {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let run = match app["container"]["docker"]["image"].as_str() {
        Some(image) => format!("image {image}"),
        None => text(&app["cmd"]),
    };
    let deployment = app["deployments"][0]["id"].as_str().unwrap_or("-");
    let versions: Vec<String> = app["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let fields = [
        ("ID", text(&app["id"])),
        ("VERSION", text(&app["version"])),
        ("RUNS", run),
        (
            "INSTANCES",
            format!(
                "{} ({} running, {} healthy)",
                app["instances"], app["tasksRunning"], app["tasksHealthy"]
            ),
        ),
        (
            "RESOURCES",
            format!("cpus {}, mem {} MB", app["cpus"], app["mem"]),
        ),
        ("STRATEGY", text(&app["deployment"]["strategy"])),
        ("DEPLOYMENT", deployment.to_owned()),
        ("VERSIONS", versions.join("\n            ")),
    ];
    fields
        .iter()
        .map(|(k, v)| format!("{k:<12}{v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn list(opts: &ServiceOpts) -> anyhow::Result<()> {
    let v = answer(&call(opts, "GET", "/v2/apps", None).await?)?;
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                a["id"].as_str().unwrap_or("").to_owned(),
                format!("{}/{}", a["tasksRunning"], a["instances"]),
                a["tasksHealthy"].to_string(),
                a["version"].as_str().unwrap_or("").to_owned(),
                a["deployments"][0]["id"].as_str().unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    outln!(
        "{}",
        crate::table::render(
            &["APP", "RUNNING", "HEALTHY", "VERSION", "DEPLOYMENT"],
            &rows
        )
    )?;
    Ok(())
}

async fn deployments(opts: &ServiceOpts) -> anyhow::Result<()> {
    let v = answer(&call(opts, "GET", "/v2/deployments", None).await?)?;
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let b = &d["berth"];
            vec![
                d["id"].as_str().unwrap_or("").to_owned(),
                d["affectedApps"][0].as_str().unwrap_or("").to_owned(),
                b["strategy"].as_str().unwrap_or("").to_owned(),
                b["step"].as_str().unwrap_or("").to_owned(),
                format!("{}/{}", b["oldHealthy"], b["oldInstances"]),
                format!("{}/{}", b["newHealthy"], b["newInstances"]),
                b["state"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    outln!(
        "{}",
        crate::table::render(
            &[
                "DEPLOYMENT",
                "APP",
                "STRATEGY",
                "STEP",
                "OLD",
                "NEW",
                "STATE"
            ],
            &rows
        )
    )?;
    Ok(())
}

async fn instances(opts: &ServiceOpts, id: Option<&str>) -> anyhow::Result<()> {
    let path = id.map_or_else(
        || "/v2/tasks".to_owned(),
        |id| format!("{}/tasks", app_path(id)),
    );
    let v = answer(&call(opts, "GET", &path, None).await?)?;
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let ports: Vec<String> = t["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect();
            let healthy = match t["healthCheckResults"].as_array() {
                Some(r) if !r.is_empty() => r[0]["alive"].to_string(),
                _ => "-".to_owned(),
            };
            vec![
                t["id"].as_str().unwrap_or("").to_owned(),
                t["appId"].as_str().unwrap_or("").to_owned(),
                t["host"].as_str().unwrap_or("").to_owned(),
                ports.join(","),
                t["state"].as_str().unwrap_or("").to_owned(),
                healthy,
                t["version"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    outln!(
        "{}",
        crate::table::render(
            &[
                "INSTANCE", "APP", "HOST", "PORTS", "STATE", "HEALTHY", "VERSION"
            ],
            &rows
        )
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_progress_line_names_the_last_failure() {
        let f = json!({"appId": "/web", "host": "node-1", "message": "exited with status 1",
                       "state": "TASK_FAILED", "taskId": "web.i1.2"});
        assert_eq!(
            super::failure_line(&f),
            "; last failure: TASK_FAILED on node-1: exited with status 1 (web.i1.2)"
        );
        assert_eq!(super::failure_line(&serde_json::Value::Null), "");
    }
}
