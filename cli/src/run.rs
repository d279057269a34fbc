//! `berth run`: a small built-in framework that runs one command as a task,
//! streams its output and exits with its exit code.
//!
//! It follows the task through master failovers and agent restarts, and
//! tears its framework down on every way out, retrying the teardown across
//! a leader change. While nothing fits, it publishes its task as pending
//! and says why, once per reason.
//!
//! The launch is a small state machine, `Launch`: `NotLaunched`, `Unknown`
//! (an accept whose answer was lost: reconciled before anything else, and
//! launched again only on TASK_UNKNOWN, under the same task id, which the
//! registry refuses if it has the task) and `Launched`. It asks for every
//! reconciliation itself and counts them, so that a late TASK_UNKNOWN
//! about an earlier launch is not taken for the current one. Its own exit
//! codes are in `exit` (`BERTH`, `INTERRUPTED`, `KILLED`), listed by
//! `--help`.

use std::io::Write;
use std::time::Duration;

use berth_proto as pb;
use berth_proto::convert::{resources_from_proto_opt, resources_to_proto};
use berth_scheduler_core::placement::{Explanation, explain};
use berth_scheduler_core::{PortRanges, Resources, Scalar};
use berth_sdk::{
    ErrorKind, Event, Events, Framework, FrameworkConfig, OfferId, Roles, SdkError, TaskId,
};
use clap::Args;

use crate::ClientOpts;
use crate::task_log::stream_log;

/// Options of `berth run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// CPUs for the task (more than 0).
    #[arg(long, default_value = "0.1", value_parser = parse_cpus, allow_negative_numbers = true)]
    cpus: Scalar,
    /// Memory for the task, in MiB (more than 0; it is also the
    /// container's memory limit).
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
    /// with a Docker daemon; a local image needs no registry, see
    /// scripts/build-test-image.sh).
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

/// A positive amount of a resource: a task without cpus or memory would
/// run without limits (a container with no memory limit at all).
fn parse_scalar(name: &'static str, s: &str) -> Result<Scalar, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{} is not a number", berth_proto::quoted(s)))?;
    let scalar = Scalar::from_f64(name, v).map_err(|e| e.to_string())?;
    if scalar.milli() == 0 {
        return Err(format!("{name} must be more than 0"));
    }
    Ok(scalar)
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

/// The exit codes, as `berth run --help` lists them.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes (as docker run's):
  0..255  the task's own exit code: 0 when it finished, its code when it failed;
          127 when the command is not found, 126 when it cannot be executed;
          128+N when it was killed by signal N (143: killed with SIGTERM,
          e.g. after Ctrl-C; 137 when no code is known, or out of memory)
  125     berth could not run the task or lost it: no master could be reached
          (within 5 s, with the reason), the launch was refused, no offer fit
          within --timeout, the task was lost, or it failed before its command
          ran (fetch, container start)
  130     interrupted (Ctrl-C, SIGTERM) before the task was launched
  2       bad arguments
berth run follows the task through master failovers and agent restarts; a task
on an agent that is cut off is waited for, not given up.";

/// `berth run`'s own exit codes. Otherwise it exits with the task's exit
/// code, as `docker run` does (whose 125/126/127 these follow): a command
/// that is not found is the task's 127 and one that cannot be executed its
/// 126, as the agent reports them.
pub(crate) mod exit {
    /// berth could not run the task or lost track of it: the cluster cannot
    /// be reached, the launch was refused, no offer fit in time, the task
    /// was lost or failed before its command ran (its fetch failed, its
    /// container could not start).
    pub(crate) const BERTH: u8 = 125;
    /// Interrupted (Ctrl-C, SIGTERM) before the task was launched: 128 +
    /// SIGINT, as shells report it.
    pub(crate) const INTERRUPTED: u8 = 130;
    /// The task was killed and its agent reported no exit code (128 +
    /// SIGKILL).
    pub(crate) const KILLED: u8 = 137;
}

/// How long `berth run` looks for a leading master before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the subscription may take once a master led: long enough to
/// ride out a leader that froze or was cut off just after it answered.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a launch whose outcome is unknown may stay so (waiting for the
/// reconciliation that tells whether the cluster has the task).
const UNKNOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the task has to end after `berth run` killed it.
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
/// Launches refused outright (not merely of unknown outcome) before
/// `berth run` gives up: offers made by a master that lost its leadership
/// are refused by the next one, so one refusal is not final.
const MAX_REFUSALS: u32 = 3;
/// How long the teardown at the end is retried (across a leader change).
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the task's output may take to be read to its end after the
/// task ended.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// How `berth run` ended, before it becomes an exit code.
#[derive(Debug)]
enum Outcome {
    /// The task ended with this status.
    Ended(pb::TaskStatus),
    /// berth could not run the task, or lost it (exit 125).
    Failed(String),
    /// Interrupted before the task was launched.
    Interrupted,
}

/// Where the launch stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Launch {
    /// No launch made, or the last one is known not to have happened.
    NotLaunched,
    /// A launch was sent but its answer was lost (the master died, froze or
    /// stepped down, or the call timed out): it may or may not have been
    /// committed. Reconciliation tells; until then nothing is launched
    /// again. The same task id is used for every attempt, so the registry
    /// would refuse a second launch of a task it has anyway.
    Unknown { since: tokio::time::Instant },
    /// The cluster has the task.
    Launched,
}

