//! A complete, minimal berth framework: launches N shell tasks that print a
//! greeting, prints every status update, and exits 0 when all finished (1 if
//! any failed, 2 if the framework was removed).
//!
//! ```text
//! cargo run -p berth-sdk --example hello -- --master 127.0.0.1:5050 --tasks 5
//! ```
//!
//! Options: `--master ADDR` (repeatable, or comma-separated), `--tasks N`
//! (default 5), `--resources TEXT` (default `cpus:0.1;mem:32`), `--role ROLE`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use berth_sdk::proto::TaskState;
use berth_sdk::{Event, FrameworkConfig, Strategy, pack_offers, shell_task, subscribe};

struct Args {
    masters: Vec<String>,
    tasks: usize,
    resources: String,
    roles: Vec<String>,
}

const USAGE: &str = "usage: hello [--master ADDR]... [--tasks N] [--resources TEXT] [--role ROLE]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        masters: Vec::new(),
        tasks: 5,
        resources: "cpus:0.1;mem:32".to_owned(),
        roles: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--master" => args
                .masters
                .extend(value()?.split(',').map(str::trim).map(str::to_owned)),
            "--tasks" => {
                let v = value()?;
                args.tasks = v
                    .parse()
                    .map_err(|_| format!("--tasks: {v:?} is not a number"))?;
            }
            "--resources" => args.resources = value()?,
            "--role" => args.roles.push(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.masters.is_empty() {
        args.masters.push("127.0.0.1:5050".to_owned());
    }
    Ok(args)
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
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return Ok(ExitCode::from(64));
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
                    // Offers we held are void; learn what happened meanwhile.
                    println!("re-subscribed; reconciling");
                    framework.reconcile_all().await?;
                    if !pending.is_empty() && suppressed {
                        framework.revive(vec![]).await?;
                        suppressed = false;
                    }
                }
            }
            Event::Offers(offers) => {
                let plan = pack_offers(&offers, std::mem::take(&mut pending), Strategy::FirstFit)?;
                pending = plan.unplaced;
                for (offer_id, tasks) in plan.launches {
                    match framework.accept(vec![offer_id], tasks.clone(), None).await {
                        Ok(ids) => println!("launched {}", ids.join(", ")),
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
                    framework.suppress(vec![]).await?;
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
