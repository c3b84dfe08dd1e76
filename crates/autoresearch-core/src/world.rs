//! [`World`]: a `hecs::World` materialized at one tick of a durable log, with
//! buffered mutations that `commit()` appends as the next tick.
//!
//! Buffering changes is here; committing them is in `commit.rs`, snapshots
//! in `snapshot.rs`, changing a component in place in `modify.rs`, opening
//! a world in `open.rs`, reading it in `query.rs`, forking it in `fork.rs`.

mod commit;
mod fork;
mod modify;
mod open;
mod query;
mod snapshot;

pub(crate) use snapshot::into_snapshot;

use crate::components::Run;
use crate::error::Error;
use crate::ids::{EntityId, Tick, WorldId};
use crate::ledger;
use crate::record::{Change, Snapshot, TickRecord};
use crate::registry::{ComponentRegistry, ComponentValue, RegistryError};
use crate::storage::{Storage, WorldInfo};
use std::collections::HashMap;

/// The hash maps keyed by entity id: foldhash with a fixed seed (entity ids
/// come from this process, not from an adversary; SipHash showed in
/// profiles of status changes, several look-ups each).
type IdMap<V> = HashMap<EntityId, V, foldhash::fast::FixedState>;
use std::sync::Arc;

/// A component value kept with its buffered change, put into hecs at commit.
type PendingValue = Box<dyn FnOnce(&mut hecs::World, hecs::Entity) + Send + Sync>;

/// What commit does for a pending `Set` instead of decoding its bytes.
enum Held {
    /// The value [`World::insert_owned`] was given: moved into hecs.
    Owned(PendingValue),
    /// A value [`World::modify`] changed in place: hecs holds it already,
    /// and this encodes it again (for a commit that failed after handing
    /// its record, not a copy, to the storage).
    InPlace(Reencode),
}

/// Encodes the value of one component type an entity holds in hecs, as
/// [`ComponentRegistry::encode`] does; `None` when it holds none.
type Reencode = fn(
    &ComponentRegistry,
    &hecs::World,
    hecs::Entity,
) -> Option<Result<(String, Vec<u8>), RegistryError>>;

/// A world materialized at its head (writable) or at a past tick (read-only).
///
/// Reads go to the materialized `hecs::World` ([`World::hecs`]) and never see
/// pending changes, except values changed in place by [`World::modify`];
/// mutations are buffered until [`World::commit`] appends them as one tick. Every entity carries its [`EntityId`] as a hecs
/// component, so hecs queries can name entities stably.
pub struct World {
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    info: WorldInfo,
    tick: Tick,
    read_only: bool,
    hecs: hecs::World,
    ids: IdMap<hecs::Entity>,
    /// The next id `spawn` hands out. Ahead of `committed_next` while spawns
    /// are pending, or after spawns were discarded (ids are never reused).
    next_entity: u64,
    /// The next entity id as replaying the log computes it: what snapshots record.
    committed_next: u64,
    pending: Vec<Change>,
    /// Values given by [`World::insert_owned`] or changed in place by
    /// [`World::modify`], keyed by their change's index in `pending`
    /// (ascending): commit does not decode their bytes.
    pending_values: Vec<(usize, Held)>,
    /// How to put back the values [`World::modify`] changed in place, in
    /// the order they were changed ([`World::discard_pending`] undoes
    /// them in reverse).
    undo: modify::Undo,
    /// How many pending changes are a `Set` or `Remove` not made in place
    /// by [`World::modify`] (while 0, a modify needs no look-up of them).
    plain: usize,
    /// The entities of those changes, once a modify needed to know them
    /// (built then from `pending`, then kept in step).
    touched: Option<std::collections::HashSet<EntityId>>,
    /// Liveness of entities touched by pending changes (true: spawned).
    pending_live: IdMap<bool>,
    /// Scratch set of entities, kept to reuse its memory
    /// ([`World::keep_for_apply`]).
    scratch: IdMap<()>,
    /// Ticks applied here whose append waits for [`World::flush`], in order,
    /// each with the snapshot the storage asked for.
    staged: Vec<(TickRecord, Option<Snapshot>)>,
    /// `(run_id, entity)` of every live entity holding a [`Run`], for
    /// [`World::run_by_id`] in O(log n): built by the first look-up (an
    /// open that never looks a run up does not pay for it), then kept in
    /// step with hecs. Holds `None` when the registry has no `Run` type
    /// (then the look-up scans).
    runs: std::sync::OnceLock<Option<RunIndex>>,
    /// About how many bytes of records a read of this tick replays after
    /// the last snapshot on the world's lineage ([`TickRecord::approx_bytes`]).
    replay_bytes: u64,
    /// About how large the state is ([`crate::State::approx_bytes`]), as of the
    /// open or the last snapshot this handle wrote.
    state_bytes: u64,
}

