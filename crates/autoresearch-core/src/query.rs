//! Typed reads of a world's latest tick without a hecs world: the
//! experiment, its branch head, its runs newest first, one run and its
//! Results, and the [`Tally`] of attempts, over the current state a
//! backend keeps ([`crate::current`], [`crate::Storage::read_current`]).
//!
//! [`CurrentReader::open`] gives `None` when the backend keeps no current
//! state for the world's head (the memory backend does; the redb one does
//! for root worlds written since it was kept, not for forks or older
//! ledgers): the caller then materializes the world ([`crate::World`]) as
//! before. Every read of one reader is of the tick it opened at; a read
//! after another writer advanced the world fails with
//! [`QueryError::Moved`] rather than mix two ticks.

use crate::components::{BranchHead, EvalResult, Experiment, Outcome, Run};
use crate::current::{self, CurrentAnswer, CurrentRead, Tally};
use crate::description::Description;
use crate::ids::{EntityId, Tick, WorldId};
use crate::lifecycle::Attempt;
use crate::registry::{ComponentRegistry, ComponentValue, RegistryError};
use crate::storage::{Storage, StorageError};
use std::collections::HashMap;
use std::sync::Arc;

/// Errors of a [`CurrentReader`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored value does not decode as its registered type.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Another writer advanced the world between two reads of one reader
    /// (or the backend stopped keeping its current state): read again.
    #[error("{world} moved from tick {from} while it was read; read it again")]
    Moved {
        /// The world read.
        world: WorldId,
        /// The tick the reader opened at.
        from: Tick,
    },
    /// The backend answered a read with the wrong kind of answer.
    #[error("{world}: the ledger answered a current-state read with the wrong kind of answer")]
    BadAnswer {
        /// The world read.
        world: WorldId,
    },
}

/// Reads of one world's latest tick from its backend's current state.
pub struct CurrentReader {
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    world: WorldId,
    tick: Tick,
}

impl CurrentReader {
    /// A reader of `world`'s head, or `None` when its backend keeps no
    /// current state for it. Cost: one backend read.
    pub async fn open(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        world: WorldId,
    ) -> Result<Option<CurrentReader>, QueryError> {
        let Some(view) = storage.read_current(world, Vec::new()).await? else {
            return Ok(None);
        };
        Ok(Some(CurrentReader {
            storage,
            registry,
            world,
            tick: view.tick,
        }))
    }

    /// The tick read (the world's head when the reader opened).
    pub fn tick(&self) -> Tick {
        self.tick
    }

    /// The world read.
    pub fn world(&self) -> WorldId {
        self.world
    }

    /// Answers `reads`, all of the reader's tick.
    pub async fn read(&self, reads: Vec<CurrentRead>) -> Result<Vec<CurrentAnswer>, QueryError> {
        let moved = QueryError::Moved {
            world: self.world,
            from: self.tick,
        };
        match self.storage.read_current(self.world, reads).await? {
            Some(view) if view.tick == self.tick => Ok(view.answers),
            _ => Err(moved),
        }
    }

    fn values(&self, a: CurrentAnswer) -> Result<Vec<(EntityId, Vec<u8>)>, QueryError> {
        match a {
            CurrentAnswer::Values(v) => Ok(v),
            _ => Err(QueryError::BadAnswer { world: self.world }),
        }
    }

    fn keys(&self, a: CurrentAnswer) -> Result<Vec<(String, EntityId)>, QueryError> {
        match a {
            CurrentAnswer::Keys(v) => Ok(v),
            _ => Err(QueryError::BadAnswer { world: self.world }),
        }
    }

    fn decode_all<T: ComponentValue>(
        &self,
        v: Vec<(EntityId, Vec<u8>)>,
    ) -> Result<Vec<(EntityId, T)>, QueryError> {
        v.into_iter()
            .map(|(e, b)| Ok((e, self.registry.decode::<T>(self.world, &b)?)))
            .collect()
    }

    fn name<T: ComponentValue>(&self) -> Result<String, QueryError> {
        Ok(self.registry.name_of::<T>()?.to_string())
    }

