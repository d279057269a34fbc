//! `berth`: the daemons (`master`, `agent`, `dev`) and the admin commands.
//!
//! `hoist` moves `--master` and `--json` given before the subcommand to
//! after it, where the subcommand's own flag takes them or clap refuses
//! them. Log colours only on a terminal (and not with `NO_COLOR`).
//! `berth task-supervisor` is hidden: it is what the agent starts as the
//! parent of a process task (`berth_agent::supervisor::run_program`).

#[macro_use]
mod out;

mod admin;
mod api_call;
mod ci;
mod ci_client;
mod ci_logs;
mod ci_progress;
mod ci_repo;
mod ci_reports;
mod ci_run;
mod client;
mod daemons;
mod job;
mod jobs_serve;
mod members;
mod router;
mod run;
mod service;
mod service_logs;
mod table;
mod task_log;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// berth — a two-level cluster scheduler in the style of Apache Mesos.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
struct Cli {
    /// Master address(es) for the admin commands (host:port,
    /// comma-separated): the subcommand's --master, given before it.
    #[arg(long, value_delimiter = ',', value_name = "ADDRS")]
    #[allow(dead_code, reason = "moved after the subcommand by `hoist`")]
    master: Vec<String>,
    /// Print JSON instead of tables (admin commands): the subcommand's
    /// --json, given before it.
    #[arg(long)]
    #[allow(dead_code, reason = "moved after the subcommand by `hoist`")]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Moves `--master ADDRS` and `--json` given before the subcommand to
/// right after it (`berth --master A node list` is `berth node list
/// --master A`), so that each subcommand's own flag takes them: one that
/// has no such flag refuses it as clap refuses any unknown flag, instead
/// of ignoring it.
fn hoist(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory as _;
    let mut moved = Vec::new();
    let mut i = 1;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        if arg == "--json" || arg.starts_with("--master=") {
            moved.push(i);
            i += 1;
        } else if arg == "--master" && i + 1 < args.len() {
            moved.extend([i, i + 1]);
            i += 2;
        } else {
            break;
        }
    }
    // The subcommand path: the names that follow, each a subcommand of the
    // one before.
    let mut command = Cli::command();
    let mut end = i;
    while let Some(name) = args.get(end).and_then(|a| a.to_str()) {
        let Some(sub) = command.find_subcommand(name).cloned() else {
            break;
        };
        command = sub;
        end += 1;
    }
    if moved.is_empty() || end == i {
        // Nothing to move, or no subcommand: clap says what is wrong.
        return args;
    }
    let mut out: Vec<std::ffi::OsString> = args[..1].to_vec();
    out.extend(args[i..end].iter().cloned());
    out.extend(moved.iter().map(|&m| args[m].clone()));
    out.extend(args[end..].iter().cloned());
    out
}

