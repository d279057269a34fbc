//! The workload: real `berth run`s, at most `concurrency` at once, each a
//! shell task that marks every real execution of itself in a file of its
//! own, prints a first and a last line, sleeps (short, or seconds so that
//! faults hit it running) and exits with a code drawn for it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Config;
use super::cluster::Topology;

/// Most of a run's stdout and stderr kept for the report.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// One planned `berth run`.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Its name (`berth run --name`), "r00042": also the name of its mark
    /// file and a token in its command, so its framework can be told.
    pub name: String,
    /// How long its task sleeps between its two lines.
    pub sleep: Duration,
    /// The exit code its task ends with: 0 or 2–100, never 1 (berth's
    /// own generic failure) nor 125–127 or 128+ (berth's documented codes
    /// and signals), so that a berth failure is never taken for the task.
    pub code: u8,
}

impl RunPlan {
    /// The task's command: `sh -c SCRIPT`. `$$` is the shell's pid, so two
    /// executions leave two different lines.
    fn script(&self, marks: &std::path::Path) -> String {
        let n = &self.name;
        format!(
            ": run={n}; echo \"{n} $BERTH_TASK_ID $$\" >> '{}/{n}'; echo \"started {n}\"; \
             sleep {:.2}; echo \"done {n}\"; exit {}",
            marks.display(),
            self.sleep.as_secs_f64(),
            self.code
        )
    }
}

/// The run a framework belongs to, from its name (`berth run` names its
/// framework after the command, which starts with `: run=NAME;`).
pub(crate) fn run_of_framework(name: &str) -> Option<&str> {
    let rest = &name[name.find("run=")? + 4..];
    Some(&rest[..rest.find(';')?])
}

/// The seeded, endless sequence of runs: 30 % long (3–8 s), the others
/// short (0–0.4 s); 40 % exit 0.
#[derive(Debug)]
pub(crate) struct Plans {
    rng: StdRng,
    next: usize,
}

/// The runs, drawn from a seed taken from `rng`.
pub(crate) fn plan(rng: &mut StdRng) -> Plans {
    Plans {
        rng: StdRng::seed_from_u64(rng.random()),
        next: 0,
    }
}

impl Iterator for Plans {
    type Item = RunPlan;

    fn next(&mut self) -> Option<RunPlan> {
        self.next += 1;
        let sleep_ms = if self.rng.random_bool(0.3) {
            self.rng.random_range(3_000..=8_000)
        } else {
            self.rng.random_range(0..=400)
        };
        let code = if self.rng.random_bool(0.4) {
            0
        } else {
            self.rng.random_range(2..=100)
        };
        Some(RunPlan {
            name: format!("r{:05}", self.next),
            sleep: Duration::from_millis(sleep_ms),
            code,
        })
    }
}

/// What one `berth run` did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// What it was to do.
    pub plan: RunPlan,
    /// When it was started and when it ended (Unix seconds).
    pub started_at: f64,
    /// See `started_at`.
    pub ended_at: f64,
    /// Its exit code; `None` when it could not be started, was ended by a
    /// signal, or hung.
    pub exit: Option<i32>,
    /// Whether it was still running after the run timeout (and killed).
    pub hung: bool,
    /// Its stdout (the task's output, as `berth run` streamed it).
    pub stdout: String,
    /// Its stderr (berth's own messages and the task's stderr).
    pub stderr: String,
}

/// When each run started and ended (Unix seconds), for telling which
/// frameworks should re-attach after a fault.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lives(Arc<Mutex<HashMap<String, Life>>>);

/// When a run started and, once it has, ended (Unix seconds).
type Life = (f64, Option<f64>);

impl Lives {
    fn start(&self, run: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run.to_string(), (super::now(), None));
    }

    fn end(&self, run: &str) {
        if let Some(life) = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(run)
        {
            life.1 = Some(super::now());
        }
    }

    /// How many runs were running at `t`.
    pub(crate) fn running_at(&self, t: f64) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|&&(start, end)| start <= t && end.is_none_or(|e| e > t))
            .count()
    }

    /// Whether `run` started before `t`.
    pub(crate) fn started_before(&self, run: &str, t: f64) -> bool {
        self.life(run).is_some_and(|(start, _)| start < t)
    }

    /// Whether `run` still runs.
    pub(crate) fn running(&self, run: &str) -> bool {
        self.life(run).is_some_and(|(_, end)| end.is_none())
    }

    fn life(&self, run: &str) -> Option<Life> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(run)
            .copied()
    }
}

/// Tells the workload when to stop: once faults are done and enough runs
/// started, or at once when the campaign is aborted.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopSignal {
    faults_done: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

impl StopSignal {
    /// No more faults come.
    pub(crate) fn faults_done(&self) {
        self.faults_done.store(true, Ordering::SeqCst);
    }

    /// Start no more runs.
    pub(crate) fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }

    fn should_stop(&self, started: usize, min_runs: usize) -> bool {
        self.abort.load(Ordering::SeqCst)
            || (self.faults_done.load(Ordering::SeqCst) && started >= min_runs)
    }
}

/// Lets a fault hold new runs back and release them all at once (a burst
/// of submissions), and see how many run.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    open: watch::Sender<bool>,
    inflight: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            open: watch::Sender::new(true),
            inflight: Arc::default(),
        }
    }
}

impl Gate {
    /// Holds new runs back.
    pub(crate) fn close(&self) {
        self.open.send_replace(false);
    }

    /// Lets them go.
    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }

    /// `berth run`s running now.
    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    async fn wait_open(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    fn is_open(&self) -> bool {
        *self.open.borrow()
    }
}

