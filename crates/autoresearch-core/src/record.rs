//! What the ledger stores: tick records (the changes one `commit()` made),
//! snapshots (the whole state at one tick) and the type-agnostic [`State`]
//! they materialize into.

use crate::ids::{EntityId, Tick, WorldId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One state transition. Component values are the registry's encoded bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Spawn {
        entity: EntityId,
    },
    /// Insert or replace one component.
    Set {
        entity: EntityId,
        component: String,
        value: Vec<u8>,
    },
    Remove {
        entity: EntityId,
        component: String,
    },
    Despawn {
        entity: EntityId,
    },
}

impl Change {
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
    pub tick: Tick,
    pub at_ms: i64,
    pub changes: Vec<Change>,
}

impl TickRecord {
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
    pub tick: Tick,
    /// The next entity id the world will allocate (ids are never reused).
    pub next_entity: u64,
    pub entities: Vec<SnapshotEntity>,
}

/// A record that cannot be applied to the state before it: the log is
/// inconsistent (a corrupt or hand-edited file, or a backend bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{world} tick {tick}: cannot apply change to {entity}: {reason}")]
pub struct ApplyError {
    pub world: WorldId,
    pub tick: Tick,
    pub entity: EntityId,
    pub reason: &'static str,
}

/// The state of a world at one tick, independent of Rust component types:
/// entity id to component name to encoded value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub tick: Tick,
    pub next_entity: u64,
    pub entities: BTreeMap<EntityId, BTreeMap<String, Vec<u8>>>,
}

impl State {
    /// The empty world at tick 0.
    pub fn empty() -> Self {
        State::default()
    }

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
            match change {
                Change::Spawn { entity } => {
                    if self.entities.contains_key(entity) {
                        return Err(err(*entity, "spawned twice"));
                    }
                    self.entities.insert(*entity, BTreeMap::new());
                    self.next_entity = self.next_entity.max(entity.0 + 1);
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } => {
                    let comps = self
                        .entities
                        .get_mut(entity)
                        .ok_or_else(|| err(*entity, "set on an entity that is not alive"))?;
                    comps.insert(component.clone(), value.clone());
                }
                Change::Remove { entity, component } => {
                    let comps = self
                        .entities
                        .get_mut(entity)
                        .ok_or_else(|| err(*entity, "remove on an entity that is not alive"))?;
                    comps.remove(component);
                }
                Change::Despawn { entity } => {
                    if self.entities.remove(entity).is_none() {
                        return Err(err(*entity, "despawn of an entity that is not alive"));
                    }
                }
            }
        }
        self.tick = record.tick;
        Ok(())
    }
}
