//! Jobs handed to a scheduler: each [`ExecutorJob`] the executor reports
//! becomes a durable tick (one entity per job id, updated in place), and
//! at recovery the jobs a killed controller left are handed back to the
//! executor ([`Executor::adopt`]) before their runs are finished.

use super::*;
use autoresearch_core::jobs::{ExecutorJob, JobJournal};
use tokio::sync::mpsc;

/// The journal the loop hands the executor: records are queued, and the
/// job's caller writes them ([`Controller::exec`]).
pub(super) struct QueuedJournal(pub(super) mpsc::UnboundedSender<ExecutorJob>);

impl JobJournal for QueuedJournal {
    fn record(&self, job: &ExecutorJob) {
        // The receiver lives as long as the job's caller; a record sent
        // after it is gone has nowhere to go.
        let _ = self.0.send(job.clone());
    }
}

impl Controller {
    /// Stores `job` as one durable tick: a new entity for a job id not seen
    /// yet, else the job's entity updated.
    pub(super) async fn record_job(&self, job: &ExecutorJob) -> Result<(), LoopError> {
        self.ledger
            .tick("recording a scheduler job", |w| {
                let known = w
                    .find::<ExecutorJob>(|j| j.job_id == job.job_id && j.executor == job.executor)
                    .map(|(e, _)| e);
                let entity = match known {
                    Some(e) => e,
                    None => w.spawn()?,
                };
                w.insert(entity, job)
            })
            .await
    }

    /// The jobs of runs in flight a killed controller left with the
    /// scheduler, handed to the executor, which waits for or cancels each;
    /// their final records are stored. Returns how many it adopted.
    pub(super) async fn adopt_jobs(&self, runs: &[String]) -> Result<usize, LoopError> {
        let open: Vec<ExecutorJob> = self
            .ledger
            .read(|w| {
                w.find_all::<ExecutorJob>(|j| !j.is_final() && runs.contains(&j.run_id))
                    .into_iter()
                    .map(|(_, j)| j)
                    .collect()
            })
            .await;
        if open.is_empty() {
            return Ok(0);
        }
        let n = open.len();
        let done = self.executor.adopt(open).await?;
        for job in &done {
            self.record_job(job).await?;
        }
        Ok(n)
    }
}
