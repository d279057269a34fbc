//! The runner's side of job reports (see [`crate::exec::reports`]): read
//! the uploaded reports when a job's attempt ends, and search the
//! coverage once its log is whole.

use berth_sdk::proto as pb;
use tracing::warn;

use super::super::record::parse_task_id;
use super::super::reports::{read_reports, search_coverage};
use super::RunError;
use super::framework::CiFramework;

/// How much of a log's end the coverage is searched in.
const MAX_COVERAGE_LOG_BYTES: u64 = 64 * 1024 * 1024;

impl CiFramework {
    /// Reads the reports job `j`'s attempt `attempt` of pipeline `p`
    /// uploaded (its terminal update's `outputs`) into the record; the
    /// caller stores it.
    pub(super) async fn take_reports(
        &mut self,
        p: u64,
        j: usize,
        attempt: usize,
        outputs: &[pb::OutputResult],
    ) {
        let Some(rec) = self.pipelines.get(&p) else {
            return;
        };
        let wants = rec
            .plan
            .jobs
            .get(j)
            .and_then(|job| job.artifacts.as_ref())
            .is_some_and(|a| !a.dotenv.is_empty() || !a.junit.is_empty());
        if !wants {
            return;
        }
        let (files, rec, outputs) = (self.files.clone(), rec.clone(), outputs.to_vec());
        let read =
            tokio::task::spawn_blocking(move || read_reports(&files, &rec, j, attempt, &outputs))
                .await;
        match read {
            Ok(Some(reports)) => {
                if let Some(rec) = self.pipelines.get_mut(&p) {
                    rec.reports.insert(j, reports);
                }
            }
            Ok(None) => {}
            Err(e) => warn!(
                pipeline = p,
                job = j,
                "reading the job's reports failed: {e}"
            ),
        }
    }

    /// Searches the coverage of the jobs whose log collections `tasks`
    /// ended, and stores the pipelines that changed.
    pub(super) async fn search_coverage(&mut self, tasks: &[String]) -> Result<(), RunError> {
        for task in tasks {
            let Some((p, j, attempt)) = parse_task_id(task) else {
                continue;
            };
            let Some(rec) = self.pipelines.get(&p) else {
                continue;
            };
            if rec
                .plan
                .jobs
                .get(j)
                .is_none_or(|job| job.coverage.is_none())
            {
                continue;
            }
            let (mut copy, dir) = (rec.clone(), self.config.data_dir.clone());
            let searched = tokio::task::spawn_blocking(move || {
                search_coverage(&mut copy, &dir, j, attempt, MAX_COVERAGE_LOG_BYTES).then_some(copy)
            })
            .await;
            if let Ok(Some(copy)) = searched
                && let Some(rec) = self.pipelines.get_mut(&p)
            {
                rec.reports = copy.reports;
                self.persist(p).await?;
            }
        }
        Ok(())
    }
}
