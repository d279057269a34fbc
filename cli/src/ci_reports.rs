//! What `berth ci show` and `berth ci run` say about a pipeline's reports
//! (test results, coverage, report notices), and `berth ci environments`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_ci::exec::api::PipelineView;
use berth_ci::exec::environments::EnvironmentView;
use berth_ci::reports::TestSummary;

use crate::ci_client::{ServerOpts, encode, json, request};

/// A coverage percentage as GitLab shows it: `83%`, `71.25%`.
pub(crate) fn percent(coverage: f64) -> String {
    if coverage.fract() == 0.0 {
        format!("{coverage:.0}%")
    } else {
        format!("{coverage:.2}%")
    }
}

/// `Tests: 12 passed, 1 failed, 2 skipped` and one line per failed test
/// kept (`  FAILED name: message`), indented by `indent`.
fn test_lines(tests: &TestSummary, indent: &str) -> Vec<String> {
    let mut out = vec![format!("{indent}Tests: {}", tests.counts_line())];
    for f in &tests.failures {
        let what = if f.errored { "ERRORED" } else { "FAILED" };
        if f.message.is_empty() {
            out.push(format!("{indent}  {what} {}", f.name));
        } else {
            out.push(format!("{indent}  {what} {}: {}", f.name, f.message));
        }
    }
    let more = tests.failures_not_kept();
    if more > 0 {
        out.push(format!("{indent}  … and {more} more failed tests"));
    }
    out
}

/// The lines about a pipeline's reports: per job (tests, coverage,
/// notices), then the pipeline's totals. Empty when no job reports
/// anything.
pub(crate) fn report_lines(view: &PipelineView) -> Vec<String> {
    let mut out = Vec::new();
    for job in &view.jobs {
        let mut head = Vec::new();
        if let Some(c) = job.coverage {
            head.push(format!("coverage {}", percent(c)));
        }
        if !job.dotenv.is_empty() {
            head.push(format!("dotenv {}", job.dotenv.join(", ")));
        }
        if head.is_empty() && job.tests.is_none() && job.report_notices.is_empty() {
            continue;
        }
        out.push(
            format!("{}: {}", job.name, head.join("; "))
                .trim_end_matches(": ")
                .to_string(),
        );
        if let Some(t) = &job.tests {
            out.extend(test_lines(t, "  "));
        }
        for n in &job.report_notices {
            out.push(format!("  notice: {n}"));
        }
    }
    if let Some(t) = &view.tests {
        out.extend(test_lines(t, ""));
    }
    if let Some(c) = view.coverage {
        out.push(format!("Coverage: {}", percent(c)));
    }
    out
}

/// How long ago `ms` (since the epoch) was.
fn ago(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    match SystemTime::now().duration_since(at) {
        Ok(d) => format!("{} ago", crate::ci_progress::elapsed_text(d)),
        Err(_) => "just now".into(),
    }
}

/// `berth ci environments`.
pub(crate) async fn environments(opts: &ServerOpts) -> anyhow::Result<()> {
    let all: Vec<EnvironmentView> = json(request(opts, "GET", "/ci/v1/environments", None).await?)?;
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(());
    }
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|e| {
            let d = e.last_deployment.as_ref();
            vec![
                e.name.clone(),
                e.project.clone(),
                e.state.clone(),
                d.map_or_else(dash, |d| format!("#{}", d.pipeline)),
                d.map_or_else(dash, |d| d.job.clone()),
                d.map_or_else(dash, |d| d.ref_name.clone()),
                d.map_or_else(dash, |d| d.sha.get(..8).unwrap_or(&d.sha).to_string()),
                d.map_or_else(dash, |d| ago(d.finished_ms)),
                d.and_then(|d| d.url.clone()).unwrap_or_else(dash),
            ]
        })
        .collect();
    out!(
        "{}",
        crate::table::render(
            &[
                "NAME", "PROJECT", "STATE", "PIPELINE", "JOB", "REF", "COMMIT", "DEPLOYED", "URL"
            ],
            &rows
        )
    )?;
    Ok(())
}

/// `berth ci environments stop NAME`.
pub(crate) async fn stop_environment(
    opts: &ServerOpts,
    name: &str,
    project: Option<&str>,
) -> anyhow::Result<()> {
    let mut path = format!("/ci/v1/environments/{}/stop", encode(name));
    if let Some(p) = project {
        path.push_str(&format!("?project={}", encode(p)));
    }
    let view: PipelineView = json(request(opts, "POST", &path, None).await?)?;
    if opts.json {
        outln!("{}", serde_json::to_string_pretty(&view)?)?;
    } else {
        outln!(
            "stopping {name}: pipeline #{} is {}",
            view.summary.id,
            view.summary.status
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_read_as_gitlab_shows_them() {
        assert_eq!(percent(83.0), "83%");
        assert_eq!(percent(71.25), "71.25%");
    }

    #[test]
    fn test_lines_name_the_failures() {
        let t = TestSummary {
            total: 4,
            passed: 2,
            failed: 1,
            errored: 0,
            skipped: 1,
            failures: vec![berth_ci::reports::FailedTest {
                name: "math.divides".into(),
                message: "expected 2".into(),
                errored: false,
            }],
        };
        let lines = test_lines(&t, "");
        assert_eq!(lines[0], "Tests: 2 passed, 1 failed, 1 skipped");
        assert_eq!(lines[1], "  FAILED math.divides: expected 2");
    }
}
