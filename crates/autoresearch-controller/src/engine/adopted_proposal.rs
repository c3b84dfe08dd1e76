//! A proposer job (`propose_on = "slurm"`) a killed controller left with
//! a scheduler that ended while no controller watched it. When the run's
//! candidate was not recorded yet and the head has not moved since the
//! run started (so the head is what the proposer worked on),
//! [`Controller::recover`] reads the job's report
//! ([`Executor::adopted_report`], which builds the candidate from the
//! job's checkout as it would have had the controller waited) before the
//! killed controller's checkouts go, then carries the run on as the loop
//! would after its proposer: the candidate checked, evaluated, decided.

use super::*;
use autoresearch_core::jobs::ExecutorJob;

/// A run's proposer job that ended unrecorded: its report, and the head
/// it was proposed on.
pub(super) struct AdoptedProposal {
    head: Head,
    report: JobReport,
}

impl Controller {
    /// The report of run `a`'s proposer job when it ended unrecorded: the
    /// run has no candidate (`cand.commit` empty, no candidate ref), the job's
    /// record is final, the head has not moved since the run started, and
    /// the executor can read the job's end (`None` otherwise: the run is
    /// finished as interrupted).
    pub(super) async fn adopted_proposal(
        &self,
        a: &Attempt,
        cand: &Cand,
    ) -> Result<Option<AdoptedProposal>, LoopError> {
        if !cand.commit.is_empty() {
            return Ok(None);
        }
        let (run, exp) = (a.run.run_id.clone(), self.cfg.experiment.clone());
        let (record, head_moved_at) = self
            .ledger
            .read(move |w| {
                let record = w
                    .find_all::<ExecutorJob>(|j| {
                        j.run_id == run && j.step == PROPOSE_STEP && j.is_final()
                    })
                    .into_iter()
                    .map(|(_, j)| j)
                    .next();
                (record, w.branch_head(&exp).map(|(_, h)| h.updated_at_ms))
            })
            .await;
        let (Some(record), Some(head), Some(moved_at)) = (record, self.head().await, head_moved_at)
        else {
            return Ok(None);
        };
        if moved_at > a.run.started_at_ms {
            return Ok(None);
        }
        let job = self.propose_job(&a.run.run_id, &head.commit, BTreeMap::new());
        Ok(self
            .executor
            .adopted_report(job, record)
            .await?
            .map(|report| AdoptedProposal { head, report }))
    }

    /// Carries run `cand` on from its adopted proposer's report as
    /// [`Controller::attempt`] would have after the proposer: a crash when
    /// the proposer failed, a discard when its candidate is refused, else
    /// the candidate's first evaluation and the comparator's decision
    /// ([`Controller::carry_on`]).
    pub(super) async fn carry_on_proposal(
        &self,
        mut cand: Cand,
        proposal: AdoptedProposal,
    ) -> Result<(), LoopError> {
        let AdoptedProposal { head, report } = proposal;
        cand.base = head.commit.clone();
        cand.proposer_cost = Some(ProposerCost::of(&report));
        if !report.status.success() {
            let c = self.crash_of(
                PROPOSE_STEP,
                &format!("proposer {}", report.status),
                &report,
            );
            self.finish(&cand, OutcomeStatus::Crash, &c.reason, &c.detail)
                .await?;
            return Ok(());
        }
        if self
            .check_candidate(&head, &mut cand, &report)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let run_id = cand.run_id.clone();
        let evaluated = self
            .evaluate(
                &run_id,
                &run_id,
                &cand.commit,
                0,
                CANDIDATE_STEP,
                Some(&cand),
            )
            .await?;
        cand.workspace.clear();
        cand.proposer_cost = None;
        cand.description.clear();
        match evaluated {
            Ok(_) => self.carry_on(cand, None).await,
            Err(c) => self
                .finish(&cand, OutcomeStatus::Crash, &c.reason, &c.detail)
                .await
                .map(drop),
        }
    }
}