/// The run_id -> entity index of a [`World`].
struct RunIndex {
    /// The registry's name of the [`Run`] component.
    component: String,
    /// `(run_id, entity)`: several entities may share a run_id; the lowest
    /// entity comes first, as a scan in entity order finds it.
    by_id: std::collections::BTreeSet<(String, EntityId)>,
}

impl World {
    /// Drops `entity`'s run (if it has one) from the run index, before a
    /// change that may replace or remove it.
    fn unindex_run(&mut self, entity: EntityId, e: hecs::Entity) {
        if let Some(Some(index)) = self.runs.get_mut()
            && let Ok(run) = self.hecs.get::<&Run>(e)
        {
            index.by_id.remove(&(run.run_id.clone(), entity));
        }
    }

    /// The run id `e` holds, if it holds a [`Run`].
    fn run_id_of(&self, e: hecs::Entity) -> Option<String> {
        self.hecs.get::<&Run>(e).ok().map(|r| r.run_id.clone())
    }

    /// Moves `entity` in the run index from the run id it held `before`
    /// to the one it holds now; nothing when they are the same.
    fn reindex_run(&mut self, entity: EntityId, e: hecs::Entity, before: Option<String>) {
        let Some(Some(index)) = self.runs.get_mut() else {
            return;
        };
        let now = self.hecs.get::<&Run>(e).ok();
        if now.as_ref().map(|r| r.run_id.as_str()) == before.as_deref() {
            return;
        }
        if let Some(old) = before {
            index.by_id.remove(&(old, entity));
        }
        if let Some(run) = now {
            index.by_id.insert((run.run_id.clone(), entity));
        }
    }

    /// Whether `component` is the [`Run`] component of a built run index
    /// (one not built yet needs no upkeep).
    fn is_run(&self, component: &str) -> bool {
        self.runs
            .get()
            .and_then(Option::as_ref)
            .is_some_and(|i| i.component == component)
    }

    fn insert_bytes(&mut self, e: hecs::Entity, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let world = self.info.id;
        let vt = self.registry.vtable(world, name)?;
        (vt.insert)(&mut self.hecs, e, bytes).map_err(|source| RegistryError::Decode {
            world,
            component: name.to_string(),
            source,
        })?;
        Ok(())
    }

    /// The world's id in its ledger.
    pub fn id(&self) -> WorldId {
        self.info.id
    }

    /// The world's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The world's catalogue entry as this handle last saw it (updated by its own commits and
    /// refreshes).
    pub fn info(&self) -> &WorldInfo {
        &self.info
    }

    /// The tick this world is materialized at.
    pub fn tick(&self) -> Tick {
        self.tick
    }

    /// The id the next spawn will get (ids are never reused).
    pub fn next_entity(&self) -> u64 {
        self.next_entity
    }

    /// Whether this handle was opened at a past tick: it reads but does not commit (fork it to
    /// write).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The ledger this world reads from and commits to.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The component types this world decodes and encodes.
    pub fn registry(&self) -> &Arc<ComponentRegistry> {
        &self.registry
    }

    /// The materialized hecs world, for queries with hecs's own API (it
    /// holds the values [`World::modify`] changed in place, not other
    /// pending changes).
    pub fn hecs(&self) -> &hecs::World {
        &self.hecs
    }

