//! [`TickWriter`]: appends ticks to a world without materializing it, for
//! writers that keep their own index of the entities they write (a bulk
//! ingest that knows which entity holds which source row).

use crate::error::Error;
use crate::ids::{EntityId, Tick, WorldId, now_ms};
use crate::ledger;
use crate::record::{Change, State, TickRecord};
use crate::registry::{ComponentRegistry, ComponentValue};
use crate::storage::{ForkPoint, Storage, StorageError, WorldInfo};
use crate::world::World;
use std::sync::Arc;

/// Buffers changes to one world at a known head and appends them as the next
/// tick, like [`World::commit`], without holding the world's state.
///
/// Unlike [`World`] it cannot check that an entity is alive: the caller
/// promises that every entity it sets a component on was spawned by this
/// writer or is alive at the head the writer was resumed at (it learnt the
/// ids from a materialized [`World`] or from its own earlier commits to the
/// same head). The storage checks the promise when it appends: a record
/// that does not apply to the head is refused with
/// [`StorageError::NotApplicable`] and nothing of it is stored.
///
/// Cost: O(pending changes) per commit, except on ticks where the storage
/// asks for a snapshot (`tick % snapshot_interval == 0`): those materialize
/// the state at the head ([`ledger::state_at`]) to write it.
pub struct TickWriter {
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    info: WorldInfo,
    next_entity: u64,
    pending: Vec<Change>,
    /// The name of the world the first commit creates
    /// ([`TickWriter::create_on_commit`]); `None` once it exists.
    unborn: Option<String>,
}

impl TickWriter {
    /// A writer for the world a materialized `world` is at: its head tick
    /// and next entity id. Errors if `world` is read-only (a past tick).
    pub fn from_world(world: &World) -> Result<TickWriter, Error> {
        if world.is_read_only() {
            return Err(Error::ReadOnly {
                world: world.id(),
                tick: world.tick(),
            });
        }
        let mut info = world.info().clone();
        info.head = world.tick();
        Ok(TickWriter {
            storage: world.storage().clone(),
            registry: world.registry().clone(),
            info,
            next_entity: world.next_entity(),
            pending: Vec::new(),
            unborn: None,
        })
    }

    /// A writer for a new, empty root world named `name`.
    pub async fn create(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        name: &str,
    ) -> Result<TickWriter, Error> {
        let info = storage.create_world(name).await?;
        Ok(TickWriter {
            storage,
            registry,
            next_entity: 0,
            info,
            pending: Vec::new(),
            unborn: None,
        })
    }

    /// A writer for a new, empty root world named `name` that its first
    /// [`TickWriter::commit`] creates together with its first tick
    /// ([`Storage::create_and_append`]: one durable write instead of two on
    /// a durable backend, and no empty world left when the tick is
    /// refused). A name already taken is refused at that commit
    /// (`NameTaken`); a commit with nothing buffered creates the empty world.
    ///
    /// Until the first commit succeeds the world has no id:
    /// [`TickWriter::info`] then gives id `WorldId(u64::MAX)`, head 0.
    pub fn create_on_commit(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        name: &str,
    ) -> TickWriter {
        TickWriter {
            storage,
            registry,
            next_entity: 0,
            info: WorldInfo {
                id: WorldId(u64::MAX),
                name: name.to_string(),
                head: Tick::ZERO,
                parent: None,
                created_at_ms: now_ms(),
            },
            pending: Vec::new(),
            unborn: Some(name.to_string()),
        }
    }

    /// A writer for a new world named `name` forked from `parent` at tick
    /// `at` (whose next entity id there is `next_entity`, as a [`World`]
    /// or [`crate::State`] at that tick reports it), that its first
    /// [`TickWriter::commit`] creates together with its first tick
    /// ([`Storage::fork_and_append`]: one durable write where
    /// [`Storage::fork_world`] then a commit make two, and no empty fork
    /// left when the tick is refused). Errors as `fork_and_append` at that
    /// commit (`NameTaken`, `ForkBeyondHead`, ...); a commit with nothing
    /// buffered creates the empty fork.
    ///
    /// Until the first commit succeeds the fork has no id:
    /// [`TickWriter::info`] then gives id `WorldId(u64::MAX)`, head `at`.
    pub fn fork_on_commit(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        parent: WorldId,
        at: Tick,
        name: &str,
        next_entity: u64,
    ) -> TickWriter {
        TickWriter {
            storage,
            registry,
            next_entity,
            info: WorldInfo {
                id: WorldId(u64::MAX),
                name: name.to_string(),
                head: at,
                parent: Some(ForkPoint { parent, tick: at }),
                created_at_ms: now_ms(),
            },
            pending: Vec::new(),
            unborn: Some(name.to_string()),
        }
    }

    /// Resumes writing world `id` at tick `head`, whose next entity id is
    /// `next_entity` (as a [`World`] or [`crate::State`] at that tick reports
    /// it). Errors with a storage `Conflict` if the world's head is not
    /// `head` (another writer advanced it): the caller's knowledge is stale.
    pub async fn resume(
        storage: Arc<dyn Storage>,
        registry: Arc<ComponentRegistry>,
        id: WorldId,
        head: Tick,
        next_entity: u64,
    ) -> Result<TickWriter, Error> {
        let info = storage.world(id).await?;
        if info.head != head {
            return Err(Error::Storage(StorageError::Conflict {
                world: id,
                attempted: head.next(),
                head: info.head,
            }));
        }
        Ok(TickWriter {
            storage,
            registry,
            info,
            next_entity,
            pending: Vec::new(),
            unborn: None,
        })
    }

