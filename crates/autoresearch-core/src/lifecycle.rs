//! How an experiment lives in a world, shared by every layer that writes or
//! reads one (the loop, the results.tsv importer, `log`, `replay`, `plot`):
//!
//! - world `autoresearch:{experiment}` ([`experiment_world_name`]) holds one
//!   `Experiment` entity and one `BranchHead` entity;
//! - each attempt is a `Run` entity that also carries an [`Outcome`] once
//!   decided; its Results are entities of their own joined by `run_id`.

use crate::components::{EvalResult, Run};
use crate::ids::EntityId;
use crate::world::World;
use serde::{Deserialize, Serialize};

/// The name of the world that holds experiment `name`.
pub fn experiment_world_name(name: &str) -> String {
    format!("autoresearch:{name}")
}

/// What the loop decided for a run, stored as component `Outcome` on the run's
/// entity. `status` is karpathy's vocabulary plus two of ours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub run_id: String,
    /// `keep`, `discard`, `crash`, `pending` (waiting for votes) or
    /// `baseline` (an evaluation of a head the loop did not choose: the
    /// initial branch tip, or a branch moved by someone else).
    pub status: String,
    /// One line for people: the comparator's reason, or the crash cause.
    pub reason: String,
    /// The comparator's descriptor, JSON text.
    pub descriptor_json: String,
    /// The incumbent commit the candidate was measured against.
    pub base_commit: String,
    /// The comparator spec that decided, empty for crashes and baselines.
    pub comparator: String,
    pub decided_at_ms: i64,
}

impl Outcome {
    pub const KEEP: &'static str = "keep";
    pub const DISCARD: &'static str = "discard";
    pub const CRASH: &'static str = "crash";
    pub const PENDING: &'static str = "pending";
    pub const BASELINE: &'static str = "baseline";
}

/// One attempt of an experiment as read from its world.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub entity: EntityId,
    pub run: Run,
    pub results: Vec<EvalResult>,
    pub outcome: Option<Outcome>,
}

impl Attempt {
    /// The attempt of one run: its Results (looked up by `run_id`) and its
    /// Outcome. Cost: one pass over the world's Results; for many runs,
    /// [`attempts`] groups them in one pass.
    pub fn of(world: &World, entity: EntityId, run: Run) -> Attempt {
        Attempt {
            entity,
            results: world
                .results_for(&run.run_id)
                .into_iter()
                .map(|(_, r)| r)
                .collect(),
            outcome: world.get::<Outcome>(entity),
            run,
        }
    }
}

/// Every run of `experiment` in `world`, in the order they were recorded
/// (entity id order), with their Results and Outcome.
pub fn attempts(world: &World, experiment: &str) -> Vec<Attempt> {
    let mut results: std::collections::HashMap<String, Vec<EvalResult>> = Default::default();
    for (_, r) in world.find_all::<EvalResult>(|_| true) {
        results.entry(r.run_id.clone()).or_default().push(r);
    }
    world
        .find_all::<Run>(|r| r.experiment_name == experiment)
        .into_iter()
        .map(|(entity, run)| Attempt {
            entity,
            results: results.remove(&run.run_id).unwrap_or_default(),
            outcome: world.get::<Outcome>(entity),
            run,
        })
        .collect()
}
