//! `berth run`: a small built-in framework that runs one command as a task,
//! streams its output and exits with its exit code.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail};
use berth_proto as pb;
use berth_proto::convert::{resources_from_proto_opt, resources_to_proto};
use berth_scheduler_core::placement::{Explanation, explain};
use berth_scheduler_core::{PortRanges, Resources, Scalar};
use berth_sdk::{Event, FrameworkConfig};
use clap::Args;

use crate::ClientOpts;
use crate::admin::stream_log;

/// Options of `berth run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// CPUs for the task.
    #[arg(long, default_value = "0.1", value_parser = parse_cpus, allow_negative_numbers = true)]
    cpus: Scalar,
    /// Memory for the task, in MiB.
    #[arg(long, default_value = "64", value_parser = parse_mem, allow_negative_numbers = true)]
    mem: Scalar,
    /// Role to run under.
    #[arg(long, default_value = "*")]
    role: String,
    /// Task name (and id prefix).
    #[arg(long, default_value = "run")]
    name: String,
    /// Seconds to wait for an offer that fits before giving up.
    #[arg(long, default_value = "60", value_parser = parse_timeout, allow_negative_numbers = true)]
    timeout: Duration,
    /// Run the command in a container of this Docker image (on an agent
    /// with a Docker daemon). `berth image build` makes a local one.
    #[arg(long)]
    image: Option<String>,
    /// Publish this container port on a host port taken from the offer
    /// (repeatable; needs --image). The host ports are in the task's
    /// status and in `berth task list`.
    #[arg(long = "port", value_parser = clap::value_parser!(u16).range(1..), requires = "image")]
    ports: Vec<u16>,
    /// Docker network mode: bridge, host or none (needs --image).
    #[arg(long, requires = "image", value_parser = ["bridge", "host", "none"])]
    network: Option<String>,
    /// Give the command the environment variable NAME=VALUE, and have the
    /// agent replace VALUE with [MASKED] in its output before it is written
    /// or shown (repeatable; VALUE has at least 8 characters, one line).
    #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = parse_secret)]
    secrets: Vec<(String, String)>,
    #[command(flatten)]
    client: ClientOpts,
    /// The command and its arguments (with --image, optional: the image's
    /// own command runs).
    #[arg(last = true, required_unless_present = "image", num_args = 1..)]
    command: Vec<String>,
}

