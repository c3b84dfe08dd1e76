//! The execution interface: how the loop runs a proposer or an evaluator
//! without knowing where. A [`Job`] names the repository, the commit to check
//! out, the command, its [`Limits`] and environment; an [`Executor`] runs it
//! (in a local git worktree, on another machine, through a cluster scheduler)
//! and answers with a [`JobReport`]: exit status, the output metrics are read
//! from, bounded log tails, log locations, duration and the commit it produced.
//!
//! Cancellation is by drop: dropping the future returned by
//! [`Executor::run`] must stop the job (kill its processes, cancel the remote
//! job) before or soon after the drop returns.

use crate::jobs::{ExecutorJob, JobJournal};
use crate::metrics::{MetricReading, MetricSpec};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a job may take and how much of its output is kept in memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock limit; on expiry the whole job is killed.
    pub timeout: Duration,
    /// Bytes of each output stream kept in memory (the tails in [`JobReport`])
    /// and in the ledger; full logs stay where [`JobReport::stdout_log`] says.
    /// A storage limit only: metrics are read from the whole output
    /// ([`Job::metrics`]).
    pub output_limit: usize,
    /// After a polite stop (SIGTERM), how long to wait before killing outright.
    pub kill_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30 * 60),
            output_limit: 64 * 1024,
            kill_grace: Duration::from_secs(2),
        }
    }
}

/// Where the job's metrics are read from once it exits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum OutputSource {
    /// Standard output (its tail, [`Limits::output_limit`] bytes, in
    /// [`JobReport::output`]; metrics are read from all of it).
    #[default]
    Stdout,
    /// A file the command writes, relative to the checkout; read after exit
    /// (its head, [`Limits::output_limit`] bytes, in [`JobReport::output`];
    /// metrics are read from all of it).
    File(String),
}

/// One unit of work: run `command` in a checkout of `commit` of `repo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The run this job belongs to. Jobs of one run may share a checkout (the
    /// evaluator runs where the proposer left the candidate) until
    /// [`Executor::release`] is called for it.
    pub run_id: String,
    /// Which step of the run this is (`propose`, `evaluate-0`, ...); names the logs.
    pub step: String,
    /// The repository: a local path or a URL the executor can reach.
    pub repo: String,
    /// The commit to check out, detached.
    pub commit: String,
    /// The directory, relative to the checkout's root, the command runs in
    /// (the config file's directory in a monorepo); empty: the root.
    #[serde(default)]
    pub workdir: String,
    /// A shell command line (`sh -c`).
    pub command: String,
    /// Extra environment variables, on top of the executor's own.
    pub env: BTreeMap<String, String>,
    /// The time and output bounds the job runs under.
    pub limits: Limits,
    /// Where to read the output from.
    pub output: OutputSource,
    /// Whether the checkout's final tree (what the command committed or
    /// left uncommitted, ignored files excepted) becomes a commit, the
    /// single child of [`Job::commit`] whatever the command did to history,
    /// so that [`JobReport::commit`] is the candidate it produced.
    pub commit_changes: bool,
    /// How to read metrics from the output, when the job is an evaluation:
    /// the executor streams the whole output (however long) through
    /// [`MetricReader`](crate::metrics::MetricReader) and returns the
    /// reading in [`JobReport::metrics`].
    #[serde(default)]
    pub metrics: Option<MetricSpec>,
    /// Whether the job may read the experiment's held-out data (only a
    /// held-out confirmation may; an executor hides it from every other
    /// job where it can, see `[confirm] data`).
    #[serde(default)]
    pub held_out: bool,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum ExitStatus {
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal (not by us).
    Signaled(i32),
    /// The limit expired and the job was killed.
    TimedOut,
    /// The command could not be started (no checkout, no shell, ...).
    FailedToStart(String),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// The exit code, when the command exited on its own.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(*c),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by signal {s}"),
            ExitStatus::TimedOut => f.write_str("timed out"),
            ExitStatus::FailedToStart(why) => write!(f, "failed to start: {why}"),
        }
    }
}

