//! How `berth ci run` shows its jobs' progress.
//!
//! On a terminal (stderr), one live line per job, drawn with indicatif: a
//! spinner while the job waits or runs, its name, stage, status and
//! elapsed time, and a mark once it has ended. Elsewhere (a pipe, a file,
//! a CI log, the tests) one plain line on stdout per change of a job's
//! status, `  <status>   <job>   <detail>`. With stderr on a terminal and
//! stdout redirected, both: the bars for the eye, the lines for the file.
//! A pending job whose resource group is held shows `waiting for resource`,
//! as the API says `waiting_for_resource`; a pending job no agent has the
//! tags for shows `stuck` and why. A trigger job says
//! `-> child pipeline #N: <status>`; a child pipeline's jobs are shown as
//! plain lines, indented under `#N`.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::{Duration, SystemTime};

use berth_ci::exec::runner::PipelineRecord;
use berth_ci::exec::state::{JobState, JobStatus, PipelineStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mode {
    /// Live bars on stderr.
    pub(crate) bars: bool,
    /// Plain lines on stdout.
    pub(crate) lines: bool,
}

impl Mode {
    /// The mode for these streams: bars when stderr is a terminal (and
    /// `TERM` is not `dumb`), lines unless stdout is that terminal too.
    pub(crate) fn choose(stderr_terminal: bool, stdout_terminal: bool, term: Option<&str>) -> Mode {
        let bars = stderr_terminal && term != Some("dumb");
        Mode {
            bars,
            lines: !bars || !stdout_terminal,
        }
    }

    /// The mode for this process's streams.
    pub(crate) fn detect() -> Mode {
        let term = std::env::var("TERM").ok();
        Mode::choose(
            std::io::stderr().is_terminal(),
            std::io::stdout().is_terminal(),
            term.as_deref(),
        )
    }
}

/// The progress display of one pipeline.
pub(crate) struct Progress {
    mode: Mode,
    /// Per job: the status text (with its note) and attempt count last
    /// printed as a line.
    shown: BTreeMap<usize, (String, usize)>,
    bars: Option<Bars>,
    /// The statuses of the child pipelines, for their trigger jobs' lines.
    children: BTreeMap<u64, PipelineStatus>,
    /// Put before each line (a child pipeline's: `  #N`).
    indent: String,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("mode", &self.mode)
            .finish()
    }
}

struct Bars {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    name_width: usize,
    stage_width: usize,
}

/// The styles of a job's line: spinning, or a fixed mark in a colour.
fn style(kind: &str) -> ProgressStyle {
    let template = match kind {
        "spin" => "  {spinner:.cyan} {msg}",
        "ok" => "  {prefix:.green} {msg}",
        "bad" => "  {prefix:.red} {msg}",
        "warn" => "  {prefix:.yellow} {msg}",
        _ => "  {prefix:.dim} {msg}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

/// The mark and style of a job that is not spinning; `None` for one that
/// is (waiting for an offer, running, being canceled).
fn mark(job: &JobState) -> Option<(&'static str, &'static str)> {
    Some(match job.status {
        JobStatus::Pending | JobStatus::Running | JobStatus::Canceling => return None,
        JobStatus::Created => ("·", "dim"),
        JobStatus::Manual => ("▶", "warn"),
        JobStatus::Scheduled => ("◷", "dim"),
        JobStatus::Success => ("✔", "ok"),
        JobStatus::Failed if job.failure_allowed => ("!", "warn"),
        JobStatus::Failed => ("✘", "bad"),
        JobStatus::Canceled => ("⊘", "dim"),
        JobStatus::Skipped => ("»", "dim"),
    })
}

/// A job's status as shown: GitLab's name, and, as the API says, `waiting
/// for resource` for a pending job whose `resource_group` another job
/// holds.
pub(crate) fn status_text(job: &JobState, waiting_for_resource: bool) -> &'static str {
    if job.status == JobStatus::Pending && waiting_for_resource {
        "waiting for resource"
    } else {
        job.status.as_str()
    }
}

/// Job `i`'s status as shown: [`status_text`], or `stuck` for a pending
/// job no agent has the tags for.
fn job_status(record: &PipelineRecord, i: usize, job: &JobState) -> &'static str {
    if job.status == JobStatus::Pending && record.stuck_reason(i).is_some() {
        "stuck"
    } else {
        status_text(job, record.is_waiting_for_resource(i))
    }
}

/// What is said after job `i`'s line: why it is stuck, or its child
/// pipeline and the child's status (from `children`).
fn job_note(
    record: &PipelineRecord,
    i: usize,
    job: &JobState,
    children: &BTreeMap<u64, PipelineStatus>,
) -> String {
    if job.status == JobStatus::Pending
        && let Some(why) = record.stuck_reason(i)
    {
        return why.to_string();
    }
    match record.family.latest_child(i) {
        Some(child) => match children.get(&child) {
            Some(status) => format!("-> child pipeline #{child}: {status}"),
            None => format!("-> child pipeline #{child}"),
        },
        None => String::new(),
    }
}

