//! [`SlurmExecutor`]: each job a Slurm batch job.
//!
//! - Checkout: the run's checkout comes from a [`Checkouts`] under
//!   `{workdir}/slots` (the CLI hands it the controller's slots), made
//!   exactly the job's commit before the job is submitted; after a
//!   proposer its tree becomes the candidate, as locally.
//! - Job: a script `{workdir}/runs/{run_id}/{step}.sh` submitted with
//!   `sbatch --parsable` (`--output`/`--error` beside it, `--no-requeue`,
//!   the `[slurm]` options). The script runs `sh -c COMMAND` in the
//!   checkout and writes its exit code and duration to `{step}.exit`, which
//!   is how the end of a job is read without accounting, and the command's
//!   CPU time (the shell's `times`) to `{step}.times` (see [`crate::files`]).
//! - Repeats: the samples of one commit ([`Executor::run_batch_journaled`])
//!   are submitted together, each in a checkout of its own, and watched
//!   at once, so that they run in parallel on the cluster.
//! - Watch: `scontrol show job -o` every poll interval; each state change
//!   goes to the [`JobJournal`] (the ledger). The job's own timeout counts
//!   from when it starts running; on expiry it is cancelled (`TimedOut`).
//!   A job Slurm stopped at its time limit, cancelled from outside or
//!   killed for memory is a failed job whose standard error log ends with
//!   a line saying so.
//! - Cancellation: dropping the job's future runs `scancel` (Ctrl-C).
//! - Restart: [`Executor::adopt`] waits for or cancels the jobs a killed
//!   controller left ([`OnRestart`]); it never submits anything.
//!   [`Executor::adopted_report`] then reads a finished one's report from
//!   its files, as if the controller had waited.

use crate::config::{OnRestart, ProposeOn, SlurmConfig};
use crate::files::{Exit, Logs, collect, note_line, quote, report};
use crate::tools::{self, JobInfo};
use async_trait::async_trait;
use autoresearch_core::exec::{ExecError, Executor, ExitStatus, Job, JobReport};
use autoresearch_core::jobs::{Checkouts, ExecutorJob, JobJournal};
use autoresearch_core::vocab::JobState;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The executor's name, in logs, errors and [`ExecutorJob::executor`].
pub const NAME: &str = "slurm";

/// Consecutive failed `scontrol` calls after which a job is given up (and
/// cancelled): the controller is unreachable.
const MAX_QUERY_FAILURES: u32 = 10;

/// Runs jobs as Slurm batch jobs on files under [`SlurmConfig::workdir`].
pub struct SlurmExecutor {
    cfg: SlurmConfig,
    checkouts: Arc<dyn Checkouts>,
    /// Runs the proposer with [`ProposeOn::Local`].
    local: Arc<dyn Executor>,
}

impl SlurmExecutor {
    /// An executor submitting jobs as `cfg` says, in checkouts from
    /// `checkouts` (which must live under `cfg.workdir`, seen by every
    /// node), running proposers with `local` when `cfg.propose_on` is
    /// `local`. Creates nothing until the first job.
    pub fn new(
        cfg: SlurmConfig,
        checkouts: Arc<dyn Checkouts>,
        local: Arc<dyn Executor>,
    ) -> SlurmExecutor {
        SlurmExecutor {
            cfg,
            checkouts,
            local,
        }
    }

    /// Where the scripts and logs of `run_id` go.
    pub fn log_dir(&self, run_id: &str) -> PathBuf {
        self.cfg.workdir.join("runs").join(run_id)
    }

