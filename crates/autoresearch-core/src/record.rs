//! What the ledger stores: tick records (the changes one `commit()` made),
//! snapshots (the whole state at one tick) and the type-agnostic [`State`]
//! they materialize into.

use crate::ids::{EntityId, Tick, WorldId};
use crate::storage::StorageError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One state transition. Component values are the registry's encoded bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Create an entity with no components.
    Spawn {
        /// The new entity; never alive before in this world's lineage.
        entity: EntityId,
    },
    /// Insert or replace one component.
    Set {
        /// The live entity changed.
        entity: EntityId,
        /// The component's registered name.
        component: String,
        /// The component's value, encoded by the registry.
        value: Vec<u8>,
    },
    /// Remove one component; removing a component the entity lacks is a no-op.
    Remove {
        /// The live entity changed.
        entity: EntityId,
        /// The component's registered name.
        component: String,
    },
    /// Destroy an entity and all its components; its id is never reused.
    Despawn {
        /// The live entity destroyed.
        entity: EntityId,
    },
}

/// What a [`Change`] does, without its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A [`Change::Spawn`].
    Spawn,
    /// A [`Change::Set`].
    Set,
    /// A [`Change::Remove`].
    Remove,
    /// A [`Change::Despawn`].
    Despawn,
}

impl ChangeKind {
    /// The one liveness rule of the log, used by replay ([`State::apply`])
    /// and by every backend's append check ([`LivenessCheck`]): whether this
    /// change applies to an entity that is (`alive`) or is not alive, and if
    /// so whether the entity is alive after it. A spawn needs a dead (never
    /// spawned or despawned) entity; set, remove and despawn need a live one.
    pub fn apply_to(self, alive: bool) -> Result<bool, &'static str> {
        match (self, alive) {
            (ChangeKind::Spawn, false) => Ok(true),
            (ChangeKind::Spawn, true) => Err("spawned twice"),
            (ChangeKind::Set | ChangeKind::Remove, true) => Ok(true),
            (ChangeKind::Set, false) => Err("set on an entity that is not alive"),
            (ChangeKind::Remove, false) => Err("remove on an entity that is not alive"),
            (ChangeKind::Despawn, true) => Ok(false),
            (ChangeKind::Despawn, false) => Err("despawn of an entity that is not alive"),
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChangeKind::Spawn => "spawn",
            ChangeKind::Set => "set",
            ChangeKind::Remove => "remove",
            ChangeKind::Despawn => "despawn",
        })
    }
}

impl Change {
    /// What this change does, without its values.
    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::Spawn { .. } => ChangeKind::Spawn,
            Change::Set { .. } => ChangeKind::Set,
            Change::Remove { .. } => ChangeKind::Remove,
            Change::Despawn { .. } => ChangeKind::Despawn,
        }
    }

    /// The entity this change touches.
    pub fn entity(&self) -> EntityId {
        match self {
            Change::Spawn { entity }
            | Change::Set { entity, .. }
            | Change::Remove { entity, .. }
            | Change::Despawn { entity } => *entity,
        }
    }
}

/// Every change of one tick, with the wall-clock time of its commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickRecord {
    /// The tick this record makes (its world's previous head plus one).
    pub tick: Tick,
    /// When the tick was committed, in Unix milliseconds (wall clock of the writer).
    pub at_ms: i64,
    /// The changes in the order they were made; replay applies them in this order.
    pub changes: Vec<Change>,
}

impl TickRecord {
    /// About how many bytes this record takes to read back (values,
    /// component names and a few bytes per change), for snapshot policies
    /// ([`crate::Storage::snapshot_due_after`]). O(changes).
    pub fn approx_bytes(&self) -> u64 {
        self.changes
            .iter()
            .map(|c| match c {
                Change::Set {
                    component, value, ..
                } => (component.len() + value.len() + 10) as u64,
                Change::Remove { component, .. } => (component.len() + 10) as u64,
                Change::Spawn { .. } | Change::Despawn { .. } => 10,
            })
            .sum()
    }