/// `1.2s`, `59.9s`, `1m05s`, `2h03m`.
pub(crate) fn elapsed_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// The text of a job's line (without the mark): name, stage, status (see
/// [`status_text`]) and, once started, the time it took or has taken so
/// far, the attempt and why it failed.
pub(crate) fn row(
    name: &str,
    stage: &str,
    (job, waiting): (&JobState, bool),
    now: SystemTime,
    name_width: usize,
    stage_width: usize,
) -> String {
    let mut text = format!(
        "{name:<name_width$}  {stage:<stage_width$}  {:<9}",
        status_text(job, waiting)
    );
    if let Some(attempt) = job.attempts.last()
        && let Some(start) = attempt.started
        && job.status != JobStatus::Pending
    {
        let end = attempt.finished.unwrap_or(now);
        if let Ok(took) = end.duration_since(start) {
            text.push_str(&format!("  {}", elapsed_text(took)));
        }
        if job.attempts.len() > 1 {
            text.push_str(&format!("  attempt {}", job.attempts.len()));
        }
        if let Some(end) = &attempt.end
            && let Some(reason) = end.reason
        {
            text.push_str(&format!("  {reason}: {}", end.message));
        }
    }
    text.trim_end().to_string()
}

impl Bars {
    fn new(record: &PipelineRecord) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let name_width = record
            .plan
            .jobs
            .iter()
            .map(|j| j.name.chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        let stage_width = record
            .plan
            .jobs
            .iter()
            .map(|j| j.stage.chars().count())
            .max()
            .unwrap_or(0)
            .min(20);
        let bars = record
            .plan
            .jobs
            .iter()
            .map(|_| {
                multi.add(
                    ProgressBar::new_spinner()
                        .with_style(style("dim"))
                        .with_prefix("·"),
                )
            })
            .collect();
        Bars {
            multi,
            bars,
            name_width,
            stage_width,
        }
    }

    fn update(
        &self,
        record: &PipelineRecord,
        now: SystemTime,
        children: &BTreeMap<u64, PipelineStatus>,
    ) {
        for (i, ((bar, planned), job)) in self
            .bars
            .iter()
            .zip(&record.plan.jobs)
            .zip(record.state.jobs())
            .enumerate()
        {
            // The text first, then the mark: each change is drawn.
            let text = row(
                &planned.name,
                &planned.stage,
                (job, record.is_waiting_for_resource(i)),
                now,
                self.name_width,
                self.stage_width,
            );
            let note = job_note(record, i, job, children);
            bar.set_message(if note.is_empty() {
                text
            } else {
                format!("{text}  {note}")
            });
            match mark(job) {
                None => {
                    bar.set_style(style("spin"));
                    bar.enable_steady_tick(Duration::from_millis(120));
                }
                Some((symbol, kind)) => {
                    bar.disable_steady_tick();
                    bar.set_prefix(symbol);
                    bar.set_style(style(kind));
                }
            }
        }
    }
}

impl Progress {
    /// A display in `mode`.
    pub(crate) fn new(mode: Mode) -> Progress {
        Progress {
            mode,
            shown: BTreeMap::new(),
            bars: None,
            children: BTreeMap::new(),
            indent: String::new(),
        }
    }

    /// The display of child pipeline `id`: plain lines, indented, which
    /// the parent's display prints ([`Progress::say`]).
    pub(crate) fn child(id: u64) -> Progress {
        let mut progress = Progress::new(Mode {
            bars: false,
            lines: true,
        });
        progress.indent = format!("  #{id}");
        progress
    }

    /// Child pipeline `id` is `status` now (for its trigger job's line).
    pub(crate) fn set_child_status(&mut self, id: u64, status: PipelineStatus) {
        self.children.insert(id, status);
    }

    /// The lines of a child pipeline's display that changed (see
    /// [`Progress::child`]).
    pub(crate) fn child_lines(&mut self, record: &PipelineRecord) -> Vec<String> {
        self.changed_lines(record)
    }

    /// Prints a line of the pipeline's progress: above the bars, or on
    /// stdout with the plain lines.
    pub(crate) fn say(&self, line: &str) {
        if let Some(bars) = &self.bars {
            let _ = bars.multi.println(line);
        } else if self.mode.lines {
            let _ = outln!("{line}");
        }
    }

