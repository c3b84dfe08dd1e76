//! Jobs that run outside the controller's process, under a scheduler (Slurm):
//! the record of each in the ledger ([`ExecutorJob`]), how an executor tells
//! the loop about it while it runs ([`JobJournal`]), and the checkouts such
//! an executor runs its jobs in ([`Checkouts`]).
//!
//! A job handed to a scheduler outlives the controller that submitted it.
//! Its id is therefore recorded in the ledger as soon as it exists, so that
//! the next controller finds it ([`crate::Executor::adopt`]) instead of
//! losing it or submitting it again.

use crate::exec::Job;
use crate::vocab::JobState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One job handed to a scheduler, stored as component `ExecutorJob` on an
/// entity of its own (several jobs per run, joined by `run_id`). Updated
/// in place as the job moves: submitted (`pending`), `running`, and a final
/// state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorJob {
    /// The run the job belongs to.
    pub run_id: String,
    /// The step of the run ([`Job::step`]: `propose`, `evaluate-0`, ...).
    pub step: String,
    /// The executor's name (`slurm`).
    pub executor: String,
    /// The scheduler's id for the job (Slurm: `1234`, or `1234_0` for an
    /// element of an array).
    pub job_id: String,
    /// Where the job is.
    pub state: JobState,
    /// Why it is in that state (the scheduler's reason, an exit code), in
    /// one line for people; may be empty.
    pub reason: String,
    /// The job's standard output file, which outlives the controller.
    pub stdout_log: String,
    /// The job's standard error file.
    pub stderr_log: String,
    /// When the record last changed, in Unix milliseconds.
    pub at_ms: i64,
}

impl ExecutorJob {
    /// Whether the job will not change state again.
    pub fn is_final(&self) -> bool {
        self.state.is_final()
    }
}

/// Where an executor reports the jobs it hands to a scheduler, as they
/// change: the loop stores each record in the ledger (one tick per call,
/// keyed by [`ExecutorJob::job_id`]). Called from the executor's task; must
/// not block (the loop's implementation queues the record).
pub trait JobJournal: Send + Sync {
    /// Records the job's current state.
    fn record(&self, job: &ExecutorJob);
}

/// A journal that forgets everything (for callers without a ledger).
pub struct NoJournal;

impl JobJournal for NoJournal {
    fn record(&self, _job: &ExecutorJob) {}
}

/// What a job with [`Job::commit_changes`] left in its checkout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    /// The checkout's tree as the single child of [`Job::commit`] (that
    /// commit itself when nothing changed), in [`Job::repo`]'s object store.
    pub commit: String,
    /// Paths that differ from [`Job::commit`] (exact).
    pub changed_paths: Vec<String>,
    /// Ignored files left in the checkout, not part of the candidate.
    pub left_out: Vec<String>,
}

/// A checkout that could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("{doing} in {}: {reason}", checkout.display())]
pub struct CheckoutError {
    /// What was being done (checking out a commit, building the candidate).
    pub doing: String,
    /// The checkout (or the directory of checkouts).
    pub checkout: PathBuf,
    /// What went wrong, in one line for people.
    pub reason: String,
}

/// The checkouts of an executor that runs commands elsewhere (on the nodes
/// of a cluster) but on files this process reaches (a shared filesystem):
/// a run's checkout is made exactly its job's commit before each job, and
/// after a proposer its tree becomes the candidate. Every method is
/// blocking (git); call them off the async executor's threads.
pub trait Checkouts: Send + Sync {
    /// The directory that holds every checkout (jobs' git stops there).
    fn root(&self) -> PathBuf;

    /// Makes the run's checkout (taking one when the run holds none) a
    /// clean checkout of [`Job::commit`]: nothing untracked or ignored, a
    /// fresh `.git`. Returns its root.
    fn prepare(&self, job: &Job) -> Result<PathBuf, CheckoutError>;

    /// The candidate a job with [`Job::commit_changes`] left in `checkout`;
    /// `stdout` is the tail of the job's standard output (a `description:`
    /// line there names the candidate when the proposer did not commit).
    fn candidate(
        &self,
        job: &Job,
        checkout: &Path,
        stdout: &str,
    ) -> Result<Candidate, CheckoutError>;

    /// Gives the run's checkout back for another run. Idempotent.
    fn release(&self, run_id: &str);

    /// Removes every checkout this process holds no longer.
    fn close(&self) -> Result<(), CheckoutError>;
}
