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
                    crate::diag::cut_to(&o.error, 200)
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
                out.notices
                    .push(format!("{what}: cannot read the upload: {e}"));
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
                ReportKind::Dotenv => {
                    out.notices
                        .extend(parse_dotenv(&name, &bytes, &mut out.dotenv))
                }
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
        entry.notices.push(format!(
            "coverage: {regex:?} is not a valid regular expression"
        ));
        return true;
    };
    let path = PipelineRecord::log_path(data_dir, rec.id, j, attempt);
    match tail(&path, max_bytes) {
        Ok(log) => entry.coverage = reports::coverage_of(&compiled, &log),
        Err(e) => entry.notices.push(format!(
            "coverage: cannot read the log {}: {e}",
            path.display()
        )),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::exec::runner::tests::record;

    const YAML: &str = "stages: [build, test]
build:
  stage: build
  script: [x]
  coverage: '/TOTAL.*\\s+(\\d+%)$/'
  artifacts:
    reports:
      dotenv: build.env
      junit: out/*.xml
other:
  stage: build
  script: [x]
test:
  stage: test
  variables: {VERSION: yaml, KEEP: yaml}
  script: [x]
alone:
  stage: test
  needs: [other]
  script: [x]
";

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, *data)
                .expect("append");
        }
        builder.into_inner().expect("tar").finish().expect("gzip")
    }

    fn ok(name: &str) -> pb::OutputResult {
        pb::OutputResult {
            name: name.into(),
            ok: true,
            ..Default::default()
        }
    }

    #[test]
    fn uploaded_reports_are_read_and_passed_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = FileStore::new(dir.path(), 1 << 20).expect("store");
        let mut rec = record(YAML);
        let dotenv = files.report(1, ReportKind::Dotenv, "build").expect("path");
        std::fs::create_dir_all(dotenv.parent().expect("dir")).expect("mkdir");
        std::fs::write(
            &dotenv,
            tar_gz(&[("demo/build.env", b"VERSION=1.2.3\nbad line\n")]),
        )
        .expect("write");
        let junit = files.report(1, ReportKind::Junit, "build").expect("path");
        std::fs::create_dir_all(junit.parent().expect("dir")).expect("mkdir");
        std::fs::write(
            &junit,
            tar_gz(&[
                (
                    "demo/out/a.xml",
                    b"<testsuite><testcase name='a'/><testcase name='b'><failure message='no'/></testcase></testsuite>",
                ),
                ("demo/out/b.xml", b"<testsuite><testcase"),
            ]),
        )
        .expect("write");
        let outputs = [ok("reports:dotenv"), ok("reports:junit")];
        let reports = read_reports(&files, &rec, 0, 1, &outputs).expect("reports");
        assert_eq!(reports.attempt, 1);
        assert_eq!(
            reports.dotenv,
            BTreeMap::from([("VERSION".into(), "1.2.3".into())])
        );
        let tests = reports.tests.as_ref().expect("tests");
        assert_eq!((tests.total, tests.passed, tests.failed), (2, 1, 1));
        assert_eq!(reports.notices.len(), 2, "{:?}", reports.notices);
        assert!(reports.notices[0].contains("build.env line 2"));
        assert!(reports.notices[1].contains("out/b.xml"));
        // Read once: the uploads are gone.
        assert!(!dotenv.exists() && !junit.exists());

        rec.reports.insert(0, reports);
        // A later stage gets it, over its own YAML variable; a job that
        // needs another job only does not.
        let test = rec
            .plan
            .jobs
            .iter()
            .position(|j| j.name == "test")
            .expect("test");
        let alone = rec
            .plan
            .jobs
            .iter()
            .position(|j| j.name == "alone")
            .expect("alone");
        assert_eq!(rec.dotenv_for(test)["VERSION"], "1.2.3");
        assert!(rec.dotenv_for(alone).is_empty());
        // Pipeline variables win over dotenv ones.
        rec.family.pipeline_variables = vec![crate::exec::record::PassedVariable {
            name: "VERSION".into(),
            value: "9".into(),
            masked: false,
        }];
        assert!(rec.dotenv_for(test).is_empty());
    }

    #[test]
    fn missing_uploads_are_notices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = FileStore::new(dir.path(), 1 << 20).expect("store");
        let rec = record(YAML);
        let outputs = [pb::OutputResult {
            name: "reports:dotenv".into(),
            ok: false,
            error: "no files matched".into(),
            ..Default::default()
        }];
        let reports = read_reports(&files, &rec, 0, 1, &outputs).expect("reports");
        assert!(reports.dotenv.is_empty() && reports.tests.is_none());
        assert!(
            reports.notices[0].contains("build.env: no files matched"),
            "{:?}",
            reports.notices
        );
        assert!(reports.notices[1].contains("reports:junit: nothing read"));
    }

    #[test]
    fn coverage_is_searched_once_the_attempt_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rec = record(YAML);
        let path = PipelineRecord::log_path(dir.path(), 1, 0, 1);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, "TOTAL 1 2 50%\nTOTAL 3 4 83%\n").expect("write");
        // Not started: nothing to search.
        assert!(!search_coverage(&mut rec, dir.path(), 0, 1, 1 << 20));
        let t = std::time::SystemTime::UNIX_EPOCH;
        rec.state.started(0, "task", t).expect("starts");
        assert!(!search_coverage(&mut rec, dir.path(), 0, 1, 1 << 20));
        rec.state
            .finished(0, crate::exec::state::JobEnd::success(), t)
            .expect("ends");
        assert!(search_coverage(&mut rec, dir.path(), 0, 1, 1 << 20));
        assert_eq!(rec.reports[&0].coverage, Some(83.0));
        assert!(rec.reports[&0].coverage_searched);
        // Once.
        assert!(!search_coverage(&mut rec, dir.path(), 0, 1, 1 << 20));
    }
}
