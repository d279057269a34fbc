//! `berth`: the daemons (`master`, `agent`, `dev`) and the admin commands.

mod admin;
mod ci;
mod ci_client;
mod ci_logs;
mod ci_progress;
mod ci_run;
mod client;
mod daemons;
mod members;
mod run;
mod table;
mod task_log;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// berth — a two-level cluster scheduler in the style of Apache Mesos.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    Dev(daemons::DevArgs),
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
    /// The whole cluster state (JSON).
    State {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// CI pipelines (.gitlab-ci.yml).
    Ci {
        #[command(subcommand)]
        command: ci::CiCommand,
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
    /// List agents.
    List,
    /// Stop offers on an agent (running tasks stay).
    Drain {
        /// Agent id.
        id: String,
    },
    /// Resume offers on a drained agent.
    Reactivate {
        /// Agent id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum FrameworkCommand {
    /// List frameworks.
    List,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// List tasks.
    List {
        /// Include recently completed tasks.
        #[arg(long, short)]
        all: bool,
        /// Only this framework's tasks.
        #[arg(long)]
        framework: Option<String>,
    },
    /// Tasks frameworks wait to place, and why (as the frameworks
    /// published them; kept by the leading master only).
    Pending {
        /// Only this framework's pending tasks.
        #[arg(long)]
        framework: Option<String>,
    },
    /// Print a task's output.
    Log {
        /// Task id.
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

/// A path flag's default under the current directory.
pub(crate) fn berth_dir() -> PathBuf {
    PathBuf::from(".berth")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
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
        Command::Dev(args) => daemons::dev(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Node { command, client } => match command {
            NodeCommand::List => admin::node_list(&client).await,
            NodeCommand::Drain { id } => admin::node_drain(&client, &id, true).await,
            NodeCommand::Reactivate { id } => admin::node_drain(&client, &id, false).await,
        },
        Command::Framework { command, client } => match command {
            FrameworkCommand::List => admin::framework_list(&client).await,
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
        // Run by `main` before the runtime starts.
        Command::TaskSupervisor => anyhow::bail!("the task supervisor does not run in a runtime"),
    }
    .map(|()| ExitCode::SUCCESS)
    .or_else(|e| match e.downcast::<run::ExitWith>() {
        Ok(exit) => Ok(ExitCode::from(exit.0)),
        Err(e) => Err(e),
    })
}
