//! Reading a materialized [`World`]: component look-ups, the run index,
//! and entity history from the ledger.

use super::World;
use crate::components::{BranchHead, EvalResult, Experiment, Run};
use crate::error::Error;
use crate::ids::EntityId;
use crate::ledger::{self, EntityChange};
use crate::registry::ComponentValue;

impl World {
    /// A clone of component `T` of `entity`, if it has one, as materialized
    /// (a pending [`World::insert`] is not seen, a [`World::modify`] is).
    /// To change it, [`World::modify`] saves the clone.
    pub fn get<T: ComponentValue + Clone>(&self, entity: EntityId) -> Option<T> {
        let e = self.hecs_entity(entity)?;
        self.hecs.get::<&T>(e).ok().map(|v| (*v).clone())
    }

    /// Every entity with a `T` for which `pred` holds, with a clone of it,
    /// ordered by entity id.
    pub fn find_all<T: ComponentValue + Clone>(
        &self,
        mut pred: impl FnMut(&T) -> bool,
    ) -> Vec<(EntityId, T)> {
        let mut q = self.hecs.query::<(&EntityId, &T)>();
        let mut v: Vec<(EntityId, T)> = q
            .iter()
            .filter(|(_, t)| pred(t))
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The first entity (lowest id) with a `T` for which `pred` holds.
    pub fn find<T: ComponentValue + Clone>(
        &self,
        pred: impl FnMut(&T) -> bool,
    ) -> Option<(EntityId, T)> {
        self.find_all(pred).into_iter().next()
    }

    /// The run with this `run_id` (the lowest entity holding it, should
    /// several). Cost: O(log n), through an index the world keeps in step
    /// with every applied tick; the first look-up on a handle builds it
    /// (O(n log n) in the runs held).
    pub fn run_by_id(&self, run_id: &str) -> Option<(EntityId, Run)> {
        let Some(index) = self.run_index() else {
            return self.find::<Run>(|r| r.run_id == run_id);
        };
        let (id, entity) = index
            .by_id
            .range((run_id.to_string(), EntityId(0))..)
            .next()
            .filter(|(id, _)| id == run_id)?;
        debug_assert_eq!(id, run_id);
        Some((*entity, self.get::<Run>(*entity)?))
    }

    /// The experiment with this name.
    pub fn experiment(&self, name: &str) -> Option<(EntityId, Experiment)> {
        self.find::<Experiment>(|x| x.name == name)
    }

    /// The branch head of an experiment.
    pub fn branch_head(&self, experiment: &str) -> Option<(EntityId, BranchHead)> {
        self.find::<BranchHead>(|h| h.experiment_name == experiment)
    }

    /// Every Result of a run, in entity order (the order they were recorded).
    pub fn results_for(&self, run_id: &str) -> Vec<(EntityId, EvalResult)> {
        self.find_all::<EvalResult>(|r| r.run_id == run_id)
    }

    /// Every change to `entity` up to this world's tick, oldest first.
    pub async fn history(&self, entity: EntityId) -> Result<Vec<EntityChange>, Error> {
        ledger::entity_history(self.storage.as_ref(), self.info.id, entity, self.tick).await
    }
}