    /// Shows the pipeline as it is now.
    pub(crate) fn update(&mut self, record: &PipelineRecord) {
        if self.mode.lines {
            self.lines(record);
        }
        if self.mode.bars {
            let bars = self.bars.get_or_insert_with(|| Bars::new(record));
            bars.update(record, SystemTime::now(), &self.children);
        }
    }

    /// Prints one line per job whose status (or attempt) changed since the
    /// last call.
    fn lines(&mut self, record: &PipelineRecord) {
        for line in self.changed_lines(record) {
            let _ = outln!("{line}");
        }
    }

    /// The lines of the jobs whose status (or attempt) changed since the
    /// last call.
    fn changed_lines(&mut self, record: &PipelineRecord) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, (node, job)) in record
            .state
            .nodes()
            .iter()
            .zip(record.state.jobs())
            .enumerate()
        {
            let status = job_status(record, i, job);
            let note = job_note(record, i, job, &self.children);
            let now = (format!("{status} {note}"), job.attempts.len());
            if self.shown.get(&i) != Some(&now) && job.status != JobStatus::Created {
                self.shown.insert(i, now);
                let line = format!(
                    "{}  {:<10} {:<30} {} {note}",
                    self.indent,
                    status,
                    node.name,
                    detail(job)
                );
                lines.push(line.trim_end().to_string());
            }
        }
        lines
    }

    /// A message for the user on stderr, above the bars if there are any.
    pub(crate) fn note(&self, message: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(message);
            }
            None => eprintln!("{message}"),
        }
    }

    /// Stops the bars, leaving their last state on the screen.
    pub(crate) fn finish(&mut self, record: &PipelineRecord) {
        self.update(record);
        if let Some(bars) = self.bars.take() {
            for bar in &bars.bars {
                bar.disable_steady_tick();
                bar.abandon();
            }
        }
    }
}

