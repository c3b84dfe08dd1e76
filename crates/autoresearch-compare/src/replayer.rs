//! [`LedgerReplayer`]: core's [`Replayer`] interface on [`replay`], for
//! front ends that may not depend on this crate (the dashboard).

use crate::replay::{ReplayError, ReplayRequest, ReplayStep, replay};
use autoresearch_core::{
    ComponentRegistry, OutcomeStatus, ReplayOrder, ReplayStarted, Replayer, ReplayerError, Storage,
};
use std::sync::Arc;

/// Opens the ledger for writing, for one replay; `Err` holds why it could not.
pub type OpenLedger = Arc<dyn Fn() -> Result<Arc<dyn Storage>, String> + Send + Sync>;

/// Replays into a ledger opened by `open` for each replay (and closed
/// after it), decoding with `registry`.
pub struct LedgerReplayer {
    open: OpenLedger,
    registry: Arc<ComponentRegistry>,
}

impl LedgerReplayer {
    /// A replayer writing to the ledger `open` opens.
    pub fn new(open: OpenLedger, registry: Arc<ComponentRegistry>) -> LedgerReplayer {
        LedgerReplayer { open, registry }
    }
}

/// Whether a step was decided differently: a keep and a baseline both make
/// the candidate head, so they count as the same (as `autoresearch replay`
/// marks them).
pub fn decided_differently(s: &ReplayStep) -> bool {
    fn class(status: &str) -> OutcomeStatus {
        match OutcomeStatus::from_word(status) {
            OutcomeStatus::Baseline => OutcomeStatus::Keep,
            other => other,
        }
    }
    class(&s.original.status) != class(&s.counterfactual.status)
}

/// `base`, or `base-2`, `base-3`... whichever is not a world of `storage` yet.
async fn free_name(storage: &Arc<dyn Storage>, base: &str) -> Result<String, ReplayerError> {
    for n in 1..1000 {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        match storage.find_world(&name).await {
            Ok(None) => return Ok(name),
            Ok(Some(_)) => {}
            Err(e) => {
                return Err(ReplayerError::Failed(format!(
                    "looking for a free world name like {base:?}: {e}"
                )));
            }
        }
    }
    Err(ReplayerError::Refused(format!(
        "no free world name like {base:?}: give the fork a name"
    )))
}

#[async_trait::async_trait]
impl Replayer for LedgerReplayer {
    fn check_spec(&self, spec: &str) -> Result<String, ReplayerError> {
        crate::from_spec(spec)
            .map(|c| c.spec())
            .map_err(|e| ReplayerError::BadSpec(e.to_string()))
    }

    async fn replay(&self, order: ReplayOrder) -> Result<ReplayStarted, ReplayerError> {
        let comparator = crate::from_spec(&order.comparator)
            .map_err(|e| ReplayerError::BadSpec(e.to_string()))?;
        let storage = (self.open)().map_err(ReplayerError::Failed)?;
        if let Some(name) = &order.fork_name
            && matches!(storage.find_world(name).await, Ok(Some(_)))
        {
            return Err(ReplayerError::Refused(format!(
                "a world named {name:?} already exists"
            )));
        }
        let fork_name = match order.fork_name {
            Some(n) => n,
            None => {
                let kind = order.comparator.split(':').next().unwrap_or("replay");
                free_name(
                    &storage,
                    &format!("{}-replay-{}", order.experiment, kind.trim()),
                )
                .await?
            }
        };
        let request = ReplayRequest {
            experiment: order.experiment,
            source_world: order.source_world,
            from: order.from,
            fork_name,
        };
        let report = replay(storage, self.registry.clone(), &request, comparator)
            .await
            .map_err(|e| match e {
                ReplayError::Ledger { .. } => ReplayerError::Failed(e.to_string()),
                other => ReplayerError::Refused(other.to_string()),
            })?;
        Ok(ReplayStarted {
            fork_world: report.fork_world,
            from_tick: report.from_tick,
            comparator: report.comparator,
            candidates: report.steps.len(),
            changed: report
                .steps
                .iter()
                .filter(|s| decided_differently(s))
                .count(),
        })
    }
}