/// Ends the process with a given exit code (the task's).
#[derive(Debug)]
pub(crate) struct ExitWith(pub(crate) u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

fn parse_cpus(s: &str) -> Result<Scalar, String> {
    parse_scalar("cpus", s)
}

fn parse_mem(s: &str) -> Result<Scalar, String> {
    parse_scalar("mem", s)
}

fn parse_scalar(name: &'static str, s: &str) -> Result<Scalar, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    Scalar::from_f64(name, v).map_err(|e| e.to_string())
}

fn parse_secret(s: &str) -> Result<(String, String), String> {
    let (name, value) = crate::ci::parse_var(s)?;
    berth_proto::mask::check_maskable(&name, &value).map_err(|e| e.to_string())?;
    Ok((name, value))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
        return Err(format!("{s:?} must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.cpus.milli() == 0 && args.mem.milli() == 0 {
        bail!("the task needs some --cpus or --mem");
    }
    let want = Resources {
        cpus: args.cpus,
        mem: args.mem,
        ..Resources::empty()
    };
    let what = match (&args.image, args.command.is_empty()) {
        (Some(image), true) => image.clone(),
        (Some(image), false) => format!("{image}: {}", args.command.join(" ")),
        (None, _) => args.command.join(" "),
    };
    let config = FrameworkConfig::new(format!("berth-run: {what}"))
        .roles([args.role.clone()])
        // Survives a master restart or failover; if `berth run` itself dies,
        // the master kills the task after this long.
        .failover_timeout(Duration::from_secs(60))
        // Acknowledge by hand: the last update must be acknowledged before
        // the framework is torn down.
        .auto_acknowledge(false);
    let (framework, mut events) = berth_sdk::subscribe(args.client.master.clone(), config)
        .await
        .map_err(|e| anyhow!("cannot subscribe: {e}"))?;
    let task_id = format!(
        "{}-{}",
        args.name,
        &framework.id().chars().rev().take(8).collect::<String>()
    );
    let task = pb::TaskInfo {
        task_id: task_id.clone(),
        name: args.name.clone(),
        resources: Some(resources_to_proto(&want)),
        // Without a command (an image's own) but with secrets, a command
        // with neither argv nor shell carries their environment.
        command: (!args.command.is_empty() || !args.secrets.is_empty()).then(|| pb::CommandInfo {
            argv: args.command.clone(),
            env: args.secrets.iter().cloned().collect(),
            ..Default::default()
        }),
        masked_values: args.secrets.iter().map(|(_, v)| v.clone()).collect(),
        container: args.image.as_ref().map(|image| pb::ContainerInfo {
            image: image.clone(),
            network: args.network.clone().unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    };

    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut launched = false;
    let mut streaming: Option<tokio::task::JoinHandle<()>> = None;
    // Ctrl-C or SIGTERM kills the task (and waits for it to end) instead of
    // leaving it to the failover timeout.
    let interrupted = crate::daemons::shutdown_signal();
    tokio::pin!(interrupted);
    let mut killing = false;
    // Why the task waits, as last printed and published.
    let mut waiting: Option<String> = None;
    let outcome = loop {
        let event = if killing {
            match tokio::time::timeout(Duration::from_secs(15), events.next()).await {
                Ok(e) => e,
                Err(_) => break Err(anyhow!("task {task_id} did not end after the kill")),
            }
        } else if launched {
            tokio::select! {
                e = events.next() => e,
                () = &mut interrupted => {
                    killing = true;
                    if let Err(e) = framework.kill(&task_id, None).await {
                        break Err(anyhow!("interrupted; killing task {task_id} failed: {e}"));
                    }
                    continue;
                }
            }
        } else {
            tokio::select! {
                e = tokio::time::timeout_at(deadline, events.next()) => match e {
                    Ok(e) => e,
                    Err(_) => {
                        let why = waiting.as_deref().map_or_else(String::new, |w| format!(" ({w})"));
                        break Err(anyhow!(
                            "no offer with {want} arrived within {:?}{why}",
                            args.timeout
                        ));
                    }
                },
                // Nothing runs yet: stop waiting (the teardown below takes
                // the pending task away).
                () = &mut interrupted => break Err(anyhow!("interrupted while waiting for resources")),
            }
        };
        let Some(event) = event else {
            break Err(anyhow!("the master closed the framework's stream"));
        };
        match event {
            Event::Offers(offers) => {
                let offered = offers.clone();
                let mut unused = Vec::new();
                for offer in offers {
                    let offered = resources_from_proto_opt(offer.resources.as_ref()).ok();
                    let host_ports = offered
                        .as_ref()
                        .filter(|r| r.contains(&want))
                        .and_then(|r| first_ports(&r.ports, args.ports.len()));
                    if let (false, Some(host_ports)) = (launched, host_ports) {
                        let mut t = task.clone();
                        t.agent_id.clone_from(&offer.agent_id);
                        with_ports(&mut t, &want, &args.ports, &host_ports);
                        framework
                            .accept(vec![offer.id.clone()], vec![t], None)
                            .await
                            .map_err(|e| anyhow!("launch refused: {e}"))?;
                        launched = true;
                    } else {
                        unused.push(offer.id);
                    }
                }
                if launched && waiting.take().is_some() {
                    // Not pending any more.
                    if let Err(e) = framework.update_pending(Vec::new()).await {
                        tracing::debug!("clearing the pending task failed: {e}");
                    }
                } else if !launched && !offered.is_empty() {
                    let why = explain_offers(&offered, &want, args.ports.len());
                    let pending = berth_sdk::pending_task(&task, &why);
                    if waiting.as_deref() != Some(pending.reason.as_str()) {
                        // Once per reason, not once per offer.
                        eprintln!("berth: waiting for resources: {}", pending.reason);
                        waiting = Some(pending.reason.clone());
                        if let Err(e) = framework.update_pending(vec![pending]).await {
                            tracing::debug!("publishing the pending task failed: {e}");
                        }
                    }
                }
                if !unused.is_empty() {
                    let _ = framework
                        .decline(unused, Some(Duration::from_secs(3600)))
                        .await;
                }
                if launched {
                    let _ = framework.suppress(Vec::new()).await;
                }
            }
            Event::Update(status) if status.task_id == task_id => {
                if let Err(e) = framework.acknowledge(&status).await {
                    tracing::debug!("acknowledgement failed (the agent resends): {e}");
                }
                let state =
                    pb::TaskState::try_from(status.state).unwrap_or(pb::TaskState::Unspecified);
                if state == pb::TaskState::TaskRunning
                    && !status.ports.is_empty()
                    && args.image.is_some()
                    && status.reason.is_empty()
                {
                    eprintln!(
                        "berth: task {task_id} running; ports {}",
                        crate::admin::ports_text(&status.ports)
                    );
                }
                if streaming.is_none() && state != pb::TaskState::TaskStaging {
                    streaming = Some(tokio::spawn(stream_output(
                        args.client.clone(),
                        framework.id(),
                        task_id.clone(),
                    )));
                }
                if state.is_terminal() {
                    break Ok(status);
                }
            }
            Event::Error(message) => break Err(anyhow!("framework removed: {message}")),
            Event::Update(status) => {
                let _ = framework.acknowledge(&status).await;
            }
            Event::Subscribed { .. }
            | Event::Rescind { .. }
            | Event::Failure { .. }
            | Event::Disconnected => {}
        }
    };
    if let Some(handle) = streaming {
        // Logs end when the task is terminal and its files are read out.
        let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
    }
    if let Err(e) = framework.teardown().await {
        tracing::debug!("teardown: {e}");
    }
    drop(events);
    let status = outcome?;
    let state = pb::TaskState::try_from(status.state).unwrap_or(pb::TaskState::Unspecified);
    let code = match (state, status.exit_code) {
        (pb::TaskState::TaskFinished, _) => 0,
        (pb::TaskState::TaskFailed, Some(code)) => u8::try_from(code.clamp(0, 255)).unwrap_or(1),
        (pb::TaskState::TaskKilled, _) => {
            eprintln!("berth: task {task_id} was killed");
            137
        }
        (state, _) => {
            eprintln!(
                "berth: task {task_id} ended {}: {} {}",
                state.as_str_name(),
                status.reason,
                status.message
            );
            1
        }
    };
    if code == 0 {
        Ok(())
    } else {
        Err(ExitWith(code).into())
    }
}

/// Why none of `offers` takes a task of `want` that needs `ports` host
/// ports of any number: the per-dimension explanation, with the offers
/// that have fewer free ports counted short on ports. An offer with
/// invalid resources counts as empty.
fn explain_offers(offers: &[pb::Offer], want: &Resources, ports: usize) -> Explanation {
    let bins: Vec<Resources> = offers
        .iter()
        .map(|o| resources_from_proto_opt(o.resources.as_ref()).unwrap_or_default())
        .collect();
    let mut why = explain(&bins, want);
    if ports > 0 {
        for bin in &bins {
            if first_ports(&bin.ports, ports).is_none() {
                why.per_dimension.ports += 1;
                if bin.contains(want) {
                    why.fit = why.fit.saturating_sub(1);
                }
            }
        }
    }
    why
}

/// The first `n` ports of `ranges`, or `None` when it has fewer.
fn first_ports(ranges: &PortRanges, n: usize) -> Option<Vec<u16>> {
    let ports: Vec<u16> = ranges
        .ranges()
        .iter()
        .flat_map(|&(b, e)| b..=e)
        .take(n)
        .collect();
    (ports.len() == n).then_some(ports)
}

/// Gives the task the host ports and maps its container ports onto them.
fn with_ports(task: &mut pb::TaskInfo, want: &Resources, container: &[u16], host: &[u16]) {
    if host.is_empty() {
        return;
    }
    let mut res = want.clone();
    res.ports = host.iter().fold(PortRanges::new(), |acc, &p| {
        acc.union(&PortRanges::range(p, p))
    });
    task.resources = Some(resources_to_proto(&res));
    if let Some(c) = task.container.as_mut() {
        c.port_mappings = container
            .iter()
            .zip(host)
            .map(|(&c, &h)| pb::PortMapping {
                container_port: u32::from(c),
                host_port: u32::from(h),
                protocol: String::new(),
            })
            .collect();
    }
}

/// Streams stdout and stderr of the task to ours until both end.
async fn stream_output(client: ClientOpts, framework_id: String, task_id: String) {
    // The agent's address comes from the master's task list.
    let mut address = None;
    for _ in 0..50 {
        if let Ok(tasks) = crate::admin::list_tasks(&client, true, Some(framework_id.clone())).await
            && let Some(t) = tasks.iter().find(|t| t.task_id == task_id)
        {
            address = Some(t.agent_address.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(address) = address else {
        eprintln!("berth: cannot find the task's agent; no output shown");
        return;
    };
    let out = {
        let (address, fw, task) = (address.clone(), framework_id.clone(), task_id.clone());
        tokio::spawn(async move {
            let mut w: Box<dyn Write + Send> = Box::new(std::io::stdout());
            follow(&address, &fw, &task, pb::LogFile::Stdout, &mut w).await;
        })
    };
    let err = tokio::spawn(async move {
        let mut w: Box<dyn Write + Send> = Box::new(std::io::stderr());
        follow(
            &address,
            &framework_id,
            &task_id,
            pb::LogFile::Stderr,
            &mut w,
        )
        .await;
    });
    let _ = out.await;
    let _ = err.await;
}

async fn follow(
    address: &str,
    framework_id: &str,
    task_id: &str,
    file: pb::LogFile,
    w: &mut (dyn Write + Send),
) {
    // The sandbox may not exist for a moment after STARTING; retry briefly.
    for attempt in 0..20 {
        match stream_log(address, framework_id, task_id, file, true, w).await {
            Ok(()) => return,
            Err(e) if attempt == 19 => eprintln!("berth: cannot read the task's {file:?}: {e:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(res: &str) -> pb::Offer {
        pb::Offer {
            resources: Some(resources_to_proto(&res.parse::<Resources>().unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn waiting_reason_counts_offers_short_of_ports() {
        let want: Resources = "cpus:0.1;mem:64".parse().unwrap();
        let offers = [
            offer("cpus:1;mem:32;ports:[31000-31001]"),
            offer("cpus:1;mem:1024;ports:[31000-31000]"),
            offer("cpus:1;mem:1024"),
        ];
        let why = explain_offers(&offers, &want, 0);
        assert_eq!(why.fit, 2);
        assert_eq!(why.per_dimension.mem, 1);
        let why = explain_offers(&offers, &want, 2);
        assert_eq!(why.fit, 0);
        assert_eq!(why.per_dimension.ports, 2);
        assert_eq!(
            why.describe("offer"),
            "no offer fits: 2 short on ports, 1 short on mem"
        );
    }
}