/// Starts runs from `plans`, at most `config.concurrency` at once, until
/// `stop` says so or `deadline` passes; returns every run's outcome.
pub(crate) async fn drive(
    topo: Arc<Topology>,
    config: Config,
    plans: Plans,
    lives: Lives,
    stop: StopSignal,
    gate: Gate,
    deadline: Instant,
) -> Vec<RunOutcome> {
    let slots = Arc::new(tokio::sync::Semaphore::new(config.concurrency));
    let mut running = JoinSet::new();
    let mut outcomes = Vec::new();
    for (started, plan) in plans.enumerate() {
        let permit = loop {
            gate.wait_open().await;
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break None;
            };
            if gate.is_open() {
                break Some(permit);
            }
        };
        while let Some(done) = running.try_join_next() {
            outcomes.extend(done.ok());
        }
        if stop.should_stop(started, config.min_runs) || Instant::now() > deadline {
            break;
        }
        let Some(permit) = permit else { break };
        lives.start(&plan.name);
        gate.inflight.fetch_add(1, Ordering::SeqCst);
        let (topo, lives, gate) = (Arc::clone(&topo), lives.clone(), gate.clone());
        let timeout = config.run_timeout;
        running.spawn(async move {
            let outcome = one_run(&topo, plan, timeout).await;
            lives.end(&outcome.plan.name);
            gate.inflight.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            outcome
        });
    }
    while let Some(done) = running.join_next().await {
        outcomes.extend(done.ok());
    }
    outcomes.sort_by(|a, b| a.plan.name.cmp(&b.plan.name));
    outcomes
}

/// Runs one `berth run` to its end (or kills it after `timeout`).
async fn one_run(topo: &Topology, plan: RunPlan, timeout: Duration) -> RunOutcome {
    let started_at = super::now();
    let mut cmd = tokio::process::Command::from(topo.clients.command(&topo.berth));
    cmd.args(["run", "--master", &topo.master_list(), "--name", &plan.name])
        .args(["--cpus", "0.1", "--mem", "32", "--timeout", "60", "--"])
        .args(["sh", "-c", &plan.script(&topo.marks)])
        .env_remove("BERTH_MASTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut outcome = RunOutcome {
        plan,
        started_at,
        ended_at: started_at,
        exit: None,
        hung: false,
        stdout: String::new(),
        stderr: String::new(),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            outcome.stderr = format!("campaign: cannot start berth run: {e}");
            return outcome;
        }
    };
    let out = child.stdout.take().map(|s| tokio::spawn(read_bounded(s)));
    let err = child.stderr.take().map(|s| tokio::spawn(read_bounded(s)));
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => outcome.exit = status.code(),
        Ok(Err(e)) => outcome.stderr = format!("campaign: waiting for berth run: {e}\n"),
        Err(_) => {
            outcome.hung = true;
            let _ = child.kill().await;
        }
    }
    outcome.ended_at = super::now();
    if let Some(out) = out {
        outcome.stdout = out.await.unwrap_or_default();
    }
    if let Some(err) = err {
        outcome.stderr.push_str(&err.await.unwrap_or_default());
    }
    for (ext, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        let path = topo.outputs.join(format!("{}.{ext}", outcome.plan.name));
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("campaign: cannot write {}: {e}", path.display());
        }
    }
    outcome
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_LIMIT`] bytes.
async fn read_bounded(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0_u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framework_name_tells_its_run() {
        let plan = RunPlan {
            name: "r00042".into(),
            sleep: Duration::from_millis(1500),
            code: 17,
        };
        let script = plan.script(std::path::Path::new("/m"));
        assert_eq!(
            script,
            ": run=r00042; echo \"r00042 $BERTH_TASK_ID $$\" >> '/m/r00042'; \
             echo \"started r00042\"; sleep 1.50; echo \"done r00042\"; exit 17"
        );
        let fw = format!("berth-run: sh -c {script}");
        assert_eq!(run_of_framework(&fw), Some("r00042"));
        assert_eq!(run_of_framework("berth-ci"), None);
        assert_eq!(run_of_framework("run=unterminated"), None);
    }

    #[test]
    fn lives_tell_which_runs_a_fault_could_have_hit() {
        let lives = Lives::default();
        let before = super::super::now() - 1.0;
        lives.start("r1");
        lives.start("r2");
        let during = super::super::now() + 0.5;
        lives.end("r2");
        let after = super::super::now() + 1.0;
        assert!(lives.started_before("r1", during) && !lives.started_before("r1", before));
        assert!(
            !lives.started_before("r9", after),
            "an unknown run never started"
        );
        assert!(lives.running("r1") && !lives.running("r2"));
        assert_eq!(lives.running_at(before), 0);
        assert_eq!(lives.running_at(after), 1, "r2 had ended");
    }

    #[test]
    fn plans_follow_the_seed_and_never_use_berths_codes() {
        let mut a = StdRng::seed_from_u64(7);
        let mut b = StdRng::seed_from_u64(7);
        let pa: Vec<RunPlan> = plan(&mut a).take(500).collect();
        let pb: Vec<RunPlan> = plan(&mut b).take(500).collect();
        for (x, y) in pa.iter().zip(&pb) {
            assert_eq!((&x.name, x.sleep, x.code), (&y.name, y.sleep, y.code));
        }
        assert!(
            pa.iter()
                .all(|p| p.code == 0 || (2..=100).contains(&p.code))
        );
        let long = pa
            .iter()
            .filter(|p| p.sleep >= Duration::from_secs(3))
            .count();
        assert!((100..200).contains(&long), "{long} long runs of 500");
        assert_eq!(pa[0].name, "r00001");
    }
}
