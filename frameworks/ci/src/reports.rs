//! What a job reports besides its status, parsed from the files it
//! uploads and from its log: `artifacts:reports:dotenv` variables
//! ([`parse_dotenv`]), `artifacts:reports:junit` test results
//! ([`parse_junit`], summed in a [`TestSummary`]) and the `coverage:`
//! percentage ([`coverage_of`]). Pure: bytes in, typed results and
//! notices out; the executor reads the files and stores the results with
//! the job's record ([`JobReports`]).
//!
//! Bounded everywhere: files over a size limit are refused with a notice,
//! the variables, failed tests and messages kept are capped, and bad input
//! gives a notice, never a panic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod coverage;
mod dotenv;
mod junit;

pub use coverage::{CoverageRegex, coverage_of, parse_coverage_regex, pipeline_coverage};
pub use dotenv::{MAX_DOTENV_BYTES, MAX_DOTENV_VARIABLES, parse_dotenv};
pub use junit::{MAX_FAILED_KEPT, MAX_JUNIT_BYTES, MAX_MESSAGE_CHARS, parse_junit};

/// What the latest attempt of a job reported (stored with the pipeline).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobReports {
    /// The attempt (from 1) these are from.
    #[serde(default)]
    pub attempt: usize,
    /// Its `reports:dotenv` variables, for the jobs that download its
    /// artifacts.
    #[serde(default)]
    pub dotenv: BTreeMap<String, String>,
    /// Its `reports:junit` results (None: no report was read).
    #[serde(default)]
    pub tests: Option<TestSummary>,
    /// The `coverage:` percentage found in its log.
    #[serde(default)]
    pub coverage: Option<f64>,
    /// The log was searched for the coverage (whether or not it was
    /// found): the coverage is final.
    #[serde(default)]
    pub coverage_searched: bool,
    /// What went wrong reading the reports (a bad dotenv line, a broken
    /// JUnit file), one line each.
    #[serde(default)]
    pub notices: Vec<String>,
}

/// Test results: one job's, or a pipeline's (summed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSummary {
    /// Test cases.
    pub total: u64,
    /// Passed.
    pub passed: u64,
    /// With a `<failure>`.
    pub failed: u64,
    /// With an `<error>`.
    pub errored: u64,
    /// With `<skipped>`.
    pub skipped: u64,
    /// The failed and errored tests (at most [`MAX_FAILED_KEPT`]).
    pub failures: Vec<FailedTest>,
}

/// A failed or errored test case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTest {
    /// `classname.name` (or the name alone).
    pub name: String,
    /// Its failure's message (cut to [`MAX_MESSAGE_CHARS`]).
    pub message: String,
    /// An `<error>` rather than a `<failure>`.
    #[serde(default)]
    pub errored: bool,
}

impl TestSummary {
    /// Adds `other`'s counts and failures (failures capped).
    pub fn add(&mut self, other: &TestSummary) {
        self.total += other.total;
        self.passed += other.passed;
        self.failed += other.failed;
        self.errored += other.errored;
        self.skipped += other.skipped;
        let room = MAX_FAILED_KEPT.saturating_sub(self.failures.len());
        self.failures
            .extend(other.failures.iter().take(room).cloned());
    }

    /// `12 passed, 1 failed, 2 skipped` (errored only when there are).
    pub fn counts_line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.errored > 0 {
            line.push_str(&format!(", {} errored", self.errored));
        }
        line.push_str(&format!(", {} skipped", self.skipped));
        line
    }

    /// Failed and errored tests that are not among [`Self::failures`].
    pub fn failures_not_kept(&self) -> u64 {
        (self.failed + self.errored).saturating_sub(self.failures.len() as u64)
    }
}

/// The sum of some jobs' test results; None when none has any.
pub fn pipeline_tests<'a>(jobs: impl IntoIterator<Item = &'a TestSummary>) -> Option<TestSummary> {
    let mut sum: Option<TestSummary> = None;
    for t in jobs {
        sum.get_or_insert_with(TestSummary::default).add(t);
    }
    sum
}
