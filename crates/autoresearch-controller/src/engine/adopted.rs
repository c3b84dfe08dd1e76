//! Evaluations a killed controller left with a scheduler that ended while
//! no controller watched them. [`Controller::recover`] reads their reports
//! ([`Executor::adopted_report`]: from the jobs' files, never submitting
//! anything) and carries their runs on as if the controller had waited:
//! every sample recorded once (the candidate's under its run, the
//! incumbent's under the incumbent's run), then each run crashed (the
//! first sample of its candidate failed) or decided by the comparator
//! (more samples taken if it asks, the branch advanced on a keep). The
//! head's samples of itself (`[compare] calibrate`, a re-measurement),
//! taken while its run was already finished, are recorded under it too
//! ([`Controller::record_head_samples`]).

use super::*;
use autoresearch_core::jobs::ExecutorJob;
use std::collections::HashSet;

/// The evaluations of one run in flight that ended unrecorded.
pub(super) struct Adopted {
    /// Each job's kind of step ([`CANDIDATE_STEP`], [`REBASED_STEP`] or
    /// [`INCUMBENT_STEP`]) and report, in the order they were submitted.
    reports: Vec<(&'static str, JobReport)>,
    /// The run the incumbent's samples are recorded under (`None`: no
    /// incumbent sample, or its run is not found, and they are left out).
    incumbent: Option<String>,
}

impl Adopted {
    /// Whether there is nothing to carry the run on from.
    pub(super) fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }
}