    /// A read of every `T`, newest first when `newest_first`, below
    /// `before`, at most `limit`.
    pub fn values_read<T: ComponentValue>(
        &self,
        newest_first: bool,
        before: Option<EntityId>,
        limit: Option<usize>,
    ) -> Result<CurrentRead, QueryError> {
        Ok(CurrentRead::Values {
            component: self.name::<T>()?,
            newest_first,
            before,
            limit,
        })
    }

    /// Every entity holding `T`, with its value, in entity order.
    /// Cost: O(entities holding `T`).
    pub async fn all<T: ComponentValue>(&self) -> Result<Vec<(EntityId, T)>, QueryError> {
        let read = self.values_read::<T>(false, None, None)?;
        let a = self.read(vec![read]).await?.pop();
        let v = self.values(a.ok_or(QueryError::BadAnswer { world: self.world })?)?;
        self.decode_all(v)
    }

    /// The `T` of each of `entities` that holds one, in the order given.
    pub async fn get<T: ComponentValue>(
        &self,
        entities: &[EntityId],
    ) -> Result<Vec<(EntityId, T)>, QueryError> {
        if entities.is_empty() {
            return Ok(Vec::new());
        }
        let read = CurrentRead::Get {
            component: self.name::<T>()?,
            entities: entities.to_vec(),
        };
        let a = self.read(vec![read]).await?.pop();
        let v = self.values(a.ok_or(QueryError::BadAnswer { world: self.world })?)?;
        self.decode_all(v)
    }

