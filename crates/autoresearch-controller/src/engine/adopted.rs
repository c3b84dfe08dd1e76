//! Evaluations a killed controller left with a scheduler that ended while
//! no controller watched them. [`Controller::recover`] reads their reports
//! ([`Executor::adopted_report`]: from the jobs' files, never submitting
//! anything) and carries their runs on as if the controller had waited:
//! each sample recorded once, then the run crashed (its first sample
//! failed) or decided by the comparator (more samples taken if it asks,
//! the branch advanced on a keep).

use super::*;
use autoresearch_core::jobs::ExecutorJob;
use std::collections::HashSet;

impl Controller {
    /// The reports of the evaluations of the candidate `cand` (steps
    /// [`CANDIDATE_STEP`] and [`REBASED_STEP`] of run `a`) that ended with
    /// no Result recorded, in the order they were submitted. Read before
    /// the killed controller's checkouts go (an output file may be there).
    /// Each with its step's kind ([`CANDIDATE_STEP`] or [`REBASED_STEP`]).
    pub(super) async fn adopted_evaluations(
        &self,
        a: &Attempt,
        cand: &Cand,
    ) -> Result<Vec<(&'static str, JobReport)>, LoopError> {
        if cand.commit.is_empty() {
            return Ok(Vec::new());
        }
        // A Result names its job's log: a job with a Result is recorded.
        let recorded: HashSet<String> = a
            .results
            .iter()
            .filter_map(|r| r.meta())
            .map(|m| m.stdout_log)
            .collect();
        let run = a.run.run_id.clone();
        let mut ended: Vec<(u32, &'static str, ExecutorJob)> = self
            .ledger
            .read(|w| {
                w.find_all::<ExecutorJob>(|j| j.run_id == run && j.is_final())
                    .into_iter()
                    .map(|(_, j)| j)
                    .filter(|j| !recorded.contains(&j.stdout_log))
                    .filter_map(|j| {
                        let (kind, n) = j.step.rsplit_once('-')?;
                        let kind = [CANDIDATE_STEP, REBASED_STEP]
                            .into_iter()
                            .find(|k| *k == kind)?;
                        Some((n.parse::<u32>().ok()?, kind, j))
                    })
                    .collect()
            })
            .await;
        ended.sort_by_key(|(n, _, _)| *n);
        let mut reports = Vec::with_capacity(ended.len());
        for (_, kind, record) in ended {
            let job = self.eval_job(&run, &cand.commit, 0, &record.step);
            if let Some(report) = self.executor.adopted_report(job, record).await? {
                reports.push((kind, report));
            }
        }
        Ok(reports)
    }

    /// Carries run `a` (its candidate `cand`) on from the evaluations
    /// `reports` had (see [`Controller::adopted_evaluations`]): records
    /// each as the candidate's next sample (the first of the run with the
    /// candidate itself), then finishes the run as the loop would have: a
    /// crash when the first sample of its commit failed, else the
    /// comparator's decision applied.
    pub(super) async fn carry_on(
        &self,
        a: &Attempt,
        mut cand: Cand,
        reports: Vec<(&'static str, JobReport)>,
    ) -> Result<(), LoopError> {
        let (commit, run_id) = (cand.commit.clone(), cand.run_id.clone());
        let parent = format!("{commit}^");
        cand.base = self.git(move |g| g.run(&["rev-parse", &parent])).await?;
        let first_of_run = a.run.commit_hash.is_empty();
        if first_of_run {
            let c = commit.clone();
            let message = self
                .git(move |g| g.run(&["log", "-1", "--format=%B", &c]))
                .await?;
            cand.description = clean_description(&message).unwrap_or_default();
        }
        let mut first_failed = None;
        for (i, (step, report)) in reports.into_iter().enumerate() {
            let sample = self.sample_count(&run_id, &commit).await;
            if first_of_run && i == 0 {
                cand.workspace = report.workspace.clone();
            }
            let with_cand = (first_of_run && i == 0).then_some(&cand);
            let parsed = self
                .record_eval(&run_id, &commit, sample, step, report, with_cand)
                .await?;
            if let (0, Err(crash)) = (sample, parsed) {
                first_failed = Some((step, crash));
            }
        }
        cand.workspace.clear();
        cand.description.clear();
        if let Some((step, crash)) = first_failed {
            let reason = match step {
                REBASED_STEP => format!("after rebase: {}", crash.reason),
                _ => crash.reason,
            };
            self.finish(&cand, OutcomeStatus::Crash, &reason, &crash.detail)
                .await?;
            return Ok(());
        }
        // Measured against the head it was made on; a keep is rebased
        // when the head has moved since.
        let Some(head) = self.head().await else {
            return Err(LoopError::NoDecision { run_id });
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
}