/// What came back from a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// How the job ended.
    pub status: ExitStatus,
    /// The text metrics are read from (see [`OutputSource`]), bounded.
    pub output: String,
    /// The metrics read from the whole output, when [`Job::metrics`] asked
    /// for them. An executor that leaves it `None` lets the caller read
    /// [`JobReport::output`] instead (bounded, so a long output may lose
    /// its metrics).
    #[serde(default)]
    pub metrics: Option<MetricReading>,
    /// The last [`Limits::output_limit`] bytes of standard output.
    pub stdout_tail: String,
    /// The last [`Limits::output_limit`] bytes of standard error.
    pub stderr_tail: String,
    /// Where the job ran (a path, `host:path`, a job id), for Run.workspace_path.
    pub workspace: String,
    /// Where the full standard output is (a path or a URL); empty when not kept.
    pub stdout_log: String,
    /// Where the full standard error is; empty when not kept.
    pub stderr_log: String,
    /// Time spent inside the job's command.
    pub duration: Duration,
    /// CPU time (user + system) of the job's process tree, when the
    /// executor measured it (see [`crate::cost`]).
    #[serde(default)]
    pub cpu_time: Option<Duration>,
    /// With [`Job::commit_changes`], the candidate: the checkout's final
    /// tree as the single child of [`Job::commit`] (that commit itself when
    /// nothing changed); otherwise [`Job::commit`]. Its objects must be in
    /// [`Job::repo`] when `run` returns. Empty when unknown.
    pub commit: String,
    /// The paths that differ between [`Job::commit`] and [`JobReport::commit`]
    /// (added, modified, removed; renames as a removal and an addition), when
    /// the executor learnt them on the way at no extra cost. `None` leaves it
    /// to the caller to compute them (the loop asks git); an executor that
    /// fills it must be exact, since protected paths are checked against it.
    #[serde(default)]
    pub changed_paths: Option<Vec<String>>,
    /// Files the command left in the checkout that are not part of
    /// [`JobReport::commit`] (ignored files, build output), relative to the
    /// checkout's root, a directory once for all it holds; at most a few
    /// hundred. They are listed in the run's record and never evaluated.
    #[serde(default)]
    pub left_out: Vec<String>,
}

/// An executor that could not run a job at all (as opposed to a job that
/// failed, which is a [`JobReport`] with a failing [`ExitStatus`]).
#[derive(Debug, thiserror::Error)]
#[error("{executor}: {doing} for run {run_id}: {reason}")]
pub struct ExecError {
    /// The executor's name (`local`, a cluster's name, ...).
    pub executor: String,
    /// The run the job was for.
    pub run_id: String,
    /// What the executor was doing (preparing the checkout, starting the command, ...).
    pub doing: String,
    /// What went wrong, in one line for people.
    pub reason: String,
}