    /// The entities whose secondary key `index` ([`current::BY_RUN_ID`],
    /// ...) is `key`, in entity order (newest first when `newest_first`),
    /// at most `limit`.
    pub async fn keyed(
        &self,
        index: &str,
        key: &str,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<EntityId>, QueryError> {
        Ok(self
            .keyed_prefix(index, key, false, newest_first, limit)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// As [`CurrentReader::keyed`], with the keys; every key starting with
    /// `key` when `prefix`.
    pub async fn keyed_prefix(
        &self,
        index: &str,
        key: &str,
        prefix: bool,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(String, EntityId)>, QueryError> {
        let read = CurrentRead::Keyed {
            index: index.to_string(),
            key: key.to_string(),
            prefix,
            newest_first,
            limit,
        };
        let a = self.read(vec![read]).await?.pop();
        self.keys(a.ok_or(QueryError::BadAnswer { world: self.world })?)
    }

    /// The world's [`Tally`]: attempts and Outcomes per experiment, cost.
    pub async fn tally(&self) -> Result<Tally, QueryError> {
        match self.read(vec![CurrentRead::Tally]).await?.pop() {
            Some(CurrentAnswer::Tally(t)) => Ok(t),
            _ => Err(QueryError::BadAnswer { world: self.world }),
        }
    }

    /// The experiment named `name` (the lowest entity), as
    /// [`crate::World::experiment`].
    pub async fn experiment(
        &self,
        name: &str,
    ) -> Result<Option<(EntityId, Experiment)>, QueryError> {
        Ok(self
            .all::<Experiment>()
            .await?
            .into_iter()
            .find(|(_, x)| x.name == name))
    }

    /// The branch head of `experiment`, as [`crate::World::branch_head`].
    pub async fn branch_head(
        &self,
        experiment: &str,
    ) -> Result<Option<(EntityId, BranchHead)>, QueryError> {
        Ok(self
            .all::<BranchHead>()
            .await?
            .into_iter()
            .find(|(_, h)| h.experiment_name == experiment))
    }

    /// The runs of `experiment` with this `run_id`, in entity order.
    pub async fn runs_by_id(
        &self,
        experiment: &str,
        run_id: &str,
    ) -> Result<Vec<(EntityId, Run)>, QueryError> {
        let entities = self.keyed(current::BY_RUN_ID, run_id, false, None).await?;
        let runs = self.get::<Run>(&entities).await?;
        Ok(runs
            .into_iter()
            .filter(|(_, r)| r.experiment_name == experiment)
            .collect())
    }

    /// The runs of `experiment` whose `run_id` starts with `prefix`, in
    /// run_id then entity order, at most `limit`.
    pub async fn runs_by_prefix(
        &self,
        experiment: &str,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(EntityId, Run)>, QueryError> {
        let keyed = self
            .keyed_prefix(current::BY_RUN_ID, prefix, true, false, None)
            .await?;
        let entities: Vec<EntityId> = keyed.into_iter().map(|(_, e)| e).collect();
        let mut runs: Vec<(EntityId, Run)> = self
            .get::<Run>(&entities)
            .await?
            .into_iter()
            .filter(|(_, r)| r.experiment_name == experiment)
            .collect();
        runs.truncate(limit.unwrap_or(usize::MAX));
        Ok(runs)
    }

    /// The `limit` newest runs of `experiment` (highest entity first).
    /// Cost: O(limit), whatever the history.
    pub async fn newest_runs(
        &self,
        experiment: &str,
        limit: usize,
    ) -> Result<Vec<(EntityId, Run)>, QueryError> {
        let entities = self
            .keyed(current::BY_EXPERIMENT, experiment, true, Some(limit))
            .await?;
        self.get::<Run>(&entities).await
    }

    /// The number of runs of `experiment` with secondary key `index`
    /// ([`current::ACTIVE`], [`current::PENDING`], [`current::VOTED`]),
    /// newest first, at most `limit`.
    pub async fn runs_keyed(
        &self,
        index: &str,
        experiment: &str,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(EntityId, Run)>, QueryError> {
        let entities = self.keyed(index, experiment, newest_first, limit).await?;
        self.get::<Run>(&entities).await
    }

    /// The Outcome of each of `entities` that has one, by entity.
    pub async fn outcomes(
        &self,
        entities: &[EntityId],
    ) -> Result<HashMap<EntityId, Outcome>, QueryError> {
        Ok(self.get::<Outcome>(entities).await?.into_iter().collect())
    }

    /// Every `T` joined to `run_id` by secondary key `index`
    /// ([`current::RESULT_OF`], [`current::VOTE_ON`], ...), in entity order.
    pub async fn joined<T: ComponentValue>(
        &self,
        index: &str,
        run_id: &str,
    ) -> Result<Vec<(EntityId, T)>, QueryError> {
        let entities = self.keyed(index, run_id, false, None).await?;
        self.get::<T>(&entities).await
    }

    /// Every attempt of `experiment` in recorded (entity) order, as
    /// [`crate::lifecycle::attempts`] reads them from a world, from one
    /// consistent read of the Runs, Outcomes, Descriptions and Results.
    /// Cost: O(the world's runs and Results): for reads that chart every
    /// attempt (`plot`).
    pub async fn all_attempts(&self, experiment: &str) -> Result<Vec<Attempt>, QueryError> {
        let reads = vec![
            self.values_read::<Run>(false, None, None)?,
            self.values_read::<Outcome>(false, None, None)?,
            self.values_read::<Description>(false, None, None)?,
            self.values_read::<EvalResult>(false, None, None)?,
        ];
        let mut answers = self.read(reads).await?.into_iter();
        let mut next = || {
            answers
                .next()
                .ok_or(QueryError::BadAnswer { world: self.world })
        };
        let runs = self.values(next()?)?;
        let outcomes = self.values(next()?)?;
        let descriptions = self.values(next()?)?;
        let results = self.values(next()?)?;
        let mut runs: Vec<(EntityId, Run)> = runs
            .into_iter()
            .map(|(e, b)| Ok((e, self.registry.decode::<Run>(self.world, &b)?)))
            .filter(|r: &Result<(EntityId, Run), QueryError>| {
                r.as_ref()
                    .map_or(true, |(_, r)| r.experiment_name == experiment)
            })
            .collect::<Result<_, QueryError>>()?;
        runs.sort_by_key(|(e, _)| *e);
        let mine: std::collections::HashSet<&str> =
            runs.iter().map(|(_, r)| r.run_id.as_str()).collect();
        let mut by_run: HashMap<String, Vec<EvalResult>> = HashMap::new();
        for (_, b) in results {
            let r: EvalResult = self.registry.decode(self.world, &b)?;
            if mine.contains(r.run_id.as_str()) {
                by_run.entry(r.run_id.clone()).or_default().push(r);
            }
        }
        let mut outcomes: HashMap<EntityId, Outcome> =
            self.decode_all(outcomes)?.into_iter().collect();
        let mut descriptions: HashMap<EntityId, Description> =
            self.decode_all(descriptions)?.into_iter().collect();
        let mut out = Vec::with_capacity(runs.len());
        for (entity, run) in runs {
            out.push(Attempt {
                entity,
                results: by_run.remove(&run.run_id).unwrap_or_default(),
                outcome: outcomes.remove(&entity),
                description: descriptions.remove(&entity),
                run,
            });
        }
        Ok(out)
    }

    /// The [`Attempt`] of each run (its Results, Outcome and Description),
    /// as [`Attempt::of`] builds it, in the order given.
    /// Cost: O(runs + their Results), whatever the history.
    pub async fn attempts(&self, runs: Vec<(EntityId, Run)>) -> Result<Vec<Attempt>, QueryError> {
        let entities: Vec<EntityId> = runs.iter().map(|(e, _)| *e).collect();
        let reads = vec![
            CurrentRead::Get {
                component: self.name::<Outcome>()?,
                entities: entities.clone(),
            },
            CurrentRead::Get {
                component: self.name::<Description>()?,
                entities,
            },
        ];
        let mut answers = self.read(reads).await?.into_iter();
        let mut next = || {
            answers
                .next()
                .ok_or(QueryError::BadAnswer { world: self.world })
        };
        let outcomes = self.decode_all(self.values(next()?)?)?;
        let descriptions = self.decode_all(self.values(next()?)?)?;
        self.with_results(runs, outcomes, descriptions).await
    }

    /// The [`Attempt`] of each of `entities` that holds a Run, in the
    /// order given, as [`CurrentReader::attempts`] of their Runs gives
    /// them; the Runs, Outcomes and Descriptions are read together, so
    /// that a record holding several of them is read once (`plot`'s
    /// drawn attempts). Cost: O(entities + their Results).
    pub async fn attempts_of(&self, entities: &[EntityId]) -> Result<Vec<Attempt>, QueryError> {
        if entities.is_empty() {
            return Ok(Vec::new());
        }
        let get = |component: String| CurrentRead::Get {
            component,
            entities: entities.to_vec(),
        };
        let reads = vec![
            get(self.name::<Run>()?),
            get(self.name::<Outcome>()?),
            get(self.name::<Description>()?),
        ];
        let mut answers = self.read(reads).await?.into_iter();
        let mut next = || {
            answers
                .next()
                .ok_or(QueryError::BadAnswer { world: self.world })
        };
        let runs = self.decode_all(self.values(next()?)?)?;
        let outcomes = self.decode_all(self.values(next()?)?)?;
        let descriptions = self.decode_all(self.values(next()?)?)?;
        self.with_results(runs, outcomes, descriptions).await
    }

    /// `runs` joined with their Outcomes and Descriptions (by entity) and
    /// their Results (read here, through [`current::RESULT_OF`]), in the
    /// order of `runs`.
    async fn with_results(
        &self,
        runs: Vec<(EntityId, Run)>,
        outcomes: Vec<(EntityId, Outcome)>,
        descriptions: Vec<(EntityId, Description)>,
    ) -> Result<Vec<Attempt>, QueryError> {
        let mut reads = Vec::with_capacity(runs.len());
        for (_, r) in &runs {
            reads.push(CurrentRead::Keyed {
                index: current::RESULT_OF.to_string(),
                key: r.run_id.clone(),
                prefix: false,
                newest_first: false,
                limit: None,
            });
        }
        let mut answers = self.read(reads).await?.into_iter();
        let mut next = || {
            answers
                .next()
                .ok_or(QueryError::BadAnswer { world: self.world })
        };
        let outcomes: HashMap<EntityId, Outcome> = outcomes.into_iter().collect();
        let descriptions: HashMap<EntityId, Description> = descriptions.into_iter().collect();
        let mut result_entities = Vec::with_capacity(runs.len());
        for _ in &runs {
            let keys = self.keys(next()?)?;
            result_entities.push(keys.into_iter().map(|(_, e)| e).collect::<Vec<_>>());
        }
        let flat: Vec<EntityId> = result_entities.iter().flatten().copied().collect();
        let results: HashMap<EntityId, EvalResult> =
            self.get::<EvalResult>(&flat).await?.into_iter().collect();
        Ok(runs
            .into_iter()
            .zip(result_entities)
            .map(|((entity, run), rs)| Attempt {
                entity,
                results: rs.iter().filter_map(|e| results.get(e).cloned()).collect(),
                outcome: outcomes.get(&entity).cloned(),
                description: descriptions.get(&entity).cloned(),
                run,
            })
            .collect())
    }
}