    /// The hecs entity behind a stable id, if alive at this tick.
    pub fn hecs_entity(&self, id: EntityId) -> Option<hecs::Entity> {
        self.ids.get(&id).copied()
    }

    /// Number of live entities at this tick.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no entity is alive at this tick.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is alive, counting pending spawns and despawns.
    pub fn is_live(&self, id: EntityId) -> bool {
        match self.pending_live.get(&id) {
            Some(live) => *live,
            None => self.ids.contains_key(&id),
        }
    }

    fn check_writable(&self) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::ReadOnly {
                world: self.info.id,
                tick: self.tick,
            });
        }
        Ok(())
    }

    fn check_live(&self, entity: EntityId) -> Result<(), Error> {
        self.check_writable()?;
        if !self.is_live(entity) {
            return Err(Error::NoSuchEntity {
                world: self.info.id,
                entity,
            });
        }
        Ok(())
    }

    /// Allocates a new entity id and buffers its spawn.
    pub fn spawn(&mut self) -> Result<EntityId, Error> {
        self.check_writable()?;
        let entity = EntityId(self.next_entity);
        self.next_entity += 1;
        self.pending.push(Change::Spawn { entity });
        self.pending_live.insert(entity, true);
        Ok(entity)
    }

    /// Buffers inserting or replacing component `value` on `entity`.
    pub fn insert<T: ComponentValue>(&mut self, entity: EntityId, value: &T) -> Result<(), Error> {
        self.check_live(entity)?;
        let (component, value) = self.registry.encode(value)?;
        self.pending.push(Change::Set {
            entity,
            component,
            value,
        });
        self.note_plain(entity);
        Ok(())
    }

    /// Spawns an entity holding `value`, buffered.
    pub fn spawn_with<T: ComponentValue>(&mut self, value: &T) -> Result<EntityId, Error> {
        let e = self.spawn()?;
        self.insert(e, value)?;
        Ok(e)
    }

    /// Like [`World::insert`], but takes `value`: commit moves it into the
    /// materialized world instead of decoding the encoded bytes back (for
    /// bulk writes). The ledger records the same bytes; `T`'s encoding must
    /// round-trip (decoding gives back an equal value), as it does for every
    /// plain serde struct without skipped fields.
    pub fn insert_owned<T: ComponentValue>(
        &mut self,
        entity: EntityId,
        value: T,
    ) -> Result<(), Error> {
        self.insert(entity, &value)?;
        let at = self.pending.len() - 1;
        let put: PendingValue = Box::new(move |w: &mut hecs::World, e: hecs::Entity| {
            // The entity exists: commit resolved it from the id map.
            let _ = w.insert_one(e, value);
        });
        self.pending_values.push((at, Held::Owned(put)));
        Ok(())
    }

    /// Spawns an entity holding `value`, buffered, as [`World::insert_owned`].
    pub fn spawn_owned<T: ComponentValue>(&mut self, value: T) -> Result<EntityId, Error> {
        let e = self.spawn()?;
        self.insert_owned(e, value)?;
        Ok(e)
    }

    /// Buffers removing component `T` from `entity` (a no-op if absent).
    pub fn remove<T: ComponentValue>(&mut self, entity: EntityId) -> Result<(), Error> {
        self.check_live(entity)?;
        let component = self.registry.name_of::<T>()?.to_string();
        self.pending.push(Change::Remove { entity, component });
        self.note_plain(entity);
        Ok(())
    }

    /// Buffers despawning `entity`.
    pub fn despawn(&mut self, entity: EntityId) -> Result<(), Error> {
        self.check_live(entity)?;
        self.pending.push(Change::Despawn { entity });
        self.pending_live.insert(entity, false);
        Ok(())
    }

    /// The buffered changes of the next tick.
    pub fn pending(&self) -> &[Change] {
        &self.pending
    }

    /// Drops the buffered changes, and puts back the values
    /// [`World::modify`] changed in place.
    pub fn discard_pending(&mut self) {
        self.undo_in_place();
        self.clear_pending();
    }

    /// Forgets the buffered changes (applied, or undone).
    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_values.clear();
        self.pending_live.clear();
        self.undo.clear();
        self.plain = 0;
        self.touched = None;
    }

    /// Catches up with ticks other writers appended. Drops pending changes,
    /// which were made against the stale state; flushes staged ticks first
    /// (and fails as [`World::flush`] does).
    pub async fn refresh(&mut self) -> Result<Tick, Error> {
        self.discard_pending();
        self.flush().await?;
        let info = self.storage.world(self.info.id).await?;
        if info.head > self.tick && !self.read_only {
            let records = ledger::read_records(
                self.storage.as_ref(),
                self.info.id,
                self.tick.next(),
                info.head,
            )
            .await?;
            for r in &records {
                self.apply_record(r)?;
                self.replay_bytes += r.approx_bytes();
            }
        }
        self.info = info;
        Ok(self.tick)
    }

    fn apply_record(&mut self, record: &TickRecord) -> Result<(), Error> {
        self.apply_changes(
            record.tick,
            record.changes.iter().map(Some),
            std::iter::empty(),
        )
    }

    /// Applies the changes of tick `tick`; `values[k] = (i, v)` puts `v` into
    /// hecs for change `i` (a `Set`) instead of decoding its bytes. A
    /// change given as `None` is a `Set` made in place (hecs holds it).
    fn apply_changes<'c>(
        &mut self,
        tick: Tick,
        changes: impl IntoIterator<Item = Option<&'c Change>>,
        values: impl Iterator<Item = (usize, Held)>,
    ) -> Result<(), Error> {
        let world = self.info.id;
        let mut values = values.peekable();
        for (i, change) in changes.into_iter().enumerate() {
            let Some(change) = change else {
                values.next_if(|(at, _)| *at == i);
                continue;
            };
            match change {
                Change::Spawn { entity } => {
                    let e = self.hecs.spawn((*entity,));
                    self.ids.insert(*entity, e);
                    self.next_entity = self.next_entity.max(entity.0 + 1);
                    self.committed_next = self.committed_next.max(entity.0 + 1);
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } => {
                    // Changed in place when buffered: hecs holds the value
                    // and the run index was kept in step then.
                    if values
                        .next_if(|(at, h)| *at == i && matches!(h, Held::InPlace(_)))
                        .is_some()
                    {
                        continue;
                    }
                    let e = self.live_hecs(tick, *entity)?;
                    // The run's id before the change: the index is only
                    // touched when it changes (a status change keeps it).
                    let before = match self.is_run(component) {
                        true => Some(self.run_id_of(e)),
                        false => None,
                    };
                    match values.next_if(|(at, _)| *at == i) {
                        Some((_, Held::Owned(put))) => put(&mut self.hecs, e),
                        // Taken above.
                        Some((_, Held::InPlace(_))) => {}
                        None => self.insert_bytes(e, component, value)?,
                    }
                    if let Some(before) = before {
                        self.reindex_run(*entity, e, before);
                    }
                }
                Change::Remove { entity, component } => {
                    let e = self.live_hecs(tick, *entity)?;
                    if self.is_run(component) {
                        self.unindex_run(*entity, e);
                    }
                    let vt = self.registry.vtable(world, component)?;
                    (vt.remove)(&mut self.hecs, e);
                }
                Change::Despawn { entity } => {
                    let e = self.live_hecs(tick, *entity)?;
                    self.unindex_run(*entity, e);
                    let _ = self.hecs.despawn(e);
                    self.ids.remove(entity);
                }
            }
        }
        self.tick = tick;
        Ok(())
    }

    fn live_hecs(&self, tick: Tick, entity: EntityId) -> Result<hecs::Entity, Error> {
        self.ids
            .get(&entity)
            .copied()
            .ok_or(Error::Apply(crate::ApplyError {
                world: self.info.id,
                tick,
                entity,
                reason: "change to an entity that is not alive",
            }))
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("info", &self.info)
            .field("tick", &self.tick)
            .field("entities", &self.ids.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}