    /// The distinct entities this record touches, sorted.
    pub fn entities(&self) -> Vec<EntityId> {
        let mut v: Vec<EntityId> = self.changes.iter().map(Change::entity).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// One entity in a snapshot: its id and its `(component name, value)` pairs.
pub type SnapshotEntity = (EntityId, Vec<(String, Vec<u8>)>);

/// The whole state of a world at one tick.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The tick this snapshot is the state at.
    pub tick: Tick,
    /// The next entity id the world will allocate (ids are never reused).
    pub next_entity: u64,
    /// Every live entity with its components, sorted by id.
    pub entities: Vec<SnapshotEntity>,
}

/// A record that cannot be applied to the state before it: the log is
/// inconsistent (a corrupt or hand-edited file, or a backend bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{world} tick {tick}: cannot apply change to {entity}: {reason}")]
pub struct ApplyError {
    /// The world whose log is inconsistent.
    pub world: WorldId,
    /// The tick whose record does not apply.
    pub tick: Tick,
    /// The entity the failing change touches (`EntityId(0)` when the record as a whole is for the
    /// wrong tick).
    pub entity: EntityId,
    /// Which rule the change breaks ("spawned twice", "record is not for the next tick", ...).
    pub reason: &'static str,
}

/// The state of a world at one tick, independent of Rust component types:
/// entity id to component name to encoded value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The tick this state is at.
    pub tick: Tick,
    /// The next entity id the world will allocate: one past the highest id ever spawned.
    pub next_entity: u64,
    /// Every live entity, with its component names and encoded values.
    pub entities: BTreeMap<EntityId, BTreeMap<String, Vec<u8>>>,
}

impl State {
    /// The empty world at tick 0.
    pub fn empty() -> Self {
        State::default()
    }

    /// About how many bytes a snapshot of this state takes to read back
    /// (values, component names and a few bytes per entity and
    /// component), for snapshot policies
    /// ([`crate::Storage::snapshot_due_after`]). O(entities + components).
    pub fn approx_bytes(&self) -> u64 {
        self.entities
            .values()
            .map(|comps| {
                10 + comps
                    .iter()
                    .map(|(n, v)| (n.len() + v.len() + 2) as u64)
                    .sum::<u64>()
            })
            .sum()
    }

    /// The state a snapshot holds. O(entities + components).
    pub fn from_snapshot(s: Snapshot) -> Self {
        State {
            tick: s.tick,
            next_entity: s.next_entity,
            entities: s
                .entities
                .into_iter()
                .map(|(e, cs)| (e, cs.into_iter().collect()))
                .collect(),
        }
    }

    /// A snapshot of this state, entities sorted by id. Copies every value: O(size of the state).
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            tick: self.tick,
            next_entity: self.next_entity,
            entities: self
                .entities
                .iter()
                .map(|(e, cs)| (*e, cs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
                .collect(),
        }
    }

    /// Applies one record it consumes, as [`State::apply`] does, moving
    /// its values into the state instead of copying them (for replays that
    /// read the record only to apply it). On an error the state may hold
    /// the changes before the failing one; callers drop it then.
    pub fn apply_owned(&mut self, world: WorldId, record: TickRecord) -> Result<(), ApplyError> {
        let err = |entity, reason| ApplyError {
            world,
            tick: record.tick,
            entity,
            reason,
        };
        if record.tick != self.tick.next() {
            return Err(err(EntityId(0), "record is not for the next tick"));
        }
        for change in record.changes {
            let entity = change.entity();
            change
                .kind()
                .apply_to(self.entities.contains_key(&entity))
                .map_err(|reason| err(entity, reason))?;
            match change {
                Change::Spawn { entity } => {
                    self.entities.insert(entity, BTreeMap::new());
                    self.next_entity = self.next_entity.max(entity.0 + 1);
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } => {
                    if let Some(comps) = self.entities.get_mut(&entity) {
                        comps.insert(component, value);
                    }
                }
                Change::Remove { entity, component } => {
                    if let Some(comps) = self.entities.get_mut(&entity) {
                        comps.remove(&component);
                    }
                }
                Change::Despawn { entity } => {
                    self.entities.remove(&entity);
                }
            }
        }
        self.tick = record.tick;
        Ok(())
    }

    /// Applies one record. The record must be for the tick after this state's.
    pub fn apply(&mut self, world: WorldId, record: &TickRecord) -> Result<(), ApplyError> {
        let err = |entity, reason| ApplyError {
            world,
            tick: record.tick,
            entity,
            reason,
        };
        if record.tick != self.tick.next() {
            return Err(err(EntityId(0), "record is not for the next tick"));
        }
        for change in &record.changes {
            let entity = change.entity();
            change
                .kind()
                .apply_to(self.entities.contains_key(&entity))
                .map_err(|reason| err(entity, reason))?;
            match change {
                Change::Spawn { entity } => {
                    self.entities.insert(*entity, BTreeMap::new());
                    self.next_entity = self.next_entity.max(entity.0 + 1);
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } => {
                    if let Some(comps) = self.entities.get_mut(entity) {
                        comps.insert(component.clone(), value.clone());
                    }
                }
                Change::Remove { entity, component } => {
                    if let Some(comps) = self.entities.get_mut(entity) {
                        comps.remove(component);
                    }
                }
                Change::Despawn { entity } => {
                    self.entities.remove(entity);
                }
            }
        }
        self.tick = record.tick;
        Ok(())
    }
}

