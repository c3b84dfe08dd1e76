//! [`World`]: a `hecs::World` materialized at one tick of a durable log, with
//! buffered mutations that `commit()` appends as the next tick.
//!
//! Buffering and committing changes are here; opening a world is in
//! `open.rs`, reading it in `query.rs`, forking it in `fork.rs`.

mod fork;
mod modify;
mod open;
mod query;

use crate::components::Run;
use crate::error::Error;
use crate::ids::{EntityId, Tick, WorldId, now_ms};
use crate::ledger;
use crate::record::{Change, Snapshot, SnapshotEntity, State, TickRecord};
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

/// A change of a record handed to the storage, as [`World::commit`] keeps
/// it to apply the record after the append, or to give the changes back
/// after a failed one.
enum Kept {
    /// A copy of the change.
    Change(Change),
    /// A `Set` made in place on this entity, which no later change of the
    /// record touches: hecs holds its value, nothing need be copied.
    InPlace(EntityId),
}

/// The next tick as [`World::outgoing`] hands it to the storage.
struct Outgoing {
    record: TickRecord,
    snapshot: Option<Snapshot>,
    /// `(replay_bytes, state_bytes)` once the tick is stored.
    sizes: (u64, u64),
    kept: Vec<Kept>,
}

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
    /// About how large the state is ([`State::approx_bytes`]), as of the
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

    /// Appends the buffered changes as tick `head + 1` and applies them.
    /// With nothing buffered, returns the current tick and appends nothing.
    /// When the durable point matters, this is it: on `Ok`, every tick so
    /// far is durable, staged ones ([`World::stage`]) included.
    ///
    /// Errors: `Conflict` when another writer advanced the world first (call
    /// [`World::refresh`] and redo the changes); on any error the pending
    /// changes are kept and the materialized state is unchanged. With
    /// staged ticks before it, it is [`World::stage`] then [`World::flush`]
    /// and fails as they do.
    pub async fn commit(&mut self) -> Result<Tick, Error> {
        self.check_writable()?;
        if !self.staged.is_empty() {
            // Behind earlier staged ticks: stage this one too, append all.
            self.stage()?;
            return self.flush().await;
        }
        let Some(out) = self.outgoing()? else {
            return Ok(self.tick);
        };
        let tick = out.record.tick;
        let appended = self
            .storage
            .append(self.info.id, out.record, out.snapshot)
            .await;
        if let Err(e) = appended {
            // Keep the changes (and owned values) for the caller to
            // inspect or redo.
            self.restore_pending(out.kept);
            return Err(e.into());
        }
        self.apply_stored(tick, &out.kept, out.sizes)?;
        Ok(tick)
    }

    /// The pending changes as the next tick for the storage (`None` when
    /// nothing is pending): its record, the snapshot due after it, and
    /// what applying it here needs once it is stored, values changed in
    /// place not copied (see [`World::keep_for_apply`]). On an error (the
    /// snapshot could not be made) the changes stay pending.
    fn outgoing(&mut self) -> Result<Option<Outgoing>, Error> {
        let Some(record) = self.next_record() else {
            return Ok(None);
        };
        let snapshot = match self.snapshot_after(&record) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.pending = record.changes;
                return Err(e);
            }
        };
        let sizes = self.sizes_after(&record, snapshot.as_ref());
        let kept = self.keep_for_apply(&record.changes);
        Ok(Some(Outgoing {
            record,
            snapshot,
            sizes,
            kept,
        }))
    }

    /// After the storage stored tick `tick` of [`World::outgoing`]:
    /// applies it as the new head and takes its replay and state sizes.
    fn apply_stored(&mut self, tick: Tick, kept: &[Kept], sizes: (u64, u64)) -> Result<(), Error> {
        self.apply_kept(tick, kept)?;
        (self.replay_bytes, self.state_bytes) = sizes;
        Ok(())
    }

    /// Applies the record of tick `tick` (the next one), as
    /// [`World::keep_for_apply`] kept it, as the new head.
    fn apply_kept(&mut self, tick: Tick, kept: &[Kept]) -> Result<(), Error> {
        let mut values = std::mem::take(&mut self.pending_values);
        self.clear_pending();
        let applied = self.apply_changes(tick, kept.iter().map(Kept::change), values.drain(..));
        // Emptied, its memory kept for the next tick's values.
        self.pending_values = values;
        applied?;
        self.info.head = tick;
        Ok(())
    }

    /// What [`World::commit`] keeps of the pending `changes` it hands to
    /// the storage: a copy of each, except a `Set` made in place whose
    /// entity no later change touches (hecs holds exactly the value it
    /// records). O(changes) hash look-ups.
    fn keep_for_apply(&mut self, changes: &[Change]) -> Vec<Kept> {
        if self.undo.is_empty() {
            // Nothing made in place.
            return changes.iter().cloned().map(Kept::Change).collect();
        }
        let mut later = std::mem::take(&mut self.scratch);
        later.clear();
        let mut kept: Vec<Kept> = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate().rev() {
            let last = later.insert(c.entity(), ()).is_none();
            kept.push(match last && self.in_place(i) {
                true => Kept::InPlace(c.entity()),
                false => Kept::Change(c.clone()),
            });
        }
        kept.reverse();
        self.scratch = later;
        kept
    }

    /// Gives the changes [`World::keep_for_apply`] kept back to `pending`
    /// after a failed append, encoding the values changed in place again
    /// from hecs. Should one no longer encode (a type whose encoding
    /// fails only sometimes), the pending changes are dropped and the
    /// values changed in place put back, as [`World::discard_pending`]
    /// does, so that hecs and the pending changes still agree.
    fn restore_pending(&mut self, kept: Vec<Kept>) {
        let mut pending = Vec::with_capacity(kept.len());
        for (i, k) in kept.into_iter().enumerate() {
            let change = match k {
                Kept::Change(c) => Some(c),
                Kept::InPlace(entity) => self.reencode(i, entity),
            };
            match change {
                Some(c) => pending.push(c),
                None => {
                    self.discard_pending();
                    return;
                }
            }
        }
        self.pending = pending;
    }

    /// Pending change `i`, a `Set` of `entity` made in place, encoded
    /// again from the value hecs holds.
    fn reencode(&self, i: usize, entity: EntityId) -> Option<Change> {
        let k = self
            .pending_values
            .binary_search_by_key(&i, |(at, _)| *at)
            .ok()?;
        let Held::InPlace(encode) = &self.pending_values[k].1 else {
            return None;
        };
        let e = self.hecs_entity(entity)?;
        let (component, value) = encode(&self.registry, &self.hecs, e)?.ok()?;
        Some(Change::Set {
            entity,
            component,
            value,
        })
    }

    /// The pending changes as the record of tick `head + 1`; `None` when
    /// nothing is pending. The owned values stay, for [`World::apply_next`].
    fn next_record(&mut self) -> Option<TickRecord> {
        // The next tick's buffer starts at this one's size: a steady
        // workload's changes are not regrown from empty every tick.
        let n = self.pending.len();
        (n > 0).then(|| TickRecord {
            tick: self.tick.next(),
            at_ms: now_ms(),
            changes: std::mem::replace(&mut self.pending, Vec::with_capacity(n)),
        })
    }

    /// Applies `record`, the one [`World::next_record`] made, as the new head.
    fn apply_next(&mut self, record: &TickRecord) -> Result<(), Error> {
        let values = std::mem::take(&mut self.pending_values);
        self.clear_pending();
        self.apply_changes(
            record.tick,
            record.changes.iter().map(Some),
            values.into_iter(),
        )?;
        self.info.head = record.tick;
        Ok(())
    }

    /// The snapshot of the state after `record` (the next tick), when the
    /// storage asks for one at its tick ([`Storage::snapshot_due_after`]:
    /// its interval, or the bytes a read would replay).
    fn snapshot_after(&self, record: &TickRecord) -> Result<Option<Snapshot>, Error> {
        let replay = self.replay_bytes + record.approx_bytes();
        if !self
            .storage
            .snapshot_due_after(record.tick, replay, self.state_bytes)
        {
            return Ok(None);
        }
        self.encode_snapshot_after(record).map(Some)
    }

    /// The snapshot of the state after `record` (the next tick), encoded
    /// straight from hecs into the snapshot's sorted lists: only the
    /// entities `record` touches go through a [`State`] (so the record is
    /// checked as replay checks it). The others are encoded column by
    /// column, walking hecs's archetypes in memory order (not one look-up
    /// per entity and registered component). Cost: O(entities x their
    /// components) encodings, one sort of the ids.
    fn encode_snapshot_after(&self, record: &TickRecord) -> Result<Snapshot, Error> {
        let mut vtables: Vec<_> = self.registry.vtables().collect();
        vtables.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let encode_failed = |name: &String, source| RegistryError::Encode {
            component: name.clone(),
            source,
        };
        let encode = |e: hecs::Entity| -> Result<Vec<(String, Vec<u8>)>, Error> {
            let Ok(eref) = self.hecs.entity(e) else {
                return Ok(Vec::new());
            };
            let mut comps = Vec::new();
            for vt in &vtables {
                if let Some(bytes) = (vt.encode)(eref) {
                    let bytes = bytes.map_err(|source| encode_failed(&vt.name, source))?;
                    comps.push((vt.name.clone(), bytes));
                }
            }
            Ok(comps)
        };
        let touched = record.entities();
        let mut after = State {
            tick: self.tick,
            next_entity: self.committed_next,
            entities: Default::default(),
        };
        for id in &touched {
            if let Some(e) = self.ids.get(id) {
                let comps = encode(*e)?.into_iter().collect();
                after.entities.insert(*id, comps);
            }
        }
        after.apply(self.info.id, record)?;
        let mut entities: Vec<SnapshotEntity> =
            Vec::with_capacity(self.ids.len() + after.entities.len());
        for archetype in self.hecs.archetypes() {
            // Every entity of a world carries its id.
            let Some(ids) = archetype.get::<&EntityId>() else {
                continue;
            };
            if ids.is_empty() {
                continue;
            }
            let mut columns = Vec::new();
            for vt in &vtables {
                if let Some(values) = (vt.encode_column)(archetype) {
                    let values = values.map_err(|source| encode_failed(&vt.name, source))?;
                    columns.push((&vt.name, values.into_iter()));
                }
            }
            for id in ids.iter() {
                let mut comps = Vec::with_capacity(columns.len());
                for (name, values) in &mut columns {
                    // Each column holds one value per row.
                    if let Some(bytes) = values.next() {
                        comps.push(((*name).clone(), bytes));
                    }
                }
                if touched.binary_search(id).is_err() {
                    entities.push((*id, comps));
                }
            }
        }
        entities.extend(
            after
                .entities
                .into_iter()
                .map(|(id, comps)| (id, comps.into_iter().collect())),
        );
        // Ids are unique: hecs holds each entity once, and `after` only
        // the touched ones, skipped above.
        entities.sort_unstable_by_key(|(id, _)| *id);
        Ok(Snapshot {
            tick: after.tick,
            next_entity: after.next_entity,
            entities,
        })
    }

    /// The (replay, state) sizes after `record` is applied with `snapshot`.
    fn sizes_after(&self, record: &TickRecord, snapshot: Option<&Snapshot>) -> (u64, u64) {
        match snapshot {
            Some(s) => (0, snapshot_bytes(s)),
            None => (self.replay_bytes + record.approx_bytes(), self.state_bytes),
        }
    }

    /// Makes the buffered changes tick `head + 1` here, at once, and queues
    /// its append for [`World::flush`] (or the next [`World::commit`]),
    /// which appends every staged tick together: with a backend that
    /// commits them in one durable write ([`Storage::append_all`]), several
    /// ticks cost one write. Reads see a staged tick at once; other
    /// readers of the ledger see it once flushed, and it is lost if the
    /// process dies before that ([`World::history`] and [`World::fork`] read
    /// the ledger, so they too see it once flushed). Use it for steps nothing
    /// outside this process depends on until a later flush.
    ///
    /// With nothing buffered, returns the current tick and stages nothing.
    /// Errors as [`World::commit`] does before appending (read-only world,
    /// a snapshot that cannot be encoded); the pending changes are kept.
    pub fn stage(&mut self) -> Result<Tick, Error> {
        self.check_writable()?;
        let Some(record) = self.next_record() else {
            return Ok(self.tick);
        };
        let snapshot = match self.snapshot_after(&record) {
            Ok(s) => s,
            Err(e) => {
                self.pending = record.changes;
                return Err(e);
            }
        };
        let sizes = self.sizes_after(&record, snapshot.as_ref());
        self.apply_next(&record)?;
        (self.replay_bytes, self.state_bytes) = sizes;
        let tick = record.tick;
        self.staged.push((record, snapshot));
        Ok(tick)
    }

    /// How many staged ticks wait for [`World::flush`].
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Appends every staged tick ([`World::stage`]), in order, together.
    /// Returns the head.
    ///
    /// The staged ticks are stored all or nothing. On an error (`Conflict`:
    /// another writer advanced the world first) none of them is stored, they
    /// are dropped, and this world goes back to the state the ledger holds,
    /// as a fresh [`World::open`] would see it; redo their changes on it if
    /// they still apply.
    pub async fn flush(&mut self) -> Result<Tick, Error> {
        if self.staged.is_empty() {
            return Ok(self.tick);
        }
        let staged = std::mem::take(&mut self.staged);
        match self.storage.append_all(self.info.id, staged).await {
            Ok(()) => Ok(self.tick),
            Err(e) => {
                let fresh =
                    World::open_id(self.storage.clone(), self.registry.clone(), self.info.id)
                        .await?;
                *self = fresh;
                Err(e.into())
            }
        }
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

    /// The materialized state, encoded back into the type-agnostic form
    /// (with the values [`World::modify`] changed in place, as reads see
    /// them). Cost: O(entities x registered components).
    pub fn encode_state(&self) -> Result<State, Error> {
        let mut state = State {
            tick: self.tick,
            next_entity: self.committed_next,
            entities: Default::default(),
        };
        for (id, e) in &self.ids {
            let Ok(eref) = self.hecs.entity(*e) else {
                continue;
            };
            let mut comps = std::collections::BTreeMap::new();
            for vt in self.registry.vtables() {
                if let Some(bytes) = (vt.encode)(eref) {
                    let bytes = bytes.map_err(|source| RegistryError::Encode {
                        component: vt.name.clone(),
                        source,
                    })?;
                    comps.insert(vt.name.clone(), bytes);
                }
            }
            state.entities.insert(*id, comps);
        }
        Ok(state)
    }
}

impl Kept {
    /// The change, `None` for one made in place.
    fn change(&self) -> Option<&Change> {
        match self {
            Kept::Change(c) => Some(c),
            Kept::InPlace(_) => None,
        }
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

/// The snapshot of `state`, its values moved, not copied: for a state
/// built only to be written ([`State::to_snapshot`] clones every value).
pub(crate) fn into_snapshot(state: State) -> Snapshot {
    Snapshot {
        tick: state.tick,
        next_entity: state.next_entity,
        entities: state
            .entities
            .into_iter()
            .map(|(e, comps)| (e, comps.into_iter().collect()))
            .collect(),
    }
}

/// About how many bytes `s` takes to read back, as [`State::approx_bytes`].
fn snapshot_bytes(s: &Snapshot) -> u64 {
    s.entities
        .iter()
        .map(|(_, comps)| {
            10 + comps
                .iter()
                .map(|(n, v)| (n.len() + v.len() + 2) as u64)
                .sum::<u64>()
        })
        .sum()
}
