//! `berth ci logs [-f] PIPELINE[/JOB]`: one job's log, or every job's log
//! of a pipeline; and the `PIPELINE[/JOB]` argument that `berth ci logs`
//! and `berth ci retry` take.
//!
//! One job: the latest attempt's log. With `-f` it is followed until that
//! attempt has ended; a job waiting for a new attempt (retried, or not
//! started yet) is waited for, and its new attempt followed.
//!
//! Without `-f` the logs are printed job by job in plan order, every
//! attempt of a job (oldest first) as its own section under a header line
//! `== build (stage build, attempt 1) ==`; jobs that never started have no
//! section. The pipeline's status closes the output
//! (`== pipeline #12: failed ==`).
//!
//! With `-f` the pipeline is followed until it is finished (not `running`
//! any more: passed, failed, canceled, or waiting for a manual job) and
//! every attempt's whole log has been printed. Each attempt's output is
//! printed as it arrives, as gitlab-runner does in a terminal, job by job:
//! - the first attempt to print something opens its section (header, then
//!   its bytes as they are);
//! - while a section is open, the output of the other jobs running at the
//!   same time is printed line by line, each line prefixed with
//!   `[job] ` (a line is printed once it is complete, or when its attempt
//!   ends), and such a job stays prefixed to its end;
//! - when the open section's attempt ends, the next job to print something
//!   opens a new section (the others' output waits while the rest of the
//!   ended attempt's log arrives);
//! - attempts that ended before they could be shown (when `-f` starts, or
//!   between two polls) get whole sections of their own, before the
//!   output of jobs still running.
//!
//! So a pipeline whose jobs run one at a time prints with `-f` what it
//! prints afterwards without `-f`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use berth_ci::exec::api::{JobView, PipelineView};

use crate::ci_client::{ServerOpts, encode, json, request};

/// How often a followed pipeline is read again.
const POLL: Duration = Duration::from_millis(500);

/// `PIPELINE[/JOB]`: a pipeline, or one of its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobRef {
    /// The pipeline's id.
    pub(crate) pipeline: u64,
    /// The job's name: everything after the first `/` (job names may hold
    /// `/` themselves, as `test 1/3` of a `parallel` job does).
    pub(crate) job: Option<String>,
}

/// Parses `PIPELINE[/JOB]` (clap's value parser).
pub(crate) fn parse_job_ref(text: &str) -> Result<JobRef, String> {
    const EXPECTED: &str = "expected PIPELINE or PIPELINE/JOB, e.g. 12 or 12/build";
    let (id, job) = match text.split_once('/') {
        Some((id, job)) => (id, Some(job)),
        None => (text, None),
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{id:?} is not a pipeline id (a number); {EXPECTED}"
        ));
    }
    let pipeline = id
        .parse::<u64>()
        .map_err(|_| format!("pipeline id {id} is too large; {EXPECTED}"))?;
    let job = match job {
        None => None,
        Some("") => {
            return Err(format!(
                "no job name after \"{id}/\"; {EXPECTED} (without a job: every job)"
            ));
        }
        Some(name) => Some(check_job_name(name)?.to_string()),
    };
    Ok(JobRef { pipeline, job })
}

/// A job name given on the command line: not empty, no control characters.
pub(crate) fn check_job_name(name: &str) -> Result<&str, String> {
    if name.is_empty() {
        return Err("the job name is empty".into());
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} is not a job name (control characters)"));
    }
    Ok(name)
}

/// Which attempt of a job `berth ci logs PIPELINE/JOB` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// This one (from 1).
    Attempt(usize),
    /// Following: the job waits to run (again); its next attempt.
    Wait,
    /// It never ran, and will not by itself (manual, skipped).
    Nothing,
}

/// The latest attempt; when following a job that waits to run (again),
/// the attempt to come.
fn pick(job: &JobView, follow: bool) -> Pick {
    let waiting = matches!(
        job.status.as_str(),
        "created" | "pending" | "waiting_for_resource" | "scheduled"
    );
    if follow && waiting {
        Pick::Wait
    } else if job.attempts > 0 {
        Pick::Attempt(job.attempts)
    } else {
        Pick::Nothing
    }
}