/// The append-time check of staged ticks against a world's head state,
/// shared by every backend so that a backend stores only ticks that replay.
///
/// Create one per batch of consecutive ticks of one world, then call
/// [`LivenessCheck::check`] for each record in tick order. It remembers what
/// earlier records of the batch did, and asks the backend (`alive_at_head`)
/// only about entities the batch has not touched yet: one lookup per
/// distinct entity per batch.
#[derive(Debug)]
pub struct LivenessCheck {
    world: WorldId,
    /// Each entity the batch touched: whether it is alive after the
    /// changes checked so far, and the last tick that touched it. Hashed
    /// with foldhash, randomly seeded: SipHash showed in profiles of the
    /// check of an ingest's ten thousand spawns.
    overlay: std::collections::HashMap<EntityId, (bool, Option<Tick>), foldhash::fast::RandomState>,
}

impl LivenessCheck {
    /// A check for a new batch of `world`'s ticks, knowing nothing yet.
    pub fn new(world: WorldId) -> LivenessCheck {
        LivenessCheck {
            world,
            overlay: Default::default(),
        }
    }

    /// Checks the changes of tick `tick` in order against the state the
    /// batch has built so far. Returns the record's net liveness changes
    /// (entity, alive after the tick) for entities whose liveness the tick
    /// changed, sorted by entity.
    ///
    /// Errors: [`StorageError::NotApplicable`] naming the first change that
    /// does not apply, or what `alive_at_head` returns.
    pub fn check<E: From<StorageError>>(
        &mut self,
        tick: Tick,
        changes: impl IntoIterator<Item = (ChangeKind, EntityId)>,
        mut alive_at_head: impl FnMut(EntityId) -> Result<bool, E>,
    ) -> Result<Vec<(EntityId, bool)>, E> {
        let changes = changes.into_iter();
        // Each entity's liveness before this tick, at its first change in
        // it (one hash look-up a change; a tree of a bulk tick's ten
        // thousand spawns cost more than the check).
        let mut before: Vec<(EntityId, bool)> = Vec::with_capacity(changes.size_hint().0);
        self.overlay.reserve(changes.size_hint().0);
        for (kind, entity) in changes {
            let seen = match self.overlay.entry(entity) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((alive_at_head(entity)?, None))
                }
            };
            if seen.1 != Some(tick) {
                before.push((entity, seen.0));
                seen.1 = Some(tick);
            }
            seen.0 = kind.apply_to(seen.0).map_err(|_| {
                E::from(StorageError::NotApplicable {
                    world: self.world,
                    attempted: tick,
                    entity,
                    change: kind,
                })
            })?;
        }
        // Distinct entities, usually in order already.
        before.sort_unstable_by_key(|(e, _)| *e);
        Ok(before
            .into_iter()
            .filter_map(|(e, was)| {
                let now = self.overlay.get(&e).map_or(was, |s| s.0);
                (now != was).then_some((e, now))
            })
            .collect())
    }
}

/// One change of a [`TickRecord`] as a read of one component sees it
/// ([`ComponentRecord`]): the component's own values are kept, other
/// components' only as "the entity must be alive". `V` is how a kept
/// value is held: its bytes (`Vec<u8>`, the default), or a [`Span`] of
/// a shared body ([`SpanRecord`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentChange<V = Vec<u8>> {
    /// A [`Change::Spawn`]: the entity is alive, without the component.
    Spawn(EntityId),
    /// The component set to this value (its registry's encoded bytes).
    Set(EntityId, V),
    /// The component removed.
    Remove(EntityId),
    /// Another component set or removed (`kind` is [`ChangeKind::Set`] or
    /// [`ChangeKind::Remove`]): the entity must be alive; the component's
    /// value is unchanged.
    Other(EntityId, ChangeKind),
    /// A [`Change::Despawn`].
    Despawn(EntityId),
}

impl<V> ComponentChange<V> {
    /// The entity this change touches.
    pub fn entity(&self) -> EntityId {
        match self {
            ComponentChange::Spawn(e)
            | ComponentChange::Set(e, _)
            | ComponentChange::Remove(e)
            | ComponentChange::Other(e, _)
            | ComponentChange::Despawn(e) => *e,
        }
    }