/// One `berth run`.
struct Run<'a> {
    args: &'a RunArgs,
    framework: &'a Framework,
    task: pb::TaskInfo,
    /// The task's id, typed for the SDK's calls.
    id: TaskId,
    want: Resources,
    deadline: tokio::time::Instant,
    launch: Launch,
    refusals: u32,
    /// Offers are suppressed (once launched).
    suppressed: bool,
    /// Why the task waits, as last printed and published.
    waiting: Option<String>,
    /// When the kill was sent (Ctrl-C), and whether it must be sent again
    /// once subscribed (the call failed).
    killing: Option<tokio::time::Instant>,
    kill_again: bool,
    /// The agent is unreachable (said once).
    unreachable: bool,
    /// Answers still to come (on this stream) to the reconciliations
    /// `berth run` asked for; it asks for every one itself, so it can count
    /// them.
    answers_due: u32,
    /// How many of those were asked before the current launch: their
    /// answers may say TASK_UNKNOWN of a task launched since, and are not
    /// about it.
    stale_answers: u32,
    output: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.client.json {
        eprintln!("berth: berth run prints the task's own output; it has no --json");
        return Err(ExitWith(2).into());
    }
    let want = Resources {
        cpus: args.cpus,
        mem: args.mem,
        ..Resources::empty()
    };
    // The master's rule, checked before anything is sent (a container
    // needs at least what Docker accepts).
    if let Err(e) =
        berth_proto::minimums::check_task_minimums(&args.name, &want, args.image.is_some())
    {
        eprintln!("berth: {e}");
        return Err(ExitWith(2).into());
    }
    let what = match (&args.image, args.command.is_empty()) {
        (Some(image), true) => image.clone(),
        (Some(image), false) => format!("{image}: {}", args.command.join(" ")),
        (None, _) => args.command.join(" "),
    };
    // A name for display: a long command is cut (frameworks' names are
    // at most 1024 bytes).
    let what: String = what.chars().take(200).collect();
    let config = FrameworkConfig::new(format!("berth-run: {what}"))
        .roles([args.role.clone()])
        // Survives a master restart or failover; if `berth run` itself dies,
        // the master kills the task after this long.
        .failover_timeout(Duration::from_secs(60))
        // Acknowledge by hand: the last update must be acknowledged before
        // the framework is torn down.
        .auto_acknowledge(false)
        // A task on an agent that is cut off is UNREACHABLE, not LOST: it
        // may come back, and `berth run` waits for it.
        .partition_aware(true)
        // It reconciles by itself after a re-subscription, to count the
        // answers (see `Run::answers_due`).
        .reconcile_on_resubscribe(false)
        .connect_timeout(SUBSCRIBE_TIMEOUT);
    // A cluster that is down (no master answers, or none leads) is said
    // within CONNECT_TIMEOUT, with the reason; one that is electing a
    // leader, or whose leader froze a moment ago, is waited for.
    if let Err(e) = crate::client::masters(&args.client)?
        .find_leader(tokio::time::Instant::now() + CONNECT_TIMEOUT)
        .await
    {
        eprintln!("berth: cannot run the task: {e}");
        return Err(ExitWith(exit::BERTH).into());
    }
    let (framework, mut events) =
        match berth_sdk::subscribe(args.client.master.clone(), config).await {
            Ok(subscribed) => subscribed,
            Err(e) => {
                eprintln!("berth: cannot run the task: {e}");
                return Err(ExitWith(exit::BERTH).into());
            }
        };
    let task_id = format!(
        "{}-{}",
        args.name,
        &framework.id().chars().rev().take(8).collect::<String>()
    );
    // `--name` was checked to make a valid id; the suffix is the
    // framework id's, valid too.
    let id = match TaskId::new(task_id.as_str()) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("berth: cannot run the task: {e}");
            return Err(ExitWith(exit::BERTH).into());
        }
    };
    let task = pb::TaskInfo {
        task_id,
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
    let mut run = Run {
        args: &args,
        framework: &framework,
        task,
        id,
        want,
        deadline: tokio::time::Instant::now() + args.timeout,
        launch: Launch::NotLaunched,
        refusals: 0,
        suppressed: false,
        waiting: None,
        killing: None,
        kill_again: false,
        unreachable: false,
        answers_due: 0,
        stale_answers: 0,
        output: None,
    };
    let outcome = run.drive(&mut events).await;
    if let Some(output) = run.output.take()
        && tokio::time::timeout(OUTPUT_TIMEOUT, output).await.is_err()
    {
        eprintln!("berth: the task's output was not read to its end within {OUTPUT_TIMEOUT:?}");
    }
    teardown(&framework, &mut events).await;
    drop(events);
    match exit_code(&run.task, &run.want, outcome) {
        0 => Ok(()),
        code => Err(ExitWith(code).into()),
    }
}