/// Where the admin commands find the cluster, and how they print.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientOpts {
    /// Master address(es), comma-separated (host:port).
    #[arg(
        long,
        env = "BERTH_MASTER",
        default_value = "127.0.0.1:5050",
        value_delimiter = ',',
        global = true
    )]
    master: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master (with no subcommand), or manage the masters' Raft group.
    #[command(args_conflicts_with_subcommands = true)]
    Master {
        #[command(subcommand)]
        command: Option<MasterCommand>,
        #[command(flatten)]
        args: daemons::MasterArgs,
    },
    /// Run an agent.
    Agent(daemons::AgentArgs),
    /// Run a master and an agent in one process, data under ./.berth.
    Dev(Box<daemons::DevArgs>),
    /// Run a one-off command as a task, stream its output, exit with its code.
    #[command(after_help = run::EXIT_CODES_HELP)]
    Run(run::RunArgs),
    /// Agents.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Frameworks.
    Framework {
        #[command(subcommand)]
        command: FrameworkCommand,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Tasks.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Roles, weights and quotas.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// A summary of the cluster (leader, counts); with --json the whole
    /// state: agents, frameworks, tasks and roles.
    State {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// CI pipelines (.gitlab-ci.yml).
    Ci {
        #[command(subcommand)]
        command: ci::CiCommand,
    },
    /// Run a standalone router: serves the apps' service ports from the
    /// service framework's published routes, through its failovers.
    Router(router::RouterArgs),
    /// Long-running services (Marathon-compatible apps and deployments).
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Batch and cron jobs (the job framework's Metronome-compatible API).
    Job {
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// The batch and cron job framework's daemon (its client is `berth
    /// job`).
    Jobs {
        #[command(subcommand)]
        command: jobs_serve::JobsCommand,
    },
    /// A process task's supervisor (started by the agent, not by hand):
    /// runs the task described on stdin, masks its output, records its exit
    /// status in the sandbox (the working directory).
    #[command(hide = true)]
    TaskSupervisor,
}

#[derive(Debug, Subcommand)]
enum MasterCommand {
    /// List the masters of the Raft group, their roles and log indexes.
    Members {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Add a master to the group (start it first with `--id ID --join`): it
    /// catches up as a non-voting learner, then becomes a voter.
    Add {
        /// Its Raft id (as given to its --id).
        id: u64,
        /// Its API address (host:port).
        address: String,
        /// Add it even if no master answers at ADDRESS, or it runs with
        /// another id, or it already belongs to a group.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove a master from the group.
    Remove {
        /// Its Raft id.
        id: u64,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// List agents: address, state, tasks, used and total resources.
    List,
    /// Stop offers on an agent (running tasks stay).
    Drain {
        /// Agent id, or a unique prefix of it.
        id: String,
    },
    /// Resume offers on a drained agent.
    Reactivate {
        /// Agent id, or a unique prefix of it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum FrameworkCommand {
    /// List frameworks: connected, or disconnected within their failover
    /// timeout.
    List,
    /// Remove a framework as its own teardown does: its tasks are killed
    /// and it is forgotten (it cannot subscribe again with its id).
    Teardown {
        /// Framework id, or a unique prefix of it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// List active tasks: state, exit code, when they started running and
    /// for how long, resources and host ports.
    List {
        /// Include recently completed tasks.
        #[arg(long, short)]
        all: bool,
        /// Only this framework's tasks (its id, or a unique prefix of it).
        #[arg(long)]
        framework: Option<String>,
    },
    /// Tasks frameworks wait to place, and why (as the frameworks
    /// published them; kept by the leading master only). Draining agents,
    /// whose free resources are offered to no one, are named under the
    /// table.
    Pending {
        /// Only this framework's pending tasks (its id, or a unique prefix
        /// of it).
        #[arg(long)]
        framework: Option<String>,
    },
    /// Print a task's output (stdout, or stderr with --stderr).
    Log {
        /// Task id, or a unique prefix of it.
        id: String,
        /// Keep printing new output until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RoleCommand {
    /// List roles with weights, quotas and allocations.
    List,
    /// Set a role's weight.
    Weight {
        /// Role.
        role: String,
        /// Weight (> 0).
        weight: f64,
    },
    /// Set a role's quota (Mesos resource text, e.g. "cpus:4;mem:4096").
    Quota {
        /// Role.
        role: String,
        /// Guaranteed resources.
        guarantee: String,
        /// Limit (defaults to none).
        #[arg(long)]
        limit: Option<String>,
    },
}

/// The APIs a daemon command serves, and whether `--insecure` was given;
/// `None` for the other commands.
fn daemon_apis(command: &Command) -> Option<(Vec<daemons::Api<'_>>, bool)> {
    match command {
        Command::Master {
            command: None,
            args,
        } => Some(args.apis()),
        Command::Agent(args) => Some(args.apis()),
        Command::Dev(args) => Some(args.apis()),
        Command::Ci {
            command: ci::CiCommand::Serve(args),
        } => Some(args.apis()),
        Command::Ci {
            command: ci::CiCommand::Run(args),
        } => Some(args.apis()),
        Command::Service {
            command: service::ServiceCommand::Serve(args),
        } => Some(args.apis()),
        Command::Router(args) => Some(args.apis()),
        Command::Jobs {
            command: jobs_serve::JobsCommand::Serve(args),
        } => Some(args.apis()),
        _ => None,
    }
}

/// A path flag's default under the current directory.
pub(crate) fn berth_dir() -> PathBuf {
    PathBuf::from(".berth")
}

fn main() -> ExitCode {
    use std::io::IsTerminal as _;
    let cli = Cli::parse_from(hoist(std::env::args_os().collect()));
    if let Some((apis, insecure)) = daemon_apis(&cli.command) {
        if let Err(message) = daemons::check_exposure(&apis, insecure) {
            eprintln!("berth: {message}");
            return ExitCode::from(2);
        }
        if insecure {
            for warning in daemons::insecure_warnings(&apis) {
                eprintln!("{warning}");
            }
        }
    }
    // Colours only for a person at a terminal (and not with NO_COLOR): a
    // log file or a pipe gets plain text.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(match cli.command {
                    Command::Master { command: None, .. } | Command::Agent(_) | Command::Dev(_) => {
                        "info"
                    }
                    // The embedded cluster's routine messages would drown
                    // the progress lines.
                    Command::Ci {
                        command: ci::CiCommand::Serve(_),
                    } => "info",
                    Command::Ci { .. } => "error",
                    Command::Service {
                        command: service::ServiceCommand::Serve(_),
                    }
                    | Command::Router(_)
                    | Command::Jobs { .. } => "info",
                    _ => "warn",
                })
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::TaskSupervisor = cli.command {
        // One per process task, all the task's life: no async runtime and
        // its threads, only the blocking work of waiting and masking.
        let code = berth_agent::supervisor::run_program();
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        // `berth ... | head`: the reader has what it wanted.
        Err(e) if out::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Master {
            command: None,
            args,
        } => daemons::master(args).await,
        Command::Master {
            command: Some(command),
            ..
        } => match command {
            MasterCommand::Members { client } => members::members(&client).await,
            MasterCommand::Add {
                id,
                address,
                force,
                client,
            } => members::add_member(&client, id, &address, force).await,
            MasterCommand::Remove { id, client } => members::remove_member(&client, id).await,
        },
        Command::Agent(args) => daemons::agent(args).await,
        Command::Dev(args) => daemons::dev(*args).await,
        Command::Run(args) => run::run(args).await,
        Command::Node { command, client } => match command {
            NodeCommand::List => admin::node_list(&client).await,
            NodeCommand::Drain { id } => admin::node_drain(&client, &id, true).await,
            NodeCommand::Reactivate { id } => admin::node_drain(&client, &id, false).await,
        },
        Command::Framework { command, client } => match command {
            FrameworkCommand::List => admin::framework_list(&client).await,
            FrameworkCommand::Teardown { id } => admin::framework_teardown(&client, &id).await,
        },
        Command::Task { command, client } => match command {
            TaskCommand::List { all, framework } => admin::task_list(&client, all, framework).await,
            TaskCommand::Pending { framework } => admin::task_pending(&client, framework).await,
            TaskCommand::Log { id, follow, stderr } => {
                admin::task_log(&client, &id, follow, stderr).await
            }
        },
        Command::Role { command, client } => match command {
            RoleCommand::List => admin::role_list(&client).await,
            RoleCommand::Weight { role, weight } => {
                admin::role_weight(&client, &role, weight).await
            }
            RoleCommand::Quota {
                role,
                guarantee,
                limit,
            } => admin::role_quota(&client, &role, &guarantee, limit.as_deref()).await,
        },
        Command::State { client } => admin::state(&client).await,
        Command::Ci { command } => return Ok(ci::run(command).await),
        Command::Service { command } => return service::run(command).await,
        Command::Router(args) => return router::router(args).await,
        Command::Jobs { command } => jobs_serve::run(command).await,
        Command::Job { command } => return Ok(job::run(command).await),
        // Run by `main` before the runtime starts.
        Command::TaskSupervisor => anyhow::bail!("the task supervisor does not run in a runtime"),
    }
    .map(|()| ExitCode::SUCCESS)
    .or_else(|e| match e.downcast::<run::ExitWith>() {
        Ok(exit) => Ok(ExitCode::from(exit.0)),
        Err(e) => Err(e),
    })
}

#[cfg(test)]
mod tests {
    use super::hoist;

    fn hoisted(argv: &[&str]) -> Vec<String> {
        hoist(argv.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn flags_before_the_subcommand_move_after_it() {
        assert_eq!(
            hoisted(&["berth", "--master", "a:1", "node", "list"]),
            ["berth", "node", "list", "--master", "a:1"]
        );
        assert_eq!(
            hoisted(&[
                "berth",
                "--json",
                "--master=a:1,b:2",
                "task",
                "log",
                "t1",
                "-f"
            ]),
            [
                "berth",
                "task",
                "log",
                "--json",
                "--master=a:1,b:2",
                "t1",
                "-f"
            ]
        );
        // Before the `--` of `berth run`, never inside the command.
        assert_eq!(
            hoisted(&["berth", "--master", "a:1", "run", "--", "echo", "--json"]),
            ["berth", "run", "--master", "a:1", "--", "echo", "--json"]
        );
        assert_eq!(
            hoisted(&["berth", "--json", "ci", "run", "."]),
            ["berth", "ci", "run", "--json", "."]
        );
        // Unchanged: nothing to move, nothing after, no subcommand.
        for argv in [
            &["berth", "node", "list", "--json"][..],
            &["berth", "--json"],
            &["berth", "--master"],
            &["berth", "--json", "nope"],
            &["berth", "-h", "--json", "node"],
        ] {
            assert_eq!(hoisted(argv), argv, "{argv:?}");
        }
    }
}