    /// What the change it stands for does.
    pub fn kind(&self) -> ChangeKind {
        match self {
            ComponentChange::Spawn(_) => ChangeKind::Spawn,
            ComponentChange::Set(..) => ChangeKind::Set,
            ComponentChange::Remove(_) => ChangeKind::Remove,
            ComponentChange::Other(_, kind) => *kind,
            ComponentChange::Despawn(_) => ChangeKind::Despawn,
        }
    }
}

impl ComponentChange {
    /// `change` as a read of `component` sees it; moves its value, if kept.
    pub fn project(change: Change, component: &str) -> ComponentChange {
        match change {
            Change::Spawn { entity } => ComponentChange::Spawn(entity),
            Change::Set {
                entity,
                component: c,
                value,
            } if c == component => ComponentChange::Set(entity, value),
            Change::Set { entity, .. } => ComponentChange::Other(entity, ChangeKind::Set),
            Change::Remove {
                entity,
                component: c,
            } if c == component => ComponentChange::Remove(entity),
            Change::Remove { entity, .. } => ComponentChange::Other(entity, ChangeKind::Remove),
            Change::Despawn { entity } => ComponentChange::Despawn(entity),
        }
    }
}

/// A [`TickRecord`] projected on one component: every change in order,
/// with only that component's values (read by
/// [`crate::ledger::component_bytes_at`] without copying the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentRecord {
    /// The tick of the record.
    pub tick: Tick,
    /// Its changes, in order.
    pub changes: Vec<ComponentChange>,
}

impl ComponentRecord {
    /// `record` projected on `component`, moving the values it keeps.
    pub fn project(record: TickRecord, component: &str) -> ComponentRecord {
        ComponentRecord {
            tick: record.tick,
            changes: record
                .changes
                .into_iter()
                .map(|c| ComponentChange::project(c, component))
                .collect(),
        }
    }
}

/// A [`Snapshot`] projected on one component: every live entity, sorted by
/// id, with its value of the component if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentSnapshot {
    /// The tick this snapshot is the state at.
    pub tick: Tick,
    /// Every live entity, sorted by id, with its value of the component.
    pub entities: Vec<(EntityId, Option<Vec<u8>>)>,
}

impl ComponentSnapshot {
    /// `snapshot` projected on `component`, moving the values it keeps.
    pub fn project(snapshot: Snapshot, component: &str) -> ComponentSnapshot {
        ComponentSnapshot {
            tick: snapshot.tick,
            entities: snapshot
                .entities
                .into_iter()
                .map(|(e, comps)| {
                    let value = comps
                        .into_iter()
                        .find(|(n, _)| n == component)
                        .map(|(_, v)| v);
                    (e, value)
                })
                .collect(),
        }
    }
}

/// Where a value lies in a shared buffer: bytes `start..start + len` of
/// the body it was read with ([`SpanRecord`], [`SpanSnapshot`]), so that
/// a read of many values copies none of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The first byte of the value in its body.
    pub start: u32,
    /// The value's length in bytes.
    pub len: u32,
}

impl Span {
    /// The span of `value` inside `body`; `None` unless `value` is a
    /// sub-slice of `body` (as a value borrowed from a decoded body is)
    /// that starts below 4 GiB, or empty.
    pub fn within(body: &[u8], value: &[u8]) -> Option<Span> {
        if value.is_empty() {
            // Wherever an empty slice points, it holds nothing.
            return Some(Span { start: 0, len: 0 });
        }
        let start = (value.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
        if start.checked_add(value.len())? > body.len() {
            return None;
        }
        Some(Span {
            start: u32::try_from(start).ok()?,
            len: u32::try_from(value.len()).ok()?,
        })
    }

    /// The bytes this span covers in `body`; `None` when it reaches past
    /// the end of `body`.
    pub fn get(self, body: &[u8]) -> Option<&[u8]> {
        let start = self.start as usize;
        body.get(start..start.checked_add(self.len as usize)?)
    }

    /// Appends `value` to `body` and returns its span there. `None` when
    /// the body would reach 4 GiB.
    pub fn push(body: &mut Vec<u8>, value: &[u8]) -> Option<Span> {
        let span = Span {
            start: u32::try_from(body.len()).ok()?,
            len: u32::try_from(value.len()).ok()?,
        };
        u32::try_from(body.len() + value.len()).ok()?;
        body.extend_from_slice(value);
        Some(span)
    }
}

/// A [`ComponentRecord`] whose values stay in one shared body: each kept
/// value is a [`Span`] of `body` (a decoded record, for example), so that
/// reading a large record for one component copies no value
/// ([`crate::Storage::read_own_component_spans`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanRecord {
    /// The tick of the record.
    pub tick: Tick,
    /// The bytes the spans of `changes` point into.
    pub body: std::sync::Arc<Vec<u8>>,
    /// The record's changes, in order; shared, as the body is, so that a
    /// record kept decoded (an ingest's, which every later read replays)
    /// is handed out without a copy of its changes.
    pub changes: std::sync::Arc<[ComponentChange<Span>]>,
}