/// The exit code of `berth run` for `outcome`, saying on stderr what berth
/// knows that the task's output does not.
fn exit_code(task: &pb::TaskInfo, want: &Resources, outcome: Outcome) -> u8 {
    let id = &task.task_id;
    let status = match outcome {
        Outcome::Ended(status) => status,
        Outcome::Failed(why) => {
            eprintln!("berth: {why}");
            return exit::BERTH;
        }
        Outcome::Interrupted => {
            eprintln!("berth: interrupted before the task was launched");
            return exit::INTERRUPTED;
        }
    };
    let state = pb::TaskState::try_from(status.state).unwrap_or(pb::TaskState::Unspecified);
    let code = status
        .exit_code
        .map(|c| u8::try_from(c).unwrap_or(exit::BERTH));
    match state {
        pb::TaskState::TaskFinished => 0,
        pb::TaskState::TaskFailed if status.reason() == pb::TaskReason::Oom => {
            eprintln!(
                "berth: task {id} killed: out of memory (limit {} MiB)",
                want.mem.to_f64()
            );
            code.unwrap_or(exit::KILLED)
        }
        pb::TaskState::TaskFailed if code.is_some() => code.unwrap_or(exit::BERTH),
        pb::TaskState::TaskKilled => {
            eprintln!("berth: task {id} was killed");
            code.unwrap_or(exit::KILLED)
        }
        state => {
            let mut why = format!("task {id} ended {}", state.as_str_name());
            for part in [status.reason().short_name(), status.message.as_str()] {
                if !part.is_empty() {
                    why.push_str(": ");
                    why.push_str(part);
                }
            }
            eprintln!("berth: {why}");
            exit::BERTH
        }
    }
}

/// Tears the framework down (which kills its task if it still runs), across
/// a leader change: retried until it is done or [`TEARDOWN_TIMEOUT`].
async fn teardown(framework: &Framework, events: &mut Events) {
    let deadline = tokio::time::Instant::now() + TEARDOWN_TIMEOUT;
    loop {
        let err = match framework.teardown().await {
            // Removed: torn down already (a teardown whose answer was lost),
            // or by its failover timeout.
            Ok(()) | Err(SdkError::Removed(_)) => return,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "berth: could not tear the framework down ({err}); the master removes it and its task 60 s after it lost track of it"
            );
            return;
        }
        tracing::debug!("teardown: {err}; trying again");
        // Wait for the SDK to re-subscribe (or for a moment).
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(event) = events.next().await {
                if matches!(event, Event::Subscribed { .. } | Event::Error(_)) {
                    return;
                }
            }
        })
        .await;
    }
}

