//! A complete, minimal berth framework: launches N shell tasks that print a
//! greeting, prints every status update, and exits 0 when all finished (1 if
//! any failed, 2 if the framework was removed).
//!
//! ```text
//! cargo run -p berth-sdk --example hello -- --master 127.0.0.1:5050 --tasks 5
//! ```
//!
//! Options: `--master ADDR` (repeatable, or comma-separated), `--tasks N`
//! (default 5), `--resources TEXT` (default `cpus:0.1;mem:32`), `--role ROLE`
//! (repeatable); `--help` lists them. Bad arguments exit with 64.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use berth_sdk::proto::TaskState;
use berth_sdk::{Event, FrameworkConfig, Strategy, pack_offers, shell_task, subscribe};

/// Launches N shell tasks on a berth cluster and waits for them to end.
#[derive(Debug, clap::Parser)]
#[command(name = "hello")]
struct Args {
    /// Address of a master (repeatable, or comma-separated).
    #[arg(
        long = "master",
        value_name = "ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:5050"
    )]
    masters: Vec<String>,
    /// How many tasks to launch.
    #[arg(long, default_value_t = 5)]
    tasks: usize,
    /// The resources of each task.
    #[arg(long, value_name = "TEXT", default_value = "cpus:0.1;mem:32")]
    resources: String,
    /// A role to subscribe to (repeatable; none means the default role).
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match <Args as clap::Parser>::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // `--help` and `--version` are not errors; bad arguments exit
            // with EX_USAGE.
            let code = if e.use_stderr() { 64 } else { 0 };
            e.print()?;
            return Ok(ExitCode::from(code));
        }
    };

    let mut pending = (0..args.tasks)
        .map(|i| {
            shell_task(
                format!("hello-{i}"),
                format!("hello {i}"),
                "echo hello from $BERTH_TASK_ID",
                &args.resources,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let config = FrameworkConfig::new("hello")
        .roles(args.roles.clone())
        .failover_timeout(Duration::from_secs(60));
    let (framework, mut events) = subscribe(args.masters.clone(), config).await?;
    println!("subscribed as framework {}", framework.id());

    // Terminal state of each task, to count each once despite duplicates.
    let mut finished: HashMap<String, TaskState> = HashMap::new();
    let mut suppressed = false;
    while finished.len() < args.tasks {
        let Some(event) = events.next().await else {
            eprintln!("event stream ended");
            return Ok(ExitCode::from(2));
        };
        match event {
            Event::Subscribed { resubscribed, .. } => {
                if resubscribed {
                    // Offers we held are void. What happened to our tasks
                    // meanwhile arrives as updates: the SDK reconciles them.
                    println!("re-subscribed");
                    if !pending.is_empty() && suppressed {
                        framework.revive(berth_sdk::Roles::All).await?;
                        suppressed = false;
                    }
                }
            }
            Event::Offers(offers) => {
                let plan = pack_offers(&offers, std::mem::take(&mut pending), Strategy::FirstFit)?;
                pending = plan.unplaced;
                for (offer_id, tasks) in plan.launches {
                    match framework.accept(vec![offer_id], tasks.clone(), None).await {
                        Ok(ids) => {
                            let ids: Vec<String> = ids.into_iter().map(String::from).collect();
                            println!("launched {}", ids.join(", "));
                        }
                        Err(e) => {
                            eprintln!("accept failed, will retry: {e}");
                            pending.extend(tasks);
                        }
                    }
                }
                if !plan.unused.is_empty()
                    && let Err(e) = framework
                        .decline(plan.unused, Some(Duration::from_secs(5)))
                        .await
                {
                    eprintln!("decline failed: {e}");
                }
                if pending.is_empty() && !suppressed {
                    framework.suppress(berth_sdk::Roles::All).await?;
                    suppressed = true;
                }
            }
            Event::Update(status) => {
                let state = status.state();
                println!(
                    "{}: {} {}",
                    status.task_id,
                    state.as_str_name(),
                    status.message
                );
                if state.is_terminal() {
                    finished.entry(status.task_id.clone()).or_insert(state);
                }
            }
            Event::Rescind { offer_id } => println!("offer {offer_id} rescinded"),
            Event::Failure { agent_id } => println!("agent {agent_id} removed"),
            Event::Disconnected => eprintln!("disconnected from the master; re-subscribing"),
            Event::Error(why) => {
                eprintln!("framework removed: {why}");
                return Ok(ExitCode::from(2));
            }
        }
    }

    let failed: Vec<_> = finished
        .iter()
        .filter(|(_, s)| **s != TaskState::TaskFinished)
        .collect();
    if let Err(e) = framework.teardown().await {
        eprintln!("teardown failed: {e}");
    }
    if failed.is_empty() {
        println!("all {} tasks finished", args.tasks);
        Ok(ExitCode::SUCCESS)
    } else {
        for (id, state) in &failed {
            eprintln!("{id}: {}", state.as_str_name());
        }
        Ok(ExitCode::FAILURE)
    }
}
