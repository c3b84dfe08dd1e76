//! What each run cost ([`RunCost`] on its entity) and the experiment's
//! `[run] cost_budget`.

use super::*;
use autoresearch_core::cost::{CostKind, JobUsage, RunCost, is_cost_metric};

impl Controller {
    /// Adds one job's cost to run `run_id`'s [`RunCost`], inside a tick
    /// being made (so that it goes with the Result or decision it belongs
    /// to). A run that is not in the world is charged nothing.
    pub(super) fn charge_in(
        w: &mut World,
        run_id: &str,
        kind: CostKind,
        report: &JobReport,
    ) -> Result<(), autoresearch_core::Error> {
        let Some((entity, _)) = w.run_by_id(run_id) else {
            return Ok(());
        };
        let mut cost = w
            .get::<RunCost>(entity)
            .unwrap_or_else(|| RunCost::new(run_id));
        let metrics = match kind {
            CostKind::Propose => proposer_costs(report),
            _ => Vec::new(),
        };
        cost.charge(
            kind,
            JobUsage::new(report.duration, report.cpu_time),
            &metrics,
        );
        w.insert(entity, &cost)
    }

    /// Charges the proposer's job to its run: a staged tick of its own
    /// (nothing acts on it; the next durable write carries it).
    pub(super) async fn charge_proposer(
        &self,
        run_id: &str,
        report: &JobReport,
    ) -> Result<(), LoopError> {
        let (rid, report) = (run_id.to_string(), report.clone());
        self.ledger
            .stage(&format!("recording the cost of run {run_id}"), move |w| {
                Self::charge_in(w, &rid, CostKind::Propose, &report)
            })
            .await
    }

    /// Every run's cost in the world, summed.
    pub(super) async fn spent(&self) -> RunCost {
        self.ledger
            .read(|w| {
                let mut sum = RunCost::default();
                for (_, c) in w.find_all::<RunCost>(|_| true) {
                    sum.add(&c);
                }
                sum
            })
            .await
    }

    /// Why the loop must stop for its cost budget, when it must.
    pub(super) async fn cost_budget_spent(&self) -> Option<String> {
        let budget = self.cfg.cost_budget.as_ref()?;
        budget.exhausted_by(&self.spent().await)
    }
}

/// The cost metrics ([`is_cost_metric`]) the proposer printed, as the
/// executor read them from its whole output.
fn proposer_costs(report: &JobReport) -> Vec<(String, f64)> {
    let Some(reading) = &report.metrics else {
        return Vec::new();
    };
    reading
        .values
        .iter()
        .filter(|(k, _)| is_cost_metric(k))
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect()
}