    fn error(&self, run_id: &str, doing: &str, reason: impl std::fmt::Display) -> ExecError {
        ExecError {
            executor: NAME.into(),
            run_id: run_id.to_string(),
            doing: doing.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The `sbatch` options of `job`, whose logs are `logs`.
    fn options(&self, job: &Job, chdir: &Path, logs: &Logs) -> Vec<String> {
        let name: String = format!("autoresearch-{}-{}", job.run_id, job.step)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let time = self.cfg.time.clone().unwrap_or_else(|| {
            // The job's own timeout is the limit; Slurm's, a minute above
            // it, only catches a controller that is gone.
            (job.limits.timeout.as_secs().div_ceil(60) + 1).to_string()
        });
        let mut o = vec![
            format!("--job-name={name}"),
            format!("--output={}", logs.stdout.display()),
            format!("--error={}", logs.stderr.display()),
            format!("--chdir={}", chdir.display()),
            "--no-requeue".into(),
            format!("--time={time}"),
        ];
        let c = &self.cfg;
        o.extend(c.partition.as_ref().map(|p| format!("--partition={p}")));
        o.extend(c.gres.as_ref().map(|g| format!("--gres={g}")));
        o.extend(c.cpus_per_task.map(|n| format!("--cpus-per-task={n}")));
        o.extend(c.mem.as_ref().map(|m| format!("--mem={m}")));
        o.extend(c.extra.iter().cloned());
        o
    }

    /// The batch script of `job` in `checkout`.
    fn script(&self, job: &Job, checkout: &Path, logs: &Logs) -> String {
        let mut env = job.env.clone();
        env.insert("AUTORESEARCH_RUN_ID".into(), job.run_id.clone());
        env.insert(
            "AUTORESEARCH_WORKTREE".into(),
            checkout.display().to_string(),
        );
        // Git in the job stops at the slots, even once its `.git` is gone.
        env.insert(
            "GIT_CEILING_DIRECTORIES".into(),
            self.checkouts.root().display().to_string(),
        );
        let mut s = format!(
            "#!/bin/sh\n# autoresearch: run {}, step {}\n",
            job.run_id, job.step
        );
        for (k, v) in &env {
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                s.push_str(&format!("export {k}={}\n", quote(v)));
            }
        }
        // The command runs in a subshell that waits for it and writes its
        // CPU time (`times`: the subshell's children, i.e. the command's
        // process tree) before the exit file, which says the job ended.
        let exit_tmp = logs.exit.with_extension("exit.tmp");
        let [dir, command, times, tmp, exit] = [
            checkout.join(&job.workdir).display().to_string(),
            job.command.clone(),
            logs.times.display().to_string(),
            exit_tmp.display().to_string(),
            logs.exit.display().to_string(),
        ]
        .map(|v| quote(&v));
        s.push_str(&format!(
            "cd {dir} || exit 127\nstart=$(date +%s%N)\n\
             (sh -c {command}; c=$?; times > {times} 2>/dev/null; exit $c)\ncode=$?\n\
             end=$(date +%s%N)\n\
             printf '%s %s\\n' \"$code\" \"$(( (end - start) / 1000000 ))\" > {tmp} && mv {tmp} {exit}\n\
             exit $code\n"
        ));
        s
    }

    /// Submits `job`, records it and watches it to its end, in the
    /// checkout held under `checkout_key` (the job's run, or one sample of
    /// a batch).
    async fn run_on_slurm(
        &self,
        job: Job,
        journal: Arc<dyn JobJournal>,
        checkout_key: String,
    ) -> Result<JobReport, ExecError> {
        let logs = Logs::of(&self.log_dir(&job.run_id), &job.step);
        let prepared = {
            let mut j = job.clone();
            j.run_id = checkout_key;
            let (checkouts, logs) = (self.checkouts.clone(), logs.clone());
            blocking(move || {
                logs.create()?;
                let checkout = match checkouts.prepare(&j) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e.to_string())),
                };
                logs.write_checkout(&checkout)?;
                Ok::<_, String>(Ok(checkout))
            })
            .await
            .and_then(|r| r)
            .map_err(|e| self.error(&job.run_id, "preparing the job's files", e))?
        };
        let checkout = match prepared {
            Ok(p) => p,
            Err(why) => {
                return Ok(report(
                    &job,
                    ExitStatus::FailedToStart(why),
                    &logs,
                    Path::new(""),
                ));
            }
        };
        let script = self.script(&job, &checkout, &logs);
        let path = logs.script.clone();
        blocking(move || std::fs::write(&path, script))
            .await
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| {
                self.error(
                    &job.run_id,
                    &format!("writing {}", logs.script.display()),
                    e,
                )
            })?;
        let options = self.options(&job, &checkout.join(&job.workdir), &logs);
        let job_id = tools::submit(&options, &logs.script)
            .await
            .map_err(|e| self.error(&job.run_id, "submitting the job", e))?;
        let mut record = ExecutorJob {
            run_id: job.run_id.clone(),
            step: job.step.clone(),
            executor: NAME.into(),
            job_id: job_id.clone(),
            state: JobState::Pending,
            reason: String::new(),
            stdout_log: logs.stdout.display().to_string(),
            stderr_log: logs.stderr.display().to_string(),
            at_ms: autoresearch_core::now_ms(),
        };
        journal.record(&record);
        let mut guard = CancelOnDrop {
            record: record.clone(),
            journal: journal.clone(),
            armed: true,
        };

        let mut running_since: Option<Instant> = None;
        let mut failures = 0;
        let mut timed_out = false;
        let info = loop {
            tokio::time::sleep(self.cfg.poll()).await;
            let info = match tools::job_info(&job_id).await {
                Ok(i) => {
                    failures = 0;
                    i
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("slurm job {job_id}: {e}");
                    if failures >= MAX_QUERY_FAILURES {
                        return Err(self.error(&job.run_id, "asking Slurm about the job", e));
                    }
                    continue;
                }
            };
            if info.state != record.state || info.reason != record.reason {
                record.state = info.state.clone();
                record.reason = info.reason.clone();
                record.at_ms = autoresearch_core::now_ms();
                journal.record(&record);
                guard.record = record.clone();
            }
            if info.state == JobState::Running && running_since.is_none() {
                running_since = Some(Instant::now());
            }
            if info.state.is_final() {
                break info;
            }
            if running_since.is_some_and(|t| t.elapsed() > job.limits.timeout) && !timed_out {
                // The job's own timeout: cancelled, and watched to its end.
                timed_out = true;
                let _ = tools::cancel(&job_id).await;
            }
        };
        guard.armed = false;

        let (done, status) = self
            .read_report(&job, &job_id, &info, &logs, &checkout, timed_out)
            .await?;
        if record.reason.is_empty() {
            record.reason = match &status {
                ExitStatus::Exited(c) => format!("exit code {c}"),
                other => other.to_string(),
            };
            record.at_ms = autoresearch_core::now_ms();
            journal.record(&record);
        }
        let mut done = done;
        if done.duration.is_zero() {
            done.duration = running_since.map(|t| t.elapsed()).unwrap_or_default();
        }
        Ok(done)
    }

    /// The report of `job` (Slurm job `job_id`, ended as `info` says) from
    /// its files: how it ended (and a line in its stderr log when Slurm
    /// ended it), its logs and metrics, its CPU time (from `{step}.times`,
    /// else `sacct` when the cluster keeps accounting), and after a
    /// proposer the candidate. Also the status alone, for the job's record.
    async fn read_report(
        &self,
        job: &Job,
        job_id: &str,
        info: &JobInfo,
        logs: &Logs,
        checkout: &Path,
        timed_out: bool,
    ) -> Result<(JobReport, ExitStatus), ExecError> {
        let exit = {
            let (logs, final_state) = (logs.clone(), info.state.clone());
            blocking(move || logs.read_exit(&final_state))
                .await
                .ok()
                .flatten()
        };
        let (status, note) = ending(job, job_id, info, exit, timed_out);
        if let Some(note) = &note {
            note_line(&logs.stderr, note);
        }
        let (job2, checkouts, logs2, checkout2) = (
            job.clone(),
            self.checkouts.clone(),
            logs.clone(),
            checkout.to_path_buf(),
        );
        let success = status.success();
        let mut done = blocking(move || collect(&job2, &*checkouts, &logs2, &checkout2, success))
            .await
            .map_err(|e| self.error(&job.run_id, "reading the job's output", e))?;
        done.status = match done.status {
            // A candidate that could not be built is the job's failure.
            ExitStatus::FailedToStart(why) => ExitStatus::FailedToStart(why),
            _ => status.clone(),
        };
        done.duration = exit.map(|e| e.duration).unwrap_or_default();
        done.cpu_time = match exit.and_then(|e| e.cpu) {
            Some(cpu) => Some(cpu),
            None => tools::accounted_cpu_time(job_id).await,
        };
        Ok((done, status))
    }

    /// Watches `jobs` to their ends, cancelling them first when so
    /// configured.
    async fn settle(&self, mut jobs: Vec<ExecutorJob>) -> Result<Vec<ExecutorJob>, ExecError> {
        if self.cfg.on_restart == OnRestart::Cancel {
            for j in &jobs {
                tools::cancel(&j.job_id)
                    .await
                    .map_err(|e| self.error(&j.run_id, "cancelling an adopted job", e))?;
            }
        }
        let mut done = Vec::new();
        let mut failures = 0;
        while !jobs.is_empty() {
            let mut still = Vec::new();
            for mut j in jobs {
                match tools::job_info(&j.job_id).await {
                    Ok(info) if info.state.is_final() => {
                        let logs = Logs::of(&self.log_dir(&j.run_id), &j.step);
                        let state = info.state.clone();
                        let exit = blocking(move || logs.read_exit(&state))
                            .await
                            .ok()
                            .flatten();
                        j.state = match (&info.state, exit) {
                            // Forgotten by Slurm, but its script finished.
                            (JobState::Unknown, Some(_)) => JobState::Completed,
                            (s, _) => s.clone(),
                        };
                        j.reason = match exit {
                            Some(e) => format!("adopted after a restart; exit code {}", e.code),
                            None => format!("adopted after a restart; {}", info.reason),
                        };
                        j.at_ms = autoresearch_core::now_ms();
                        done.push(j);
                    }
                    Ok(_) => still.push(j),
                    Err(e) => {
                        failures += 1;
                        if failures >= MAX_QUERY_FAILURES {
                            return Err(self.error(
                                &j.run_id,
                                "asking Slurm about an adopted job",
                                e,
                            ));
                        }
                        still.push(j);
                    }
                }
            }
            jobs = still;
            if !jobs.is_empty() {
                tokio::time::sleep(self.cfg.poll()).await;
            }
        }
        Ok(done)
    }
}

