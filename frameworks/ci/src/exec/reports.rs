//! Reading what a job reported, once it ended: the dotenv and JUnit files
//! its task uploaded (`reports/<pipeline>/<kind>/<job>.tar.gz`, see
//! [`super::files`]) when the terminal update arrives — before the
//! pipeline advances, so the next jobs' tasks carry the dotenv variables —
//! and the coverage in its log once the log is whole. The results go into
//! the pipeline's record ([`PipelineRecord::reports`]); the parsing is
//! [`crate::reports`]'. Every problem is a notice kept with the job, never
//! silence and never an error of the pipeline.

use std::io::Read as _;
use std::path::Path;

use berth_sdk::proto as pb;

use super::files::{FileStore, ReportKind};
use super::record::PipelineRecord;
use crate::reports::{
    self, JobReports, MAX_DOTENV_BYTES, MAX_JUNIT_BYTES, TestSummary, parse_dotenv, parse_junit,
};

/// The most files of one kind read from one job's reports.
const MAX_REPORT_FILES: usize = 100;

/// Reads (and then deletes) the reports job `j`'s attempt `attempt`
/// uploaded; `outputs` are the upload results of its terminal update.
/// Blocking (file IO).
pub(crate) fn read_reports(
    files: &FileStore,
    rec: &PipelineRecord,
    j: usize,
    attempt: usize,
    outputs: &[pb::OutputResult],
) -> Option<JobReports> {
    let job = rec.plan.jobs.get(j)?;
    let artifacts = job.artifacts.as_ref()?;
    if artifacts.dotenv.is_empty() && artifacts.junit.is_empty() {
        return None;
    }
    let mut out = JobReports {
        attempt,
        ..JobReports::default()
    };
    for (kind, paths) in [
        (ReportKind::Dotenv, &artifacts.dotenv),
        (ReportKind::Junit, &artifacts.junit),
    ] {
        if paths.is_empty() {
            continue;
        }
        let what = kind.output_name();
        let Ok(archive) = files.report(rec.id, kind, &job.name) else {
            continue;
        };
        match outputs.iter().find(|o| o.name == what) {
            Some(o) if o.ok => {}
            Some(o) => {
                out.notices.push(format!(
                    "{what}: nothing read ({}: {})",
                    paths.join(", "),
                    reports::cut(&o.error, 200)
                ));
                let _ = std::fs::remove_file(&archive);
                continue;
            }
            None => {
                out.notices
                    .push(format!("{what}: nothing read (the agent uploaded nothing)"));
                continue;
            }
        }
        let limit = match kind {
            ReportKind::Dotenv => MAX_DOTENV_BYTES,
            ReportKind::Junit => MAX_JUNIT_BYTES,
        };
        let read = read_archive(&archive, limit, &rec.project);
        let _ = std::fs::remove_file(&archive);
        let entries = match read {
            Ok(entries) => entries,
            Err(e) => {
                out.notices.push(format!("{what}: cannot read the upload: {e}"));
                continue;
            }
        };
        for (name, bytes) in entries {
            let Some(bytes) = bytes else {
                out.notices.push(format!(
                    "{what} {name}: over the limit of {limit} bytes; not read"
                ));
                continue;
            };
            match kind {
                ReportKind::Dotenv => out
                    .notices
                    .extend(parse_dotenv(&name, &bytes, &mut out.dotenv)),
                ReportKind::Junit => match parse_junit(&bytes) {
                    Ok(summary) => out
                        .tests
                        .get_or_insert_with(TestSummary::default)
                        .add(&summary),
                    Err(e) => out.notices.push(format!("{what} {name}: {e}; not counted")),
                },
            }
        }
    }
    Some(out)
}

/// The regular files of a tar.gz, by their path under `project/`, in
/// archive order; a file over `limit` bytes has no contents.
fn read_archive(
    path: &Path,
    limit: usize,
    project: &str,
) -> std::io::Result<Vec<(String, Option<Vec<u8>>)>> {
    let file = std::fs::File::open(path)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if out.len() >= MAX_REPORT_FILES {
            break;
        }
        let name = entry.path()?.display().to_string();
        let name = name
            .strip_prefix(&format!("{project}/"))
            .unwrap_or(&name)
            .to_string();
        let mut bytes = Vec::new();
        entry.take(limit as u64 + 1).read_to_end(&mut bytes)?;
        out.push((name, (bytes.len() <= limit).then_some(bytes)));
    }
    Ok(out)
}

/// The coverage of job `j`'s attempt `attempt` from its whole log, into
/// its reports; whether the record changed. Blocking (reads the log, at
/// most `max_bytes` of its end).
pub(crate) fn search_coverage(
    rec: &mut PipelineRecord,
    data_dir: &Path,
    j: usize,
    attempt: usize,
    max_bytes: u64,
) -> bool {
    let Some(regex) = rec.plan.jobs.get(j).and_then(|job| job.coverage.clone()) else {
        return false;
    };
    let ended = rec
        .state
        .job(j)
        .is_some_and(|s| s.attempts.len() == attempt && s.attempts[attempt - 1].end.is_some());
    if !ended {
        return false;
    }
    let entry = rec.reports.entry(j).or_default();
    if entry.attempt != attempt {
        *entry = JobReports {
            attempt,
            ..JobReports::default()
        };
    }
    if entry.coverage_searched {
        return false;
    }
    entry.coverage_searched = true;
    let Ok(compiled) = reports::parse_coverage_regex(&regex) else {
        // Checked at lint time; a record from elsewhere says so.
        entry
            .notices
            .push(format!("coverage: {regex:?} is not a valid regular expression"));
        return true;
    };
    let path = PipelineRecord::log_path(data_dir, rec.id, j, attempt);
    match tail(&path, max_bytes) {
        Ok(log) => entry.coverage = reports::coverage_of(&compiled, &log),
        Err(e) => entry
            .notices
            .push(format!("coverage: cannot read the log {}: {e}", path.display())),
    }
    true
}

/// The last `max` bytes of a file, as text.
fn tail(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::{Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        file.seek(SeekFrom::Start(len - max))?;
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