/// The detail of a plain progress line: attempt, time taken, why it
/// failed.
fn detail(job: &JobState) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_ci::exec::state::{Attempt, JobEnd};

    #[test]
    fn bars_on_a_terminal_lines_elsewhere() {
        let both = Mode::choose(true, true, Some("xterm"));
        assert_eq!(
            both,
            Mode {
                bars: true,
                lines: false
            }
        );
        // stdout to a file, stderr on the terminal: both.
        assert_eq!(
            Mode::choose(true, false, Some("xterm")),
            Mode {
                bars: true,
                lines: true
            }
        );
        // Not a terminal, or a dumb one: the plain lines only.
        for mode in [
            Mode::choose(false, false, None),
            Mode::choose(false, true, Some("xterm")),
            Mode::choose(true, true, Some("dumb")),
        ] {
            assert_eq!(
                mode,
                Mode {
                    bars: false,
                    lines: true
                }
            );
        }
    }

    #[test]
    fn elapsed_times_read_well() {
        assert_eq!(elapsed_text(Duration::from_millis(1200)), "1.2s");
        assert_eq!(elapsed_text(Duration::from_secs(65)), "1m05s");
        assert_eq!(elapsed_text(Duration::from_secs(7380)), "2h03m");
    }

    fn job(status: JobStatus, attempts: Vec<Attempt>) -> JobState {
        // A JobState is only made by the state machine; build one through
        // serde, as it is stored.
        let attempts = serde_json::to_value(attempts).unwrap_or_default();
        serde_json::from_value(serde_json::json!({
            "status": serde_json::to_value(status).unwrap_or_default(),
            "attempts": attempts,
            "start_at": null,
            "skipped_by_failure": false,
            "failure_allowed": false,
        }))
        .unwrap_or_else(|e| panic!("a job state: {e}"))
    }

    #[test]
    fn a_row_has_name_stage_status_time_and_reason() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let created = job(JobStatus::Created, Vec::new());
        assert_eq!(
            row("build", "build", (&created, false), t0, 8, 6),
            "build     build   created"
        );
        let running = job(
            JobStatus::Running,
            vec![Attempt {
                task_id: "t".into(),
                started: Some(t0),
                finished: None,
                end: None,
            }],
        );
        assert_eq!(
            row(
                "unit",
                "test",
                (&running, false),
                t0 + Duration::from_secs(3),
                8,
                6
            ),
            "unit      test    running    3.0s"
        );
        let failed = job(
            JobStatus::Failed,
            vec![
                Attempt {
                    task_id: "t1".into(),
                    started: Some(t0),
                    finished: Some(t0),
                    end: Some(JobEnd::script_failure(1)),
                },
                Attempt {
                    task_id: "t2".into(),
                    started: Some(t0),
                    finished: Some(t0 + Duration::from_secs(90)),
                    end: Some(JobEnd::script_failure(2)),
                },
            ],
        );
        assert_eq!(
            row(
                "unit",
                "test",
                (&failed, false),
                t0 + Duration::from_secs(500),
                4,
                4
            ),
            "unit  test  failed     1m30s  attempt 2  script_failure: the script exited with code 2"
        );
        assert_eq!(mark(&failed), Some(("✘", "bad")));
        assert_eq!(mark(&running), None);
    }

    #[test]
    fn a_job_waiting_for_its_resource_group_says_so() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let pending = job(JobStatus::Pending, Vec::new());
        assert_eq!(status_text(&pending, false), "pending");
        assert_eq!(status_text(&pending, true), "waiting for resource");
        assert_eq!(
            row("deploy", "prod", (&pending, true), t0, 6, 4),
            "deploy  prod  waiting for resource"
        );
        // Only a pending job waits; a running one holds the group.
        let running = job(JobStatus::Running, Vec::new());
        assert_eq!(status_text(&running, true), "running");
    }

    #[test]
    fn the_plain_lines_show_a_wait_for_resource_and_its_end() {
        use berth_ci::exec::state::{AllowFailure, JobNode, Pipeline, RetryPolicy, When};
        let yaml = "deploy:\n  resource_group: prod\n  script: [x]\n";
        let (config, _) = berth_ci::Config::parse(yaml, &berth_ci::ParseOptions::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let context = berth_ci::Context {
            project_name: "p".into(),
            project_dir: "/p".into(),
            commit_sha: "0".repeat(40),
            ref_name: "main".into(),
            ref_is_tag: false,
            default_branch: "main".into(),
            pipeline_id: 1,
            source: berth_ci::PipelineSource::Push,
            changed_files: None,
            secrets: Vec::new(),
            ..Default::default()
        };
        let plan = config
            .plan(&context, &berth_ci::MemoryRepository::default())
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a plan"));
        let mut state = Pipeline::new(vec![JobNode {
            name: "deploy".into(),
            stage: 0,
            needs: None,
            when: When::OnSuccess,
            allow_failure: AllowFailure::no(),
            retry: RetryPolicy::default(),
        }])
        .unwrap_or_else(|e| panic!("{e}"));
        state.advance(SystemTime::UNIX_EPOCH);
        let mut record = PipelineRecord {
            id: 1,
            project: "p".into(),
            sha: "0".repeat(40),
            ref_name: "main".into(),
            source: "push".into(),
            token: "t".into(),
            created_ms: 0,
            finished_ms: None,
            plan,
            state,
            masked_values: Vec::new(),
            agents: vec![String::new()],
            kill_reasons: vec![None],
            repository: "/p".into(),
            branch: true,
            auto_canceled_by: None,
            waiting_for_resource: vec![true],
            attempt_agents: Default::default(),
            expired: Default::default(),
            reports: Default::default(),
            family: Default::default(),
            stuck: Vec::new(),
        };
        let mut progress = Progress::new(Mode {
            bars: false,
            lines: true,
        });
        let waiting = progress.changed_lines(&record);
        assert_eq!(waiting.len(), 1);
        assert!(
            waiting[0].starts_with("  waiting for resource deploy"),
            "{waiting:?}"
        );
        assert!(progress.changed_lines(&record).is_empty(), "no change");
        // The group is free: the job is pending for an offer now.
        record.waiting_for_resource = vec![false];
        let pending = progress.changed_lines(&record);
        assert_eq!(pending.len(), 1);
        assert!(pending[0].starts_with("  pending    deploy"), "{pending:?}");
        // No agent has its tags: stuck, and why.
        record.stuck = vec![Some(
            "This job is stuck because no agent has the tags [gpu]".into(),
        )];
        let stuck = progress.changed_lines(&record);
        assert_eq!(stuck.len(), 1);
        assert!(
            stuck[0].starts_with("  stuck      deploy") && stuck[0].ends_with("the tags [gpu]"),
            "{stuck:?}"
        );
        // A trigger job's line names its child and the child's status;
        // a child's lines are indented under its number.
        record.stuck = Vec::new();
        record.state.started(0, "", SystemTime::UNIX_EPOCH).unwrap();
        record
            .family
            .children
            .push(berth_ci::exec::record::ChildLink {
                job: 0,
                attempt: 1,
                pipeline: 2,
            });
        progress.set_child_status(2, berth_ci::exec::state::PipelineStatus::Running);
        let running = progress.changed_lines(&record);
        assert!(
            running[0].ends_with("-> child pipeline #2: running"),
            "{running:?}"
        );
        progress.set_child_status(2, berth_ci::exec::state::PipelineStatus::Failed);
        let failed = progress.changed_lines(&record);
        assert!(
            failed[0].ends_with("-> child pipeline #2: failed"),
            "{failed:?}"
        );
        let mut child = Progress::child(2);
        let lines = child.child_lines(&record);
        assert!(lines[0].starts_with("  #2  running"), "{lines:?}");
    }
}