#[async_trait]
impl Executor for SlurmExecutor {
    fn name(&self) -> String {
        NAME.into()
    }

    async fn run(&self, job: Job) -> Result<JobReport, ExecError> {
        self.run_journaled(job, Arc::new(autoresearch_core::jobs::NoJournal))
            .await
    }

    async fn run_journaled(
        &self,
        job: Job,
        journal: Arc<dyn JobJournal>,
    ) -> Result<JobReport, ExecError> {
        if job.commit_changes && self.cfg.propose_on == ProposeOn::Local {
            return self.local.run_journaled(job, journal).await;
        }
        let key = job.run_id.clone();
        self.run_on_slurm(job, journal, key).await
    }

    /// Submits the jobs together and watches them at once. The first runs
    /// in the run's checkout, each other in a checkout of its own (held
    /// for the batch only), so that samples running side by side on the
    /// cluster do not share files.
    async fn run_batch_journaled(
        &self,
        jobs: Vec<Job>,
        journal: Arc<dyn JobJournal>,
    ) -> Result<Vec<JobReport>, ExecError> {
        if jobs.len() < 2 || jobs.iter().any(|j| j.commit_changes) {
            let mut reports = Vec::with_capacity(jobs.len());
            for job in jobs {
                reports.push(self.run_journaled(job, journal.clone()).await?);
            }
            return Ok(reports);
        }
        let keys: Vec<String> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| match i {
                0 => j.run_id.clone(),
                _ => format!("{}+{}", j.run_id, j.step),
            })
            .collect();
        // The batch's own checkouts go back however it ends (dropped too).
        let _release = ReleaseOnDrop {
            checkouts: self.checkouts.clone(),
            keys: keys[1..].to_vec(),
        };
        let runs = jobs
            .into_iter()
            .zip(keys)
            .map(|(job, key)| self.run_on_slurm(job, journal.clone(), key));
        futures_util::future::try_join_all(runs).await
    }

    async fn adopted_report(
        &self,
        job: Job,
        record: ExecutorJob,
    ) -> Result<Option<JobReport>, ExecError> {
        if record.executor != NAME
            || !record.is_final()
            || matches!(record.state, JobState::Cancelled | JobState::Unknown)
        {
            return Ok(None);
        }
        // What Slurm still says (its time limit, for a timeout's line);
        // else what the record says.
        let info = match tools::job_info(&record.job_id).await {
            Ok(i) if i.state.is_final() && i.state != JobState::Unknown => i,
            _ => JobInfo {
                state: record.state.clone(),
                reason: record.reason.clone(),
                exit: None,
                time_limit: String::new(),
            },
        };
        let logs = Logs::of(&self.log_dir(&job.run_id), &job.step);
        let l = logs.clone();
        let checkout = blocking(move || l.read_checkout())
            .await
            .map_err(|e| self.error(&job.run_id, "reading an adopted job's files", e))?;
        let (report, _) = self
            .read_report(&job, &record.job_id, &info, &logs, &checkout, false)
            .await?;
        Ok(Some(report))
    }

    async fn release(&self, run_id: &str) -> Result<(), ExecError> {
        let checkouts = self.checkouts.clone();
        let id = run_id.to_string();
        blocking(move || checkouts.release(&id))
            .await
            .map_err(|e| self.error(run_id, "releasing the checkout", e))?;
        self.local.release(run_id).await
    }

    async fn close(&self) -> Result<(), ExecError> {
        let checkouts = self.checkouts.clone();
        blocking(move || checkouts.close())
            .await
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| self.error("", "removing checkouts", e))?;
        self.local.close().await
    }

    async fn adopt(&self, jobs: Vec<ExecutorJob>) -> Result<Vec<ExecutorJob>, ExecError> {
        let mine = jobs.into_iter().filter(|j| j.executor == NAME).collect();
        self.settle(mine).await
    }
}