/// `berth ci logs [-f] [--full] PIPELINE/JOB`: prints the job's latest
/// log (cut at the server's limit with a line that says so, unless
/// `full`); with `follow`, keeps printing until that attempt has ended,
/// and waits for the attempt to come of a job waiting to run (again).
pub(crate) async fn job_log(
    opts: &ServerOpts,
    id: u64,
    job: &str,
    follow: bool,
    full: bool,
) -> anyhow::Result<()> {
    let full = if full { "&full=true" } else { "" };
    let attempt = loop {
        let view: PipelineView =
            json(request(opts, "GET", &format!("/ci/v1/pipelines/{id}"), None).await?)?;
        let Some(state) = view.jobs.iter().find(|j| j.name == job) else {
            // The API's words.
            bail!("pipeline {id} has no job {job:?}");
        };
        match pick(state, follow) {
            Pick::Attempt(n) => break n,
            Pick::Nothing => return Ok(()),
            Pick::Wait => tokio::time::sleep(POLL).await,
        }
    };
    let mut offset = 0usize;
    loop {
        let path = format!(
            "/ci/v1/pipelines/{id}/jobs/{}/log?attempt={attempt}&offset={offset}{full}",
            encode(job)
        );
        let reply = request(opts, "GET", &path, None).await?;
        if reply.status >= 400 {
            // `json` turns the error status into the API's message.
            return json::<serde_json::Value>(reply).map(|_| ());
        }
        offset += reply.body.len();
        {
            let mut out = crate::out::Stdout;
            out.write_all(&reply.body)?;
            out.flush()?;
        }
        // Once the attempt has ended and its log is whole, that read went
        // to its end.
        if !follow || reply.finished {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One attempt's log, as far as it was read.
#[derive(Debug, Default)]
struct Progress {
    offset: u64,
    done: bool,
}

/// `berth ci logs [-f] [--full] PIPELINE`.
pub(crate) async fn pipeline_logs(
    opts: &ServerOpts,
    id: u64,
    follow: bool,
    full: bool,
) -> anyhow::Result<()> {
    let mut printer = Printer::new(crate::out::Stdout);
    let mut progress: BTreeMap<Key, Progress> = BTreeMap::new();
    let status = loop {
        let view: PipelineView =
            json(request(opts, "GET", &format!("/ci/v1/pipelines/{id}"), None).await?)?;
        // Read before the logs: when it is finished, so are the attempts
        // listed, and the loop ends once their logs are all read.
        let finished = view.summary.status != "running";
        // The open section's attempt has ended, and the rest of its log is
        // on its way: only it is read, so that the job after it does not
        // look as if it ran at the same time.
        let hold = printer.open.filter(|&(index, attempt)| {
            view.jobs.get(index).is_some_and(|job| {
                attempt < job.attempts
                    || matches!(job.status.as_str(), "success" | "failed" | "canceled")
            })
        });
        let mut chunks = Vec::new();
        for (index, job) in view.jobs.iter().enumerate() {
            for attempt in 1..=job.attempts {
                if hold.is_some_and(|key| key != (index, attempt)) {
                    continue;
                }
                let state = progress.entry((index, attempt)).or_default();
                if state.done {
                    continue;
                }
                let path = format!(
                    "/ci/v1/pipelines/{id}/jobs/{}/log?attempt={attempt}&offset={}{}",
                    encode(&job.name),
                    state.offset,
                    if full { "&full=true" } else { "" }
                );
                let reply = request(opts, "GET", &path, None).await?;
                let data = if reply.status == 410 {
                    // Expired: say so in its section.
                    state.done = true;
                    let message = json::<serde_json::Value>(reply)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "the log expired".into());
                    format!("[berth] {message}\n").into_bytes()
                } else if reply.status >= 400 {
                    json::<serde_json::Value>(reply)?;
                    bail!("the log of job {:?} could not be read", job.name);
                } else {
                    state.offset += reply.body.len() as u64;
                    state.done = reply.finished;
                    reply.body
                };
                chunks.push(Chunk {
                    key: (index, attempt),
                    name: job.name.clone(),
                    stage: job.stage.clone(),
                    data,
                    // Without -f every attempt is one section, as far as
                    // it goes now.
                    done: state.done || !follow,
                });
            }
        }
        printer.poll(chunks)?;
        if !follow || (finished && progress.values().all(|p| p.done)) {
            break view.summary.status;
        }
        tokio::time::sleep(POLL).await;
    };
    printer.line(&format!("== pipeline #{id}: {status} =="))?;
    Ok(())
}

/// An attempt: the job's index in the plan, the attempt (from 1).
type Key = (usize, usize);

/// New bytes of one attempt's log.
#[derive(Debug, Clone)]
struct Chunk {
    key: Key,
    name: String,
    stage: String,
    data: Vec<u8>,
    /// The attempt has ended and this is the end of its log.
    done: bool,
}

/// Prints attempts' logs as sections, and the output of jobs running next
/// to the open section as prefixed lines (see the module's docs).
struct Printer<W: Write> {
    out: W,
    /// The attempt whose section is open (printed as it is).
    open: Option<Key>,
    /// Attempts printed as prefixed lines: their name and the start of a
    /// line not yet complete.
    prefixed: BTreeMap<Key, (String, Vec<u8>)>,
    /// Attempts that have printed something (or ended).
    shown: BTreeSet<Key>,
    /// The output is at the start of a line.
    line_start: bool,
}

impl<W: Write> Printer<W> {
    fn new(out: W) -> Printer<W> {
        Printer {
            out,
            open: None,
            prefixed: BTreeMap::new(),
            shown: BTreeSet::new(),
            line_start: true,
        }
    }

    /// Prints one poll's chunks: the open section's first, then attempts
    /// that ended before anything of them was shown (whole sections), then
    /// the others, in plan order.
    fn poll(&mut self, chunks: Vec<Chunk>) -> std::io::Result<()> {
        let (open, rest): (Vec<Chunk>, Vec<Chunk>) =
            chunks.into_iter().partition(|c| Some(c.key) == self.open);
        let (whole, rest): (Vec<Chunk>, Vec<Chunk>) = rest
            .into_iter()
            .partition(|c| c.done && !self.shown.contains(&c.key));
        for chunk in open.into_iter().chain(whole).chain(rest) {
            self.chunk(chunk)?;
        }
        self.out.flush()
    }

    fn chunk(&mut self, c: Chunk) -> std::io::Result<()> {
        if self.open == Some(c.key) {
            self.raw(&c.data)?;
        } else if self.prefixed.contains_key(&c.key) {
            self.prefixed_lines(c.key, &c.data)?;
        } else if c.data.is_empty() && !c.done {
            // Nothing to show yet.
            return Ok(());
        } else if self.open.is_none() {
            self.fresh_line()?;
            writeln!(
                self.out,
                "== {} (stage {}, attempt {}) ==",
                c.name, c.stage, c.key.1
            )?;
            self.open = Some(c.key);
            self.raw(&c.data)?;
        } else {
            self.prefixed.insert(c.key, (c.name.clone(), Vec::new()));
            self.prefixed_lines(c.key, &c.data)?;
        }
        self.shown.insert(c.key);
        if c.done {
            self.end(c.key)?;
        }
        Ok(())
    }

    fn raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        if let Some(&last) = data.last() {
            self.out.write_all(data)?;
            self.line_start = last == b'\n';
        }
        Ok(())
    }

    /// Starts a new line unless the output is at the start of one.
    fn fresh_line(&mut self) -> std::io::Result<()> {
        if !self.line_start {
            self.out.write_all(b"\n")?;
            self.line_start = true;
        }
        Ok(())
    }

    fn prefixed_lines(&mut self, key: Key, data: &[u8]) -> std::io::Result<()> {
        let Some((name, pending)) = self.prefixed.get_mut(&key) else {
            return Ok(());
        };
        pending.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            lines.push(pending.drain(..=end).collect::<Vec<u8>>());
        }
        let prefix = format!("[{name}] ");
        for line in lines {
            self.fresh_line()?;
            self.out.write_all(prefix.as_bytes())?;
            self.out.write_all(&line)?;
        }
        Ok(())
    }

    /// The attempt ended: its section closes, or its last partial line is
    /// printed.
    fn end(&mut self, key: Key) -> std::io::Result<()> {
        if self.open == Some(key) {
            self.fresh_line()?;
            self.open = None;
        }
        if let Some((name, rest)) = self.prefixed.remove(&key)
            && !rest.is_empty()
        {
            self.fresh_line()?;
            write!(self.out, "[{name}] ")?;
            self.out.write_all(&rest)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// A line of berth's own, on a line of its own.
    fn line(&mut self, text: &str) -> std::io::Result<()> {
        self.fresh_line()?;
        writeln!(self.out, "{text}")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(job: usize, attempt: usize, name: &str, data: &str, done: bool) -> Chunk {
        Chunk {
            key: (job, attempt),
            name: name.into(),
            stage: format!("s-{name}"),
            data: data.as_bytes().to_vec(),
            done,
        }
    }

    fn text(p: Printer<Vec<u8>>) -> String {
        String::from_utf8(p.out).expect("utf-8")
    }

    #[test]
    fn job_refs_are_a_pipeline_and_maybe_a_job() {
        let r = |p, j: Option<&str>| JobRef {
            pipeline: p,
            job: j.map(str::to_string),
        };
        assert_eq!(parse_job_ref("12"), Ok(r(12, None)));
        assert_eq!(parse_job_ref("12/build"), Ok(r(12, Some("build"))));
        // Everything after the first slash is the job.
        assert_eq!(parse_job_ref("3/test 1/3"), Ok(r(3, Some("test 1/3"))));
        assert_eq!(
            parse_job_ref("3/unit: [a, b]"),
            Ok(r(3, Some("unit: [a, b]")))
        );
        for (bad, why) in [
            ("", "\"\" is not a pipeline id"),
            ("abc", "\"abc\" is not a pipeline id"),
            ("abc/build", "\"abc\" is not a pipeline id"),
            ("-1", "\"-1\" is not a pipeline id"),
            ("+1", "\"+1\" is not a pipeline id"),
            ("/build", "\"\" is not a pipeline id"),
            ("12/", "no job name after \"12/\""),
            ("99999999999999999999", "too large"),
            ("1/a\tb", "control characters"),
        ] {
            let err = parse_job_ref(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn one_job_shows_its_latest_attempt_or_waits_for_the_next() {
        let job = |status: &str, attempts| JobView {
            name: "test".into(),
            stage: "test".into(),
            status: status.into(),
            attempts,
            failure_reason: None,
            message: String::new(),
            exit_code: None,
            allow_failure: false,
            interruptible: false,
            resource_group: None,
            artifacts_expired: false,
            log_expired: false,
            manual: false,
            waiting_for_resource: false,
            tests: None,
            coverage: None,
            dotenv: Vec::new(),
            report_notices: Vec::new(),
            environment: None,
            stuck: None,
            child_pipeline: None,
            child_status: None,
        };
        assert_eq!(pick(&job("running", 2), true), Pick::Attempt(2));
        assert_eq!(pick(&job("failed", 1), true), Pick::Attempt(1));
        // Retried: following waits for attempt 2; a look shows attempt 1.
        assert_eq!(pick(&job("pending", 1), true), Pick::Wait);
        assert_eq!(pick(&job("pending", 1), false), Pick::Attempt(1));
        assert_eq!(pick(&job("waiting_for_resource", 0), true), Pick::Wait);
        assert_eq!(pick(&job("created", 0), false), Pick::Nothing);
        assert_eq!(pick(&job("manual", 0), true), Pick::Nothing);
        assert_eq!(pick(&job("skipped", 0), true), Pick::Nothing);
    }

    #[test]
    fn attempts_one_after_another_are_sections() {
        let mut p = Printer::new(Vec::new());
        p.poll(vec![chunk(0, 1, "build", "compiling\n", false)])
            .unwrap();
        p.poll(vec![chunk(0, 1, "build", "done", true)]).unwrap();
        p.poll(vec![chunk(1, 1, "test", "ok\n", true)]).unwrap();
        p.poll(vec![chunk(1, 2, "test", "", true)]).unwrap();
        p.line("== pipeline #1: success ==").unwrap();
        assert_eq!(
            text(p),
            "== build (stage s-build, attempt 1) ==\ncompiling\ndone\n\
             == test (stage s-test, attempt 1) ==\nok\n\
             == test (stage s-test, attempt 2) ==\n\
             == pipeline #1: success ==\n"
        );
    }

    #[test]
    fn jobs_running_next_to_the_open_section_print_prefixed_lines() {
        let mut p = Printer::new(Vec::new());
        // a opens the section; b runs at the same time.
        p.poll(vec![
            chunk(0, 1, "a", "a1\n", false),
            chunk(1, 1, "b", "b1\nb2-part", false),
        ])
        .unwrap();
        p.poll(vec![
            chunk(0, 1, "a", "a2-part", false),
            chunk(1, 1, "b", "-rest\n", false),
        ])
        .unwrap();
        // a ends; b stays prefixed to its end, its last line unfinished.
        p.poll(vec![
            chunk(0, 1, "a", "\n", true),
            chunk(1, 1, "b", "b3", true),
        ])
        .unwrap();
        // The next job opens a new section.
        p.poll(vec![chunk(2, 1, "c", "c1\n", true)]).unwrap();
        assert_eq!(
            text(p),
            "== a (stage s-a, attempt 1) ==\na1\n[b] b1\na2-part\n[b] b2-part-rest\n\n[b] b3\n\
             == c (stage s-c, attempt 1) ==\nc1\n"
        );
    }

    #[test]
    fn attempts_that_ended_unseen_get_whole_sections_before_running_ones() {
        let mut p = Printer::new(Vec::new());
        // Following starts late: build ended, test-a runs, test-b ended.
        p.poll(vec![
            chunk(0, 1, "build", "built\n", true),
            chunk(1, 1, "test-a", "a1\n", false),
            chunk(2, 1, "test-b", "b1\n", true),
            chunk(3, 1, "deploy", "", false),
        ])
        .unwrap();
        p.poll(vec![chunk(1, 1, "test-a", "a2\n", true)]).unwrap();
        assert_eq!(
            text(p),
            "== build (stage s-build, attempt 1) ==\nbuilt\n\
             == test-b (stage s-test-b, attempt 1) ==\nb1\n\
             == test-a (stage s-test-a, attempt 1) ==\na1\na2\n"
        );
    }
}
