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
    /// Runs a job unless a kill is requested first (then the job's future is
    /// dropped, which kills it).
    pub(super) async fn exec(&self, job: Job) -> Result<JobEnd, LoopError> {
        let executor = self.executor.clone();
        let end = self
            .watch(move |journal| async move { executor.run_journaled(job, journal).await })
            .await?;
        Ok(match end {
            Some(report) => JobEnd::Report(Box::new(report)),
            None => JobEnd::Interrupted,
        })
    }

    /// Runs `jobs` together ([`Executor::run_batch_journaled`]: at once
    /// where the executor can) unless a kill is requested first; their
    /// reports in order, `None` when interrupted.
    pub(super) async fn exec_batch(
        &self,
        jobs: Vec<Job>,
    ) -> Result<Option<Vec<JobReport>>, LoopError> {
        let executor = self.executor.clone();
        self.watch(move |journal| async move { executor.run_batch_journaled(jobs, journal).await })
            .await
    }

    /// Starts what `start` returns with a journal whose records are stored
    /// as they come, and waits for it unless a kill is requested first
    /// (then the future is dropped, which stops its jobs): `None`.
    async fn watch<T, F>(
        &self,
        start: impl FnOnce(Arc<dyn JobJournal>) -> F,
    ) -> Result<Option<T>, LoopError>
    where
        F: Future<Output = Result<T, ExecError>>,
    {
        // A job acts outside this process: what led to it is durable first.
        self.ledger.flush().await?;
        let mut rx = self.shutdown.subscribe();
        if *rx.borrow() >= Shutdown::KILL {
            return Ok(None);
        }
        // Jobs the executor hands to a scheduler are recorded as they go
        // (their ids outlive this process).
        let (journal, mut records) = mpsc::unbounded_channel();
        // Boxed, so that `drop` below drops the jobs themselves (a pinned
        // borrow would not).
        let mut run = Box::pin(start(Arc::new(QueuedJournal(journal))));
        let end = loop {
            let record = tokio::select! {
                r = &mut run => break Some(r?),
                _ = rx.wait_for(|l| *l >= Shutdown::KILL) => break None,
                Some(record) = records.recv() => record,
            };
            self.record_job(&record).await?;
        };
        // Dropping the jobs stops them; what the executor said on the way
        // (their last states) is recorded too.
        drop(run);
        while let Ok(record) = records.try_recv() {
            self.record_job(&record).await?;
        }
        Ok(end)
    }

    /// `count` step names `{step}-{n}` for jobs in the checkout of run
    /// `workspace`, numbered per run: never one an earlier job of the run
    /// had (whatever commit or side it measured), so that no job's logs or
    /// scheduler record are another's. The first use in this process
    /// starts above what the ledger knows of the run (its Results and its
    /// scheduler jobs).
    pub(super) async fn job_steps(&self, workspace: &str, step: &str, count: u32) -> Vec<String> {
        let seeded = self.steps_of_runs().contains_key(workspace);
        if !seeded {
            let run = workspace.to_string();
            let first = self
                .ledger
                .read(move |w| {
                    let results = w.results_for(&run).len() as u32;
                    let jobs = w
                        .find_all::<ExecutorJob>(|j| j.run_id == run)
                        .iter()
                        .filter_map(|(_, j)| j.step.rsplit_once('-')?.1.parse::<u32>().ok())
                        .map(|n| n + 1)
                        .max()
                        .unwrap_or(0);
                    results.max(jobs)
                })
                .await;
            self.steps_of_runs()
                .entry(workspace.to_string())
                .or_insert(first);
        }
        let mut steps = self.steps_of_runs();
        let next = steps.entry(workspace.to_string()).or_insert(0);
        let names = (*next..*next + count)
            .map(|n| format!("{step}-{n}"))
            .collect();
        *next += count;
        names
    }

    /// The next step number of each run (a map updated under its lock
    /// only, so a panic elsewhere cannot leave it half written).
    fn steps_of_runs(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        self.next_step.lock().unwrap_or_else(|e| e.into_inner())
    }

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

    /// The jobs a killed controller left with the scheduler (every job
    /// not final in the ledger: this controller holds the lease, so no
    /// other one watches them), handed to the executor, which waits for
    /// or cancels each; their final records are stored and returned.
    pub(super) async fn adopt_jobs(&self) -> Result<Vec<ExecutorJob>, LoopError> {
        let open: Vec<ExecutorJob> = self
            .ledger
            .read(|w| {
                w.find_all::<ExecutorJob>(|j| !j.is_final())
                    .into_iter()
                    .map(|(_, j)| j)
                    .collect()
            })
            .await;
        if open.is_empty() {
            return Ok(Vec::new());
        }
        let done = self.executor.adopt(open).await?;
        for job in &done {
            self.record_job(job).await?;
        }
        Ok(done)
    }
}