/// Why a recovered run ends before a decision: the failed first sample
/// of its candidate, and that sample's step kind.
pub(super) type FirstFailed = Option<(&'static str, Crash)>;

impl Controller {
    /// The evaluations run `a` submitted (its candidate's samples, and the
    /// incumbent's taken in its checkout) that ended with no Result
    /// recorded, with their reports. Sets `cand.base` (the candidate's
    /// parent) when there are some. Read before the killed controller's
    /// checkouts go (an output file may be there).
    pub(super) async fn adopted_evaluations(
        &self,
        a: &Attempt,
        cand: &mut Cand,
    ) -> Result<Adopted, LoopError> {
        let none = Adopted {
            reports: Vec::new(),
            incumbent: None,
        };
        if cand.commit.is_empty() {
            return Ok(none);
        }
        let run = a.run.run_id.clone();
        let mut ended: Vec<(u32, &'static str, ExecutorJob)> = self
            .ledger
            .read(|w| {
                w.find_all::<ExecutorJob>(|j| j.run_id == run && j.is_final())
                    .into_iter()
                    .filter_map(|(_, j)| {
                        let (kind, n) = j.step.rsplit_once('-')?;
                        let kind = [CANDIDATE_STEP, REBASED_STEP, INCUMBENT_STEP]
                            .into_iter()
                            .find(|k| *k == kind)?;
                        Some((n.parse::<u32>().ok()?, kind, j))
                    })
                    .collect()
            })
            .await;
        if ended.is_empty() {
            return Ok(none);
        }
        let parent = format!("{}^", cand.commit);
        cand.base = self.git(move |g| g.run(&["rev-parse", &parent])).await?;
        let incumbent = match ended.iter().any(|(_, k, _)| *k == INCUMBENT_STEP) {
            true => self.incumbent_run(&cand.base).await,
            false => None,
        };
        // A Result names its job's log: such a job is recorded.
        let owners: Vec<String> = std::iter::once(run.clone())
            .chain(incumbent.clone())
            .collect();
        let recorded: HashSet<String> = self
            .ledger
            .read(move |w| {
                owners
                    .iter()
                    .flat_map(|o| w.results_for(o))
                    .filter_map(|(_, r)| r.meta())
                    .map(|m| m.stdout_log)
                    .collect()
            })
            .await;
        ended.retain(|(_, _, j)| !recorded.contains(&j.stdout_log));
        ended.sort_by_key(|(n, _, _)| *n);
        let mut reports = Vec::with_capacity(ended.len());
        for (_, kind, record) in ended {
            let commit = match kind {
                INCUMBENT_STEP => &cand.base,
                _ => &cand.commit,
            };
            let job = self.eval_job(&run, commit, 0, &record.step);
            if let Some(report) = self.executor.adopted_report(job, record).await? {
                reports.push((kind, report));
            }
        }
        Ok(Adopted { reports, incumbent })
    }

    /// The run whose samples are those of incumbent `commit`: the head's
    /// when it is the head, else the run that made it the head.
    async fn incumbent_run(&self, commit: &str) -> Option<String> {
        match self.head().await {
            Some(h) if h.commit == commit => Some(h.run_id),
            _ => self.run_at_commit(commit).await,
        }
    }

    /// Records the samples `adopted` read for run `a` (its candidate
    /// `cand`, the first of the run with the candidate itself) as the loop
    /// would have when they ended. The first sample of the candidate's
    /// commit, when it failed.
    pub(super) async fn record_adopted(
        &self,
        a: &Attempt,
        cand: &mut Cand,
        adopted: Adopted,
    ) -> Result<FirstFailed, LoopError> {
        let first_of_run = a.run.commit_hash.is_empty();
        if first_of_run {
            let c = cand.commit.clone();
            let message = self
                .git(move |g| g.run(&["log", "-1", "--format=%B", &c]))
                .await?;
            cand.description = clean_description(&message).unwrap_or_default();
        }
        let incumbent = adopted.incumbent;
        let mut first_failed = None;
        let mut with_cand = first_of_run;
        for (kind, report) in adopted.reports {
            if kind == INCUMBENT_STEP {
                let Some(owner) = &incumbent else { continue };
                let sample = self.sample_count(owner, &cand.base).await;
                let _failed_sample_is_recorded = self
                    .record_eval(owner, &cand.base, sample, kind, report, None)
                    .await?;
                continue;
            }
            let sample = self.sample_count(&cand.run_id, &cand.commit).await;
            if with_cand {
                cand.workspace = report.workspace.clone();
            }
            let parsed = self
                .record_eval(
                    &cand.run_id,
                    &cand.commit,
                    sample,
                    kind,
                    report,
                    with_cand.then_some(&*cand),
                )
                .await?;
            with_cand = false;
            if let (0, Err(crash)) = (sample, parsed) {
                first_failed = Some((kind, crash));
            }
        }
        cand.workspace.clear();
        cand.description.clear();
        Ok(first_failed)
    }

    /// Finishes recovered run `cand` once its adopted samples are
    /// recorded, as the loop would have: a crash when the first sample of
    /// its candidate failed, else the comparator's decision against the
    /// head it was made on, applied (a keep is rebased when the head has
    /// moved since).
    pub(super) async fn carry_on(
        &self,
        cand: Cand,
        first_failed: FirstFailed,
    ) -> Result<(), LoopError> {
        if let Some((step, crash)) = first_failed {
            let reason = match step {
                REBASED_STEP => format!("after rebase: {}", crash.reason),
                _ => crash.reason,
            };
            self.finish(&cand, OutcomeStatus::Crash, &reason, &crash.detail)
                .await?;
            return Ok(());
        }
        let Some(head) = self.head().await else {
            return Err(LoopError::NoDecision {
                run_id: cand.run_id,
            });
        };
        let inc_head = if cand.base == head.commit {
            head
        } else {
            Head {
                commit: cand.base.clone(),
                run_id: self.run_at_commit(&cand.base).await.unwrap_or(head.run_id),
            }
        };
        let d = self
            .decide(&inc_head, std::slice::from_ref(&cand))
            .await?
            .pop()
            .unwrap_or_else(|| Err("no decision".into()));
        self.apply(&inc_head, cand, d).await?;
        Ok(())
    }

    /// Records the samples that jobs of finished runs, adopted at this
    /// restart (`adopted`, minus the jobs of runs in flight, `in_flight`),
    /// ended with: the head measuring itself in its own checkout
    /// (`[compare] calibrate`, a re-measurement after a failed sample), so
    /// each is a sample of its run's commit, recorded under that run.
    pub(super) async fn record_head_samples(
        &self,
        adopted: Vec<ExecutorJob>,
        in_flight: &[String],
    ) -> Result<(), LoopError> {
        for record in adopted {
            let Some((kind, _)) = record.step.rsplit_once('-') else {
                continue;
            };
            let Some(kind) = [CALIBRATE_STEP, INCUMBENT_STEP]
                .into_iter()
                .find(|k| *k == kind)
            else {
                continue;
            };
            if in_flight.contains(&record.run_id) {
                continue;
            }
            let run_id = record.run_id.clone();
            let Some(run) = self.ledger.read(|w| w.run_by_id(&run_id)).await else {
                continue;
            };
            let commit = run.1.commit_hash;
            let job = self.eval_job(&run_id, &commit, 0, &record.step);
            if let Some(report) = self.executor.adopted_report(job, record).await? {
                let sample = self.sample_count(&run_id, &commit).await;
                let _failed_sample_is_recorded = self
                    .record_eval(&run_id, &commit, sample, kind, report, None)
                    .await?;
            }
        }
        Ok(())
    }
}
