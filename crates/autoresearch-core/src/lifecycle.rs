//! How an experiment lives in a world, shared by every layer that writes or
//! reads one (the loop, the results.tsv importer, `log`, `replay`, `plot`):
//!
//! - world `autoresearch:{experiment}` ([`experiment_world_name`]) holds one
//!   `Experiment` entity and one `BranchHead` entity;
//! - each attempt is a `Run` entity that also carries an [`Outcome`] once
//!   decided; its Results are entities of their own joined by `run_id`.

use crate::compare::Evidence;
use crate::components::{EvalResult, Run};
pub use crate::components::{Outcome, Vote};
use crate::description::Description;
use crate::ids::EntityId;
use crate::world::World;

/// The prefix of an experiment's world name.
const WORLD_PREFIX: &str = "autoresearch:";

/// The name of the world that holds experiment `name`: `autoresearch:{name}`.
pub fn experiment_world_name(name: &str) -> String {
    format!("{WORLD_PREFIX}{name}")
}

/// The experiment whose world is named `world` (the inverse of
/// [`experiment_world_name`]); `None` for any other world name.
pub fn experiment_of_world(world: &str) -> Option<&str> {
    world.strip_prefix(WORLD_PREFIX)
}

/// A world's name without the experiment prefix (`autoresearch:x` gives
/// `x`; other names are returned whole), for file and branch names.
pub fn world_short_name(world: &str) -> &str {
    experiment_of_world(world).unwrap_or(world)
}

/// The evidence stored for one side of a comparison, read from `world`:
/// the Results of `run_id` that count for `commit` ([`EvalResult::counts_for`])
/// and the votes cast on it. The diff is left to the caller. An empty
/// `run_id` (a head without a run) has no evidence. Used by the loop and by
/// replay alike, so both compare the same samples. Cost: one pass over the
/// world's Results and Votes.
pub fn stored_evidence(world: &World, run_id: &str, commit: &str) -> Evidence {
    let (results, votes) = if run_id.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (
            world
                .results_for(run_id)
                .into_iter()
                .map(|(_, r)| r)
                .filter(|r| r.counts_for(commit))
                .collect(),
            world
                .find_all::<Vote>(|v| v.run_id == run_id)
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
        )
    };
    Evidence {
        run_id: run_id.to_string(),
        commit: commit.to_string(),
        results,
        diff: None,
        votes,
        noise: None,
    }
}

/// One attempt of an experiment as read from its world.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The run's entity in the world.
    pub entity: EntityId,
    /// The run record.
    pub run: Run,
    /// Every Result whose `run_id` is this run's, in the order they were recorded.
    pub results: Vec<EvalResult>,
    /// The loop's decision on the run; `None` while undecided or when none was ever recorded
    /// (imports).
    pub outcome: Option<Outcome>,
    /// What the proposer tried ([`Description`]); `None` for runs recorded
    /// before descriptions were, baselines, imports and proposers that
    /// crashed before leaving a candidate.
    pub description: Option<Description>,
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
            description: world.get::<Description>(entity),
            run,
        }
    }

    /// The description's subject line, when there is one.
    pub fn idea(&self) -> Option<&str> {
        self.description
            .as_ref()
            .map(Description::subject)
            .filter(|s| !s.is_empty())
    }
}

impl Attempt {
    /// The Results that are samples of the run's final commit: a Result
    /// measured on another commit (the candidate before a rebase, marked by
    /// `_meta.commit`) is left out; with no commit recorded, every Result.
    pub fn final_results(&self) -> impl Iterator<Item = &EvalResult> {
        let commit = self.run.commit_hash.as_str();
        self.results
            .iter()
            .filter(move |r| commit.is_empty() || r.counts_for(commit))
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
            description: world.get::<Description>(entity),
            run,
        })
        .collect()
}