impl Run<'_> {
    fn task_id(&self) -> &str {
        &self.task.task_id
    }

    /// Follows the task from its launch to its end.
    async fn drive(&mut self, events: &mut Events) -> Outcome {
        // Ctrl-C or SIGTERM kills the task (and waits for it to end) instead
        // of leaving it to the failover timeout.
        let interrupted = crate::daemons::shutdown_signal();
        tokio::pin!(interrupted);
        let mut interrupt_seen = false;
        loop {
            let deadline = self.next_deadline();
            let event = tokio::select! {
                event = events.next() => event,
                () = &mut interrupted, if !interrupt_seen => {
                    interrupt_seen = true;
                    if let Some(outcome) = self.on_interrupt().await {
                        return outcome;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => return self.on_deadline(),
            };
            let Some(event) = event else {
                return Outcome::Failed("the framework's event stream ended".into());
            };
            if let Some(outcome) = self.on_event(event).await {
                return outcome;
            }
        }
    }

    /// When `berth run` stops waiting for what it waits for now.
    fn next_deadline(&self) -> tokio::time::Instant {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        if let Some(killed) = self.killing {
            return killed + KILL_TIMEOUT;
        }
        match self.launch {
            Launch::NotLaunched => self.deadline,
            Launch::Unknown { since } => since + UNKNOWN_TIMEOUT,
            Launch::Launched => far,
        }
    }

    fn on_deadline(&self) -> Outcome {
        if self.killing.is_some() {
            return Outcome::Failed(format!(
                "task {} did not end within {KILL_TIMEOUT:?} of the kill",
                self.task_id()
            ));
        }
        match self.launch {
            Launch::NotLaunched => {
                let why = self
                    .waiting
                    .as_deref()
                    .map_or_else(String::new, |w| format!(" ({w})"));
                Outcome::Failed(format!(
                    "no offer with {} arrived within {:?}{why}",
                    self.want, self.args.timeout
                ))
            }
            Launch::Unknown { .. } => Outcome::Failed(format!(
                "the cluster did not say within {UNKNOWN_TIMEOUT:?} whether task {} was launched",
                self.task_id()
            )),
            // Never: no deadline.
            Launch::Launched => Outcome::Failed("internal: deadline while launched".into()),
        }
    }

    async fn on_interrupt(&mut self) -> Option<Outcome> {
        match self.launch {
            // Nothing runs yet (or, if an unknown launch did happen, the
            // teardown kills it).
            Launch::NotLaunched | Launch::Unknown { .. } => Some(Outcome::Interrupted),
            Launch::Launched => {
                self.killing = Some(tokio::time::Instant::now());
                self.kill().await;
                None
            }
        }
    }

    async fn kill(&mut self) {
        match self.framework.kill(&self.id, None).await {
            Ok(()) => self.kill_again = false,
            Err(e) => {
                // Sent again once re-subscribed.
                tracing::debug!("kill: {e}");
                self.kill_again = true;
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Option<Outcome> {
        match event {
            Event::Offers(offers) => self.on_offers(offers).await,
            Event::Update(status) if status.task_id == self.task.task_id => {
                if let Err(e) = self.framework.acknowledge(&status).await {
                    tracing::debug!("acknowledgement failed (the agent resends): {e}");
                }
                self.on_update(status).await
            }
            Event::Update(status) => {
                let _ = self.framework.acknowledge(&status).await;
                None
            }
            Event::Subscribed {
                resubscribed: true, ..
            } => {
                // Answers asked for on the old stream are gone with it. The
                // task (launched, or of unknown outcome) is reconciled on
                // the new one, a kill that failed goes out again, and a task
                // still to launch gets offers from the new leader.
                self.answers_due = 0;
                self.stale_answers = 0;
                if self.kill_again {
                    self.kill().await;
                }
                if self.launch != Launch::NotLaunched {
                    self.reconcile().await;
                }
                self.suppressed = false;
                None
            }
            Event::Error(message) => Some(Outcome::Failed(format!(
                "the framework was removed: {message}"
            ))),
            Event::Subscribed { .. }
            | Event::Rescind { .. }
            | Event::Failure { .. }
            | Event::Disconnected => None,
        }
    }

    /// Asks the master about the task; the answer comes as an update.
    async fn reconcile(&mut self) {
        let task = (self.id.clone(), None);
        match self.framework.reconcile(vec![task]).await {
            Ok(()) => self.answers_due += 1,
            // Asked again after the next re-subscription.
            Err(e) => tracing::debug!("reconcile: {e}"),
        }
    }

    async fn on_offers(&mut self, offers: Vec<pb::Offer>) -> Option<Outcome> {
        let offered = offers.clone();
        let mut unused = Vec::new();
        // Offers a refused launch left with us: offered again at once.
        let mut retry = Vec::new();
        for offer in offers {
            // The master's offer ids are valid; one that is not names no
            // offer to use or decline.
            let Ok(offer_id) = OfferId::new(offer.id.as_str()) else {
                continue;
            };
            let host_ports = resources_from_proto_opt(offer.resources.as_ref())
                .ok()
                .filter(|r| r.contains(&self.want))
                .and_then(|r| first_ports(&r.ports, self.args.ports.len()));
            let Some(host_ports) = host_ports.filter(|_| self.launch == Launch::NotLaunched) else {
                unused.push(offer_id);
                continue;
            };
            let mut t = self.task.clone();
            t.agent_id.clone_from(&offer.agent_id);
            with_ports(&mut t, &self.want, &self.args.ports, &host_ports);
            match self
                .framework
                .accept(vec![offer_id.clone()], vec![t], None)
                .await
            {
                Ok(ids) if ids.contains(&self.id) => {
                    self.launch = Launch::Launched;
                    // Answers to questions asked before this launch may
                    // still say the task is unknown.
                    self.stale_answers = self.answers_due;
                }
                Ok(_) => {
                    if let Some(outcome) = self.refused("the master launched nothing") {
                        return Some(outcome);
                    }
                    retry.push(offer_id);
                }
                Err(e) if e.outcome_unknown() => {
                    tracing::debug!("launch outcome unknown: {e}");
                    self.launch = Launch::Unknown {
                        since: tokio::time::Instant::now(),
                    };
                    // Only an answer to a question asked from now on
                    // tells whether this launch happened.
                    self.stale_answers = self.answers_due;
                    self.reconcile().await;
                }
                // Not sent; offers come again after the re-subscription.
                Err(SdkError::NotSubscribed) => {}
                Err(SdkError::Removed(why)) => {
                    return Some(Outcome::Failed(format!("the framework was removed: {why}")));
                }
                // The task exists already (a launch whose answer was lost),
                // or the subscription was superseded: ask.
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    tracing::debug!("launch refused: {e}; reconciling");
                    self.launch = Launch::Unknown {
                        since: tokio::time::Instant::now(),
                    };
                    // Only an answer to a question asked from now on
                    // tells whether this launch happened.
                    self.stale_answers = self.answers_due;
                    self.reconcile().await;
                    retry.push(offer_id);
                }
                Err(e) => {
                    if let Some(outcome) = self.refused(&e.to_string()) {
                        return Some(outcome);
                    }
                    retry.push(offer_id);
                }
            }
        }
        if self.launch == Launch::NotLaunched && !offered.is_empty() && retry.is_empty() {
            self.publish_waiting(&offered).await;
        } else if self.launch != Launch::NotLaunched && self.waiting.take().is_some() {
            // Not pending any more.
            if let Err(e) = self.framework.update_pending(Vec::new()).await {
                tracing::debug!("clearing the pending task failed: {e}");
            }
        }
        if !retry.is_empty() {
            let _ = self.framework.decline(retry, Some(Duration::ZERO)).await;
        }
        if !unused.is_empty() {
            let _ = self
                .framework
                .decline(unused, Some(Duration::from_secs(3600)))
                .await;
        }
        if self.launch != Launch::NotLaunched && !self.suppressed {
            self.suppressed = self.framework.suppress(Roles::All).await.is_ok();
        }
        None
    }

    /// Counts a refused launch; gives up after [`MAX_REFUSALS`].
    fn refused(&mut self, why: &str) -> Option<Outcome> {
        self.refusals += 1;
        tracing::debug!(refusals = self.refusals, "launch refused: {why}");
        (self.refusals >= MAX_REFUSALS).then(|| Outcome::Failed(format!("launch refused: {why}")))
    }

    /// Says once per reason why nothing fits, and publishes it as pending.
    async fn publish_waiting(&mut self, offered: &[pb::Offer]) {
        let why = explain_offers(offered, &self.want, self.args.ports.len());
        let pending = berth_sdk::pending_task(&self.task, &why);
        if self.waiting.as_deref() != Some(pending.reason.as_str()) {
            eprintln!("berth: waiting for resources: {}", pending.reason);
            self.waiting = Some(pending.reason.clone());
            if let Err(e) = self.framework.update_pending(vec![pending]).await {
                tracing::debug!("publishing the pending task failed: {e}");
            }
        }
    }

    async fn on_update(&mut self, status: pb::TaskStatus) -> Option<Outcome> {
        let state = pb::TaskState::try_from(status.state).unwrap_or(pb::TaskState::Unspecified);
        let id = self.task.task_id.clone();
        if status.reason() == pb::TaskReason::Reconciliation && self.answers_due > 0 {
            self.answers_due -= 1;
            if self.stale_answers > 0 {
                self.stale_answers -= 1;
                if state == pb::TaskState::TaskUnknown {
                    // About the launch before this one.
                    return None;
                }
            }
        }
        if state == pb::TaskState::TaskUnknown {
            return match self.launch {
                // The cluster never had it: launch it (with the same id).
                Launch::Unknown { .. } => {
                    tracing::debug!("the launch of {id} did not happen; launching again");
                    self.launch = Launch::NotLaunched;
                    self.suppressed = false;
                    let _ = self.framework.revive(Roles::All).await;
                    None
                }
                Launch::NotLaunched => None,
                Launch::Launched => Some(Outcome::Failed(format!(
                    "the cluster no longer knows task {id}"
                ))),
            };
        }
        self.launch = Launch::Launched;
        match state {
            pb::TaskState::TaskUnreachable => {
                if !self.unreachable {
                    self.unreachable = true;
                    eprintln!(
                        "berth: the agent of task {id} is unreachable; waiting for it to come back"
                    );
                }
                return None;
            }
            _ if self.unreachable => {
                self.unreachable = false;
                eprintln!("berth: the agent of task {id} is back");
            }
            _ => {}
        }
        if state == pb::TaskState::TaskRunning
            && !status.ports.is_empty()
            && self.args.image.is_some()
            && status.reason() == pb::TaskReason::Unspecified
        {
            eprintln!(
                "berth: task {id} running; ports {}",
                crate::admin::ports_text(&status.ports)
            );
        }
        if self.output.is_none() && state != pb::TaskState::TaskStaging {
            self.output = Some(tokio::spawn(stream_output(
                self.args.client.clone(),
                self.framework.id(),
                id,
            )));
        }
        state.is_terminal().then_some(Outcome::Ended(status))
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
            // A reader that went away (`berth run … | head -1`) ends the
            // output quietly; the task is still followed to its end.
            let mut w: Box<dyn Write + Send> = Box::new(crate::out::Stdout);
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

/// Counts what goes through it.
struct Counting<'a> {
    inner: &'a mut (dyn Write + Send),
    written: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Follows one file of the task to its end. [`stream_log`] rides out agent
/// restarts by itself; the only retry here is for a log the agent does not
/// have yet (for a moment after STARTING), and only while nothing was
/// written, so no byte is ever repeated.
async fn follow(
    address: &str,
    framework_id: &str,
    task_id: &str,
    file: pb::LogFile,
    w: &mut (dyn Write + Send),
) {
    let mut out = Counting {
        inner: w,
        written: 0,
    };
    for attempt in 0..20 {
        match stream_log(address, framework_id, task_id, file, true, &mut out).await {
            Ok(()) => return,
            Err(e) if crate::out::is_closed(&e) => return,
            Err(e) if attempt == 19 || out.written > 0 => {
                eprintln!("berth: cannot read the task's {file:?}: {e:#}");
                return;
            }
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
