//! A [`World`]'s snapshots: when one is due after a tick, encoding it
//! straight from hecs, and the whole materialized state encoded back.

use super::World;
use crate::error::Error;
use crate::ids::EntityId;
use crate::record::{Snapshot, SnapshotEntity, State, TickRecord};
use crate::registry::{RegistryError, VTable};

impl World {
    /// The snapshot of the state after `record` (the next tick), when the
    /// storage asks for one at its tick ([`crate::Storage::snapshot_due_after`]:
    /// its interval, or the bytes a read would replay).
    pub(super) fn snapshot_after(&self, record: &TickRecord) -> Result<Option<Snapshot>, Error> {
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
        let touched = record.entities();
        let mut after = State {
            tick: self.tick,
            next_entity: self.committed_next,
            entities: Default::default(),
        };
        for id in &touched {
            if let Some(e) = self.ids.get(id) {
                let comps = match self.hecs.entity(*e) {
                    Ok(eref) => encode_entity(vtables.iter().copied(), eref)?,
                    Err(_) => Vec::new(),
                };
                after.entities.insert(*id, comps.into_iter().collect());
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
    pub(super) fn sizes_after(
        &self,
        record: &TickRecord,
        snapshot: Option<&Snapshot>,
    ) -> (u64, u64) {
        match snapshot {
            Some(s) => (0, snapshot_bytes(s)),
            None => (self.replay_bytes + record.approx_bytes(), self.state_bytes),
        }
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
            let comps = encode_entity(self.registry.vtables(), eref)?;
            state.entities.insert(*id, comps.into_iter().collect());
        }
        Ok(state)
    }
}

/// The `(name, bytes)` of each component of `vtables` that `eref` holds,
/// in the order of `vtables`.
fn encode_entity<'v>(
    vtables: impl IntoIterator<Item = &'v VTable>,
    eref: hecs::EntityRef<'_>,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut comps = Vec::new();
    for vt in vtables {
        if let Some(bytes) = (vt.encode)(eref) {
            let bytes = bytes.map_err(|source| RegistryError::Encode {
                component: vt.name.clone(),
                source,
            })?;
            comps.push((vt.name.clone(), bytes));
        }
    }
    Ok(comps)
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
