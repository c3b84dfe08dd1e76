//! Opening a [`World`]: creating one, materializing a tick of the ledger
//! into hecs, and copying a materialized world into a fork.

use super::{IdMap, RunIndex, World};
use crate::components::Run;
use crate::error::Error;
use crate::ids::{EntityId, Tick, WorldId};
use crate::ledger;
use crate::record::State;
use crate::registry::{ComponentRegistry, RegistryError};
use crate::storage::{Storage, WorldInfo};
use std::sync::Arc;

impl World {
    /// Creates a new empty root world named `name`.
    pub async fn create(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        name: &str,
    ) -> Result<World, Error> {
        let info = storage.create_world(name).await?;
        World::from_state(storage, registry, info, (State::empty(), 0), false)
    }

    /// Opens the world named `name` at its head.
    pub async fn open(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        name: &str,
    ) -> Result<World, Error> {
        let info = storage
            .find_world(name)
            .await?
            .ok_or_else(|| Error::NoWorldNamed(name.to_string()))?;
        World::open_id(storage, registry, info.id).await
    }

    /// Opens the world named `name`, creating it empty if it does not exist.
    pub async fn open_or_create(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        name: &str,
    ) -> Result<World, Error> {
        match storage.find_world(name).await? {
            Some(info) => World::open_id(storage, registry, info.id).await,
            None => match World::create(storage.clone(), registry.clone(), name).await {
                // Another writer created it between our look-up and create.
                Err(Error::Storage(crate::StorageError::NameTaken(_))) => {
                    World::open(storage, registry, name).await
                }
                other => other,
            },
        }
    }

    /// Opens a world by id at its head.
    pub async fn open_id(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        id: WorldId,
    ) -> Result<World, Error> {
        let info = storage.world(id).await?;
        let state = ledger::state_and_replay_at(storage.as_ref(), id, info.head).await?;
        World::from_state(storage, registry, info, state, false)
    }

    /// Opens a world read-only as it was at `tick` (time travel).
    /// Cost: one snapshot plus at most the snapshot interval of replayed ticks.
    pub async fn open_at(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        id: WorldId,
        tick: Tick,
    ) -> Result<World, Error> {
        let info = storage.world(id).await?;
        let state = ledger::state_and_replay_at(storage.as_ref(), id, tick).await?;
        let read_only = tick < info.head;
        World::from_state(storage, registry, info, state, read_only)
    }

    fn from_state(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        info: WorldInfo,
        (state, replay_bytes): (State, u64),
        read_only: bool,
    ) -> Result<World, Error> {
        let state_bytes = state.approx_bytes();
        let mut w = World {
            replay_bytes,
            state_bytes,
            storage,
            registry,
            tick: state.tick,
            read_only,
            hecs: hecs::World::new(),
            ids: IdMap::with_capacity_and_hasher(state.entities.len(), Default::default()),
            next_entity: state.next_entity,
            committed_next: state.next_entity,
            pending: Vec::new(),
            pending_values: Vec::new(),
            pending_live: IdMap::default(),
            scratch: IdMap::default(),
            undo: Default::default(),
            plain: 0,
            touched: None,
            staged: Vec::new(),
            runs: Default::default(),
            info,
        };
        // Each entity spawned with all its components at once, and its
        // encoded values freed at once (while still in cache), not in a
        // second pass over the whole state.
        let mut builder = hecs::EntityBuilder::new();
        for (id, comps) in state.entities {
            builder.add(id);
            for (name, bytes) in &comps {
                let vt = w.registry.vtable(w.info.id, name)?;
                (vt.build)(&mut builder, bytes).map_err(|source| RegistryError::Decode {
                    world: w.info.id,
                    component: name.to_string(),
                    source,
                })?;
            }
            let e = w.hecs.spawn(builder.build());
            w.ids.insert(id, e);
        }
        Ok(w)
    }

    /// The run index of the materialized runs, built on first use.
    /// `None` when the registry has no `Run` type.
    pub(super) fn run_index(&self) -> Option<&RunIndex> {
        self.runs
            .get_or_init(|| {
                let component = self.registry.name_of::<Run>().ok()?.to_string();
                let mut q = self.hecs.query::<(&EntityId, &Run)>();
                let by_id = q.iter().map(|(id, r)| (r.run_id.clone(), *id)).collect();
                Some(RunIndex { component, by_id })
            })
            .as_ref()
    }

    /// A writable handle on `info` (a fork at this handle's tick) holding
    /// a copy of this handle's materialized state: each entity's
    /// components copied through the registry straight into the new hecs
    /// world (no intermediate [`State`]). O(entities x components).
    pub(super) fn copied_as(&self, info: WorldInfo) -> Result<World, Error> {
        let mut w = World::from_state(
            self.storage.clone(),
            self.registry.clone(),
            info,
            (
                State {
                    tick: self.tick,
                    next_entity: self.committed_next,
                    entities: Default::default(),
                },
                self.replay_bytes,
            ),
            false,
        )?;
        w.state_bytes = self.state_bytes;
        w.ids.reserve(self.ids.len());
        let mut builder = hecs::EntityBuilder::new();
        for (id, e) in &self.ids {
            let Ok(eref) = self.hecs.entity(*e) else {
                continue;
            };
            builder.add(*id);
            for vt in self.registry.vtables() {
                (vt.copy)(eref, &mut builder).map_err(|source| RegistryError::Encode {
                    component: vt.name.clone(),
                    source,
                })?;
            }
            let copy = w.hecs.spawn(builder.build());
            w.ids.insert(*id, copy);
        }
        // The fork starts from the ledger's state, without this handle's
        // pending changes: put back what `modify` changed in place.
        self.undo.restore_into(&mut w.hecs, &w.ids, w.info.id)?;
        Ok(w)
    }
}
