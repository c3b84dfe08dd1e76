//! What each run cost ([`RunCost`] on its entity) and the experiment's
//! `[run] cost_budget`.

use super::*;
use autoresearch_core::cost::{CostKind, JobUsage, RunCost, is_cost_metric};

impl Controller {
    /// Changes run `run_id`'s [`RunCost`] with `charge`, inside a tick
    /// being made (so that a job's cost goes with the Result or decision
    /// it belongs to). One call per run and tick: a world reads its
    /// committed state, so a second call in the same tick would overwrite
    /// the first. A run that is not in the world is charged nothing.
    pub(super) fn charge_in(
        w: &mut World,
        run_id: &str,
        charge: impl FnOnce(&mut RunCost),
    ) -> Result<(), autoresearch_core::Error> {
        let Some((entity, _)) = w.run_by_id(run_id) else {
            return Ok(());
        };
        let mut cost = w
            .get::<RunCost>(entity)
            .unwrap_or_else(|| RunCost::new(run_id));
        charge(&mut cost);
        w.insert(entity, &cost)
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

/// The time a job took.
pub(super) fn usage_of(report: &JobReport) -> JobUsage {
    JobUsage::new(report.duration, report.cpu_time)
}

impl ProposerCost {
    /// A proposer's cost: its usage and the cost metrics
    /// ([`is_cost_metric`]) it printed, as the executor read them from its
    /// whole output.
    pub(super) fn of(report: &JobReport) -> ProposerCost {
        let metrics = match &report.metrics {
            Some(reading) => reading
                .values
                .iter()
                .filter(|(k, _)| is_cost_metric(k))
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect(),
            None => Vec::new(),
        };
        ProposerCost {
            usage: usage_of(report),
            metrics,
        }
    }

    /// Adds it to `cost`.
    pub(super) fn charge(&self, cost: &mut RunCost) {
        cost.charge(CostKind::Propose, self.usage, &self.metrics);
    }
}