    /// The world's catalogue entry, its head advanced by this writer's commits.
    pub fn info(&self) -> &WorldInfo {
        &self.info
    }

    /// The last committed tick this writer knows.
    pub fn head(&self) -> Tick {
        self.info.head
    }

    /// The next entity id [`TickWriter::spawn`] hands out.
    pub fn next_entity(&self) -> u64 {
        self.next_entity
    }

    /// The component types this writer encodes.
    pub fn registry(&self) -> &Arc<ComponentRegistry> {
        &self.registry
    }

    /// Reserves room for at least `additional` more buffered changes: a
    /// bulk writer that knows how many rows it writes sizes the tick once
    /// instead of growing (and copying) it as it goes.
    pub fn reserve(&mut self, additional: usize) {
        self.pending.reserve(additional);
    }

    /// Allocates a new entity id and buffers its spawn.
    pub fn spawn(&mut self) -> EntityId {
        let entity = EntityId(self.next_entity);
        self.next_entity += 1;
        self.pending.push(Change::Spawn { entity });
        entity
    }

    /// Buffers setting component `value` on `entity` (see the type's
    /// liveness promise) and returns the encoded bytes it will store.
    pub fn set<T: ComponentValue>(&mut self, entity: EntityId, value: &T) -> Result<&[u8], Error> {
        let (component, value) = self.registry.encode(value)?;
        self.pending.push(Change::Set {
            entity,
            component,
            value,
        });
        match self.pending.last() {
            Some(Change::Set { value, .. }) => Ok(value),
            _ => unreachable!("a Set was just pushed"),
        }
    }

    /// Buffers setting component `component` on `entity` to `value`, bytes
    /// the caller encoded (for example from a borrowed view that serializes
    /// exactly as the registered type, to avoid building owned values in
    /// bulk). The caller promises `value` is the registry's encoding of a
    /// value of that component; it is stored as given.
    pub fn set_encoded(&mut self, entity: EntityId, component: String, value: Vec<u8>) {
        self.pending.push(Change::Set {
            entity,
            component,
            value,
        });
    }

    /// The buffered changes of the next tick.
    pub fn pending(&self) -> &[Change] {
        &self.pending
    }

    /// Appends the buffered changes as tick `head + 1`. With nothing
    /// buffered, returns the head and appends nothing.
    ///
    /// Errors: `Conflict` when another writer advanced the world first. On
    /// an error the head is unchanged; the pending changes are kept if the
    /// snapshot could not be made, and dropped if the append failed.
    pub async fn commit(&mut self) -> Result<Tick, Error> {
        if self.pending.is_empty() {
            if let Some(name) = self.unborn.take() {
                let created = match self.info.parent {
                    Some(p) => self.storage.fork_world(p.parent, p.tick, &name).await,
                    None => self.storage.create_world(&name).await,
                };
                match created {
                    Ok(info) => self.info = info,
                    Err(e) => {
                        self.unborn = Some(name);
                        return Err(e.into());
                    }
                }
            }
            return Ok(self.info.head);
        }
        let tick = self.info.head.next();
        let record = TickRecord {
            tick,
            at_ms: now_ms(),
            changes: std::mem::take(&mut self.pending),
        };
        let snapshot = if self.storage.snapshot_due(tick) {
            let state = match (&self.unborn, self.info.parent) {
                (Some(_), None) => Ok(State::empty()),
                // An unborn fork starts from its parent's state.
                (Some(_), Some(p)) => {
                    ledger::state_at(self.storage.as_ref(), p.parent, p.tick).await
                }
                (None, _) => {
                    ledger::state_at(self.storage.as_ref(), self.info.id, self.info.head).await
                }
            }
            .map(|mut s| s.apply(self.info.id, &record).map(|()| s));
            match state {
                Ok(Ok(s)) => Some(crate::world::into_snapshot(s)),
                Ok(Err(e)) => {
                    self.pending = record.changes;
                    return Err(e.into());
                }
                Err(e) => {
                    self.pending = record.changes;
                    return Err(e);
                }
            }
        } else {
            None
        };
        // The record is moved, not copied (a bulk tick can be large), so a
        // failed append drops the changes.
        match self.unborn.take() {
            Some(name) => {
                let records = vec![(record, snapshot)];
                let created = match self.info.parent {
                    Some(p) => {
                        self.storage
                            .fork_and_append(p.parent, p.tick, &name, records)
                            .await
                    }
                    None => self.storage.create_and_append(&name, records).await,
                };
                match created {
                    Ok(info) => self.info = info,
                    Err(e) => {
                        // Nothing exists yet: the next commit starts afresh
                        // (a fork's ids go on after the spawns it dropped:
                        // ids are never reused, so that is harmless).
                        self.unborn = Some(name);
                        if self.info.parent.is_none() {
                            self.next_entity = 0;
                        }
                        return Err(e.into());
                    }
                }
            }
            None => {
                self.storage.append(self.info.id, record, snapshot).await?;
                self.info.head = tick;
            }
        }
        Ok(tick)
    }
}