/// Runs jobs somewhere: a local slot repository, a VM, a cluster.
///
/// An executor gives every job a checkout of exactly [`Job::commit`] (no
/// file of an earlier job, untracked or ignored, left in it) and makes sure
/// that no process of a job outlives it, so that what an evaluation measures
/// is the committed tree and nothing a proposer left running.
///
/// Dropping the future of [`Executor::run`] must stop the job.
///
/// ```
/// use autoresearch_core::exec::{ExecError, ExitStatus, Executor, Job, JobReport};
/// use std::time::Duration;
///
/// /// Pretends every job printed `score: 1` and changed nothing.
/// struct Echo;
///
/// #[async_trait::async_trait]
/// impl Executor for Echo {
///     fn name(&self) -> String {
///         "echo".into()
///     }
///     async fn run(&self, job: Job) -> Result<JobReport, ExecError> {
///         Ok(JobReport {
///             status: ExitStatus::Exited(0),
///             output: "score: 1\n".into(),
///             metrics: None,
///             stdout_tail: "score: 1\n".into(),
///             stderr_tail: String::new(),
///             workspace: String::new(),
///             stdout_log: String::new(),
///             stderr_log: String::new(),
///             duration: Duration::ZERO,
///             cpu_time: None,
///             commit: job.commit,
///             changed_paths: Some(Vec::new()),
///             left_out: Vec::new(),
///         })
///     }
///     async fn release(&self, _run_id: &str) -> Result<(), ExecError> {
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Executor: Send + Sync {
    /// A short name for logs and errors, e.g. `local`.
    fn name(&self) -> String;

    /// Runs one job to completion (or to its timeout).
    ///
    /// Errors: only when the executor itself fails (cannot reach the host,
    /// cannot create a checkout, cannot write logs). A command that fails or
    /// times out is an `Ok` report.
    async fn run(&self, job: Job) -> Result<JobReport, ExecError>;

    /// Frees what the run's jobs held (checkout, scratch space). Idempotent:
    /// releasing an unknown or already released run is `Ok`. Also called on
    /// runs left behind by a controller that was killed.
    async fn release(&self, run_id: &str) -> Result<(), ExecError>;

    /// Frees everything this executor still holds (pooled checkouts, and
    /// leftovers of an executor that died); called when the loop stops.
    /// The default does nothing.
    async fn close(&self) -> Result<(), ExecError> {
        Ok(())
    }

    /// Runs one job as [`Executor::run`] does, and tells `journal` about
    /// every job it hands to a scheduler, as soon as it has an id and at
    /// each change of state, so that the loop records it in the ledger
    /// before the job can outlive the process. The default runs
    /// [`Executor::run`] and tells nothing (local jobs die with their
    /// controller).
    async fn run_journaled(
        &self,
        job: Job,
        journal: std::sync::Arc<dyn JobJournal>,
    ) -> Result<JobReport, ExecError> {
        let _ = journal;
        self.run(job).await
    }

    /// Takes over jobs a killed controller left with the scheduler (their
    /// records in the ledger, not final): waits for each to finish, or
    /// cancels it, as the executor is configured, and returns the records
    /// that changed, final. Never submits anything. The default has no
    /// such jobs and returns nothing.
    async fn adopt(&self, jobs: Vec<ExecutorJob>) -> Result<Vec<ExecutorJob>, ExecError> {
        let _ = jobs;
        Ok(Vec::new())
    }

    /// Runs `jobs` (the repeated samples of one commit: same
    /// [`Job::run_id`] and commit, steps of their own) as
    /// [`Executor::run_journaled`] runs each, and returns their reports in
    /// the order of `jobs`. An executor that can run them at once does (a
    /// cluster: all submitted together, each in a checkout of its own, so
    /// that they cannot see each other's files); the default runs them one
    /// after another in the run's checkout.
    ///
    /// Errors: the first failure of the executor itself; dropping the
    /// future stops every job of the batch.
    async fn run_batch_journaled(
        &self,
        jobs: Vec<Job>,
        journal: std::sync::Arc<dyn JobJournal>,
    ) -> Result<Vec<JobReport>, ExecError> {
        let mut reports = Vec::with_capacity(jobs.len());
        for job in jobs {
            reports.push(self.run_journaled(job, journal.clone()).await?);
        }
        Ok(reports)
    }

    /// The report of a job a killed controller left, once
    /// [`Executor::adopt`] saw it end (`record`, final): read from what the
    /// job left (its logs, exit file, output file) as [`Executor::run`]
    /// would have returned it had the controller waited. `job` is the job
    /// as it was submitted (the loop builds it again from its run). `None`
    /// when there is nothing to read: a job that did not run to its end
    /// (cancelled), or an executor whose jobs die with their controller
    /// (the default). Never submits anything.
    async fn adopted_report(
        &self,
        job: Job,
        record: ExecutorJob,
    ) -> Result<Option<JobReport>, ExecError> {
        let _ = (job, record);
        Ok(None)
    }
}
