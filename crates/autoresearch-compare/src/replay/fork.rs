//! Hand-made forks: a fork in which a chosen run became head at a tick.

use super::{HeadPoint, ReplayError, head_of, ledger_err, open_and_fork};
use autoresearch_core::lifecycle::{Outcome, attempts};
use autoresearch_core::{
    BranchHead, ComponentRegistry, EntityId, OutcomeStatus, Run, Storage, Tick, World, now_ms,
};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

/// Finds a run of `experiment` by id or unique id prefix.
pub fn find_run(world: &World, experiment: &str, id: &str) -> Result<(EntityId, Run), ReplayError> {
    if let Some(found) = world.find::<Run>(|r| r.experiment_name == experiment && r.run_id == id) {
        return Ok(found);
    }
    let mut matches = world.find_all::<Run>(|r| {
        r.experiment_name == experiment && !id.is_empty() && r.run_id.starts_with(id)
    });
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(ReplayError::UnknownRun {
            world: world.name().to_string(),
            experiment: experiment.to_string(),
            run_id: id.to_string(),
        }),
        count => Err(ReplayError::AmbiguousRun {
            world: world.name().to_string(),
            prefix: id.to_string(),
            count,
        }),
    }
}

/// What to fork.
#[derive(Clone, Debug)]
pub struct ForkRequest {
    /// The experiment whose head to move.
    pub experiment: String,
    /// The world to fork.
    pub source_world: String,
    /// The tick at which the run becomes head.
    pub at: Tick,
    /// The run to promote (id or unique prefix).
    pub promote: String,
    /// The name of the fork to create (must be free).
    pub fork_name: String,
}

/// What [`fork_promoting`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForkReport {
    /// The experiment whose head moved.
    pub experiment: String,
    /// The world forked.
    pub source_world: String,
    /// The fork created.
    pub fork_world: String,
    /// The source tick the fork was made at.
    pub at_tick: u64,
    /// The head at that tick, before the promotion.
    pub previous_head: HeadPoint,
    /// The promoted run and its commit, now the fork's head.
    pub head: HeadPoint,
    /// The fork's tick that made the run head.
    pub fork_tick: u64,
}

/// Forks `req.source_world` at `req.at` into `req.fork_name`, and makes run
/// `req.promote` the head there: one tick recording the run (as it finally
/// was in the source, with its Results and Votes), an Outcome `keep` saying
/// it was promoted by hand, and the BranchHead. The run may be any run of
/// the experiment with a commit, decided before or after the tick.
///
/// Errors: unknown world, experiment or run; a run without a commit; a tick
/// beyond the head; a taken fork name; ledger failures.
pub async fn fork_promoting(
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    req: &ForkRequest,
) -> Result<ForkReport, ReplayError> {
    let exp = req.experiment.as_str();
    // Check the run before creating anything.
    let source = World::open(storage.clone(), registry.clone(), &req.source_world)
        .await
        .map_err(ledger_err("opening the world", &req.source_world))?;
    let (_, run) = find_run(&source, exp, &req.promote)?;
    if run.commit_hash.is_empty() {
        return Err(ReplayError::NothingToPromote {
            world: req.source_world.clone(),
            run_id: run.run_id,
            why: "it never produced a commit".into(),
        });
    }
    drop(source);
    let (mut w, tick) = open_and_fork(
        &storage,
        &registry,
        &req.source_world,
        exp,
        Some(req.at),
        &req.fork_name,
    )
    .await?;
    let fork_err = |doing: &str| ledger_err(doing.to_string(), &req.fork_name);
    let previous = head_of(&w.at, exp);
    let attempt = attempts(&w.source, exp)
        .into_iter()
        .find(|a| a.run.run_id == run.run_id)
        .ok_or_else(|| ReplayError::UnknownRun {
            world: req.source_world.clone(),
            experiment: exp.to_string(),
            run_id: run.run_id.clone(),
        })?;
    let entity = w.carry_run(&attempt).map_err(fork_err("copying the run"))?;
    let descriptor = json!({
        "promoted_by": "fork",
        "source_world": req.source_world,
        "at_tick": tick.0,
        "original_outcome": attempt.outcome.as_ref().map(|o| o.status.to_string()),
    });
    let outcome = Outcome {
        run_id: run.run_id.clone(),
        status: OutcomeStatus::Keep,
        reason: format!(
            "promoted by hand in fork {:?} at tick {} of {:?}",
            req.fork_name, tick, req.source_world
        ),
        descriptor_json: descriptor.to_string(),
        base_commit: previous.commit.clone(),
        comparator: Outcome::PROMOTED_BY_FORK.into(),
        decided_at_ms: now_ms(),
    };
    w.fork
        .insert(entity, &outcome)
        .map_err(fork_err("recording the promotion"))?;
    let head = BranchHead::new(exp, &run.commit_hash, &run.run_id, &descriptor, now_ms());
    w.set_head(exp, &head)
        .map_err(fork_err("moving the head"))?;
    let fork_tick = w
        .fork
        .commit()
        .await
        .map_err(fork_err("recording the promotion"))?;
    Ok(ForkReport {
        experiment: exp.to_string(),
        source_world: req.source_world.clone(),
        fork_world: req.fork_name.clone(),
        at_tick: tick.0,
        previous_head: previous,
        head: HeadPoint {
            run_id: run.run_id,
            commit: run.commit_hash,
        },
        fork_tick: fork_tick.0,
    })
}