/// Gives the checkouts held under `keys` back when dropped (a pool's
/// bookkeeping: no git, no waiting).
struct ReleaseOnDrop {
    checkouts: Arc<dyn Checkouts>,
    keys: Vec<String>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        for key in &self.keys {
            self.checkouts.release(key);
        }
    }
}

/// Cancels the job when the future running it is dropped (Ctrl-C, the
/// loop's kill) and records that.
struct CancelOnDrop {
    record: ExecutorJob,
    journal: Arc<dyn JobJournal>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            tools::cancel_detached(&self.record.job_id);
            self.record.state = JobState::Cancelled;
            self.record.reason = "cancelled by the loop (scancel)".into();
            self.record.at_ms = autoresearch_core::now_ms();
            self.journal.record(&self.record);
        }
    }
}

/// How the job ended, and a line for its standard error log when Slurm
/// (not the command) ended it.
fn ending(
    job: &Job,
    job_id: &str,
    info: &JobInfo,
    exit: Option<Exit>,
    timed_out: bool,
) -> (ExitStatus, Option<String>) {
    const SIGTERM: i32 = 15;
    const SIGKILL: i32 = 9;
    if timed_out {
        return (
            ExitStatus::TimedOut,
            Some(format!(
                "autoresearch: Slurm job {job_id} ran past the job's timeout ({}) and was cancelled",
                humantime::format_duration(job.limits.timeout)
            )),
        );
    }
    match (&info.state, exit) {
        (JobState::Timeout, _) => (
            ExitStatus::TimedOut,
            Some(format!(
                "autoresearch: Slurm job {job_id} reached its Slurm time limit ({}) and was stopped",
                info.time_limit
            )),
        ),
        (JobState::Cancelled, _) => (
            ExitStatus::Signaled(SIGTERM),
            Some(format!(
                "autoresearch: Slurm job {job_id} was cancelled (scancel) before it finished"
            )),
        ),
        (JobState::OutOfMemory, _) => (
            ExitStatus::Signaled(SIGKILL),
            Some(format!(
                "autoresearch: Slurm job {job_id} used more memory than it asked for and was killed"
            )),
        ),
        (_, Some(e)) => (ExitStatus::Exited(e.code), None),
        (JobState::Completed, None) => (ExitStatus::Exited(0), None),
        (_, None) => match info.exit {
            Some((_, sig)) if sig != 0 => (ExitStatus::Signaled(sig), None),
            Some((code, _)) if code != 0 => (ExitStatus::Exited(code), None),
            _ => (
                ExitStatus::FailedToStart(format!(
                    "Slurm job {job_id} ended {} without running its script{}",
                    info.state,
                    if info.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", info.reason)
                    }
                )),
                None,
            ),
        },
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))
}