impl SpanRecord {
    /// `record`'s values gathered into one body. Errors (the reason) when
    /// they hold 4 GiB or more.
    pub fn gather(record: ComponentRecord) -> Result<SpanRecord, String> {
        let mut body = Vec::with_capacity(
            record
                .changes
                .iter()
                .map(|c| match c {
                    ComponentChange::Set(_, v) => v.len(),
                    _ => 0,
                })
                .sum(),
        );
        let mut changes = Vec::with_capacity(record.changes.len());
        for c in record.changes {
            changes.push(match c {
                ComponentChange::Spawn(e) => ComponentChange::Spawn(e),
                ComponentChange::Set(e, v) => ComponentChange::Set(
                    e,
                    Span::push(&mut body, &v).ok_or("values of 4 GiB or more")?,
                ),
                ComponentChange::Remove(e) => ComponentChange::Remove(e),
                ComponentChange::Other(e, k) => ComponentChange::Other(e, k),
                ComponentChange::Despawn(e) => ComponentChange::Despawn(e),
            });
        }
        Ok(SpanRecord {
            tick: record.tick,
            body: std::sync::Arc::new(body),
            changes: changes.into(),
        })
    }

    /// The [`ComponentRecord`] this stands for, each value copied out of
    /// the body; `None` when a span reaches past its end.
    pub fn to_component_record(&self) -> Option<ComponentRecord> {
        let mut changes = Vec::with_capacity(self.changes.len());
        for c in self.changes.iter() {
            changes.push(match *c {
                ComponentChange::Spawn(e) => ComponentChange::Spawn(e),
                ComponentChange::Set(e, span) => {
                    ComponentChange::Set(e, span.get(&self.body)?.to_vec())
                }
                ComponentChange::Remove(e) => ComponentChange::Remove(e),
                ComponentChange::Other(e, k) => ComponentChange::Other(e, k),
                ComponentChange::Despawn(e) => ComponentChange::Despawn(e),
            });
        }
        Some(ComponentRecord {
            tick: self.tick,
            changes,
        })
    }
}

/// A [`ComponentSnapshot`] whose values stay in one shared body, as
/// [`SpanRecord`] for a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanSnapshot {
    /// The tick this snapshot is the state at.
    pub tick: Tick,
    /// The bytes the spans of `entities` point into.
    pub body: std::sync::Arc<Vec<u8>>,
    /// Every live entity, sorted by id, with the span of its value of the
    /// component if it has one.
    pub entities: Vec<(EntityId, Option<Span>)>,
}

impl SpanSnapshot {
    /// `snapshot`'s values gathered into one body. Errors (the reason)
    /// when they hold 4 GiB or more.
    pub fn gather(snapshot: ComponentSnapshot) -> Result<SpanSnapshot, String> {
        let mut body = Vec::with_capacity(
            snapshot
                .entities
                .iter()
                .map(|(_, v)| v.as_ref().map_or(0, Vec::len))
                .sum(),
        );
        let mut entities = Vec::with_capacity(snapshot.entities.len());
        for (e, v) in snapshot.entities {
            let span = match v {
                Some(v) => Some(Span::push(&mut body, &v).ok_or("values of 4 GiB or more")?),
                None => None,
            };
            entities.push((e, span));
        }
        Ok(SpanSnapshot {
            tick: snapshot.tick,
            body: std::sync::Arc::new(body),
            entities,
        })
    }

    /// The [`ComponentSnapshot`] this stands for, each value copied out
    /// of the body; `None` when a span reaches past its end.
    pub fn to_component_snapshot(&self) -> Option<ComponentSnapshot> {
        let mut entities = Vec::with_capacity(self.entities.len());
        for (e, span) in &self.entities {
            let value = match span {
                Some(span) => Some(span.get(&self.body)?.to_vec()),
                None => None,
            };
            entities.push((*e, value));
        }
        Some(ComponentSnapshot {
            tick: self.tick,
            entities,
        })
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
