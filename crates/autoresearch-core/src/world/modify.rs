//! Changing a component in place: [`World::modify`], and how a discarded
//! modify is undone.

use super::{Held, IdMap, World};
use crate::error::Error;
use crate::ids::{EntityId, WorldId};
use crate::record::Change;
use crate::registry::{
    ComponentRegistry, ComponentValue, RegistryError, encode_exact, insert_impl,
};
use std::collections::HashSet;

/// Puts a value decoded from its bytes on an entity (replacing its value).
type RestoreFn = fn(&mut hecs::World, hecs::Entity, &[u8]) -> Result<(), postcard::Error>;

/// The values [`World::modify`] changed in place since the last applied
/// tick, encoded as they were before: one arena of bytes, no allocation
/// per modify once it has grown.
#[derive(Default)]
pub(super) struct Undo {
    /// `(entity, restore, end)`: the old value of the i-th modify is
    /// `bytes[end of entry i-1 .. end]`.
    entries: Vec<(EntityId, RestoreFn, usize)>,
    bytes: Vec<u8>,
}

/// An `Extend<u8>` over a borrowed Vec, for `postcard::to_extend`.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl Undo {
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
    }

    /// Whether nothing was changed in place.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The changes, newest first, each with its old value's bytes.
    fn newest_first(&self) -> impl Iterator<Item = (EntityId, RestoreFn, &[u8])> {
        self.entries
            .iter()
            .enumerate()
            .rev()
            .map(|(i, (e, f, end))| {
                let start = match i {
                    0 => 0,
                    _ => self.entries[i - 1].2,
                };
                (*e, *f, &self.bytes[start..*end])
            })
    }

    /// Puts the old values back into `hecs` (whose entities `ids` maps),
    /// newest first: `hecs` ends as it was before the first modify.
    /// Errors when an old value does not decode (a type whose encoding
    /// does not round-trip).
    pub(super) fn restore_into(
        &self,
        hecs: &mut hecs::World,
        ids: &IdMap<hecs::Entity>,
        world: WorldId,
    ) -> Result<(), Error> {
        for (entity, restore, bytes) in self.newest_first() {
            let Some(e) = ids.get(&entity) else { continue };
            restore(hecs, *e, bytes).map_err(|source| RegistryError::Decode {
                world,
                component: "(a value modify changed in place)".to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// The latest pending change of one component of one entity.
enum Latest {
    /// None pending, or only ones made in place: hecs holds its value.
    InHecs,
    /// Set (not in place) by pending change `.0`.
    Set(usize),
    /// Removed.
    Removed,
}

impl World {
    /// Changes component `T` of `entity` in place: runs `f` on the value
    /// and buffers setting it, as [`World::get`], a change and
    /// [`World::insert_owned`] would, without copying the value out and
    /// back. Returns what `f` returns.
    ///
    /// The change is made in the materialized world at once: reads see it
    /// before the commit (unlike [`World::insert`]), and
    /// [`World::discard_pending`] (or [`World::refresh`]) puts the old
    /// value back. `f` sees the latest value: with an earlier
    /// [`World::insert`] of `T` on `entity` pending, the one inserted.
    /// The ledger records the new value whole, as `insert` does.
    ///
    /// Cost: two encodings of the value (the new one for the record, the
    /// old one kept to undo the change) and two allocations (the record's
    /// component name and bytes); no clone, no decode. With an insert of
    /// the same component pending, it decodes that one instead.
    ///
    /// Errors: `ReadOnly`; `NoSuchEntity` when `entity` is not alive (or
    /// its despawn is pending); `NoSuchComponent` when it has no `T` (or
    /// its removal is pending); `Registry` when `T` is not registered or
    /// does not encode. On an error nothing changed, and `f` did not run
    /// unless the new value failed to encode.
    pub fn modify<T: ComponentValue, R>(
        &mut self,
        entity: EntityId,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, Error> {
        self.check_writable()?;
        // One look-up of the id, for liveness and the hecs entity.
        let e = self.ids.get(&entity).copied();
        let live = match self.pending_live.is_empty() {
            true => e.is_some(),
            false => self
                .pending_live
                .get(&entity)
                .copied()
                .unwrap_or(e.is_some()),
        };
        if !live {
            return Err(Error::NoSuchEntity {
                world: self.info.id,
                entity,
            });
        }
        // The record's copy of the name (its borrow of the registry ends
        // here, so no clone of the registry's `Arc` is needed).
        let component = self.registry.name_of::<T>()?.to_string();
        match self.latest(entity, e.is_none(), &component) {
            Latest::InHecs => {}
            Latest::Set(i) => {
                let Change::Set { value: bytes, .. } = &self.pending[i] else {
                    unreachable!("latest names a Set");
                };
                let mut value: T = self.registry.decode(self.info.id, bytes)?;
                let out = f(&mut value);
                self.insert_owned(entity, value)?;
                return Ok(out);
            }
            Latest::Removed => return Err(self.no_component::<T>(entity)),
        }
        let Some(e) = e else {
            return Err(self.no_component::<T>(entity));
        };
        let run_before = match self.is_run(&component) {
            true => Some(self.run_id_of(e)),
            false => None,
        };
        let Ok(mut value) = self.hecs.get::<&mut T>(e) else {
            return Err(self.no_component::<T>(entity));
        };
        let start = self.undo.bytes.len();
        let encoded = postcard::to_extend(&*value, Append(&mut self.undo.bytes))
            .map(|_| ())
            .map_err(|source| RegistryError::Encode {
                component: component.clone(),
                source,
            });
        if let Err(e) = encoded {
            self.undo.bytes.truncate(start);
            return Err(e.into());
        }
        let out = f(&mut value);
        let bytes = match encode_exact(&*value) {
            Ok(bytes) => bytes,
            Err(source) => {
                // Put the old value back: nothing changed.
                drop(value);
                let old = &self.undo.bytes[start..];
                let restored = insert_impl::<T>(&mut self.hecs, e, old);
                self.undo.bytes.truncate(start);
                restored.map_err(|source| RegistryError::Decode {
                    world: self.info.id,
                    component: component.clone(),
                    source,
                })?;
                return Err(RegistryError::Encode { component, source }.into());
            }
        };
        drop(value);
        let end = self.undo.bytes.len();
        self.undo.entries.push((entity, insert_impl::<T>, end));
        self.pending.push(Change::Set {
            entity,
            component,
            value: bytes,
        });
        self.pending_values
            .push((self.pending.len() - 1, Held::InPlace(reencode::<T>)));
        if let Some(before) = run_before {
            self.reindex_run(entity, e, before);
        }
        Ok(out)
    }

    fn no_component<T: ComponentValue>(&self, entity: EntityId) -> Error {
        Error::NoSuchComponent {
            world: self.info.id,
            entity,
            component: self.registry.name_of::<T>().unwrap_or("?").to_string(),
        }
    }

    /// Records that a `Set` or `Remove` not made in place is pending on
    /// `entity` (for [`World::latest`]).
    pub(super) fn note_plain(&mut self, entity: EntityId) {
        self.plain += 1;
        if let Some(touched) = &mut self.touched {
            touched.insert(entity);
        }
    }

    /// Whether pending change `i` was made in place.
    pub(super) fn in_place(&self, i: usize) -> bool {
        in_place(&self.pending_values, i)
    }

    /// The latest pending change of `component` on `entity`. O(1) while
    /// no such change is pending on `entity`; else O(pending).
    /// (`spawned`: `entity`'s spawn is pending, hecs does not hold it.)
    fn latest(&mut self, entity: EntityId, spawned: bool, component: &str) -> Latest {
        if self.plain == 0 && !spawned {
            return Latest::InHecs;
        }
        if !spawned {
            let touched = self.touched.get_or_insert_with(|| {
                let mut set = HashSet::new();
                for (i, c) in self.pending.iter().enumerate() {
                    let plain = match c {
                        Change::Set { .. } => !in_place(&self.pending_values, i),
                        Change::Remove { .. } => true,
                        _ => false,
                    };
                    if plain {
                        set.insert(c.entity());
                    }
                }
                set
            });
            if !touched.contains(&entity) {
                return Latest::InHecs;
            }
        }
        for (i, c) in self.pending.iter().enumerate().rev() {
            match c {
                Change::Set {
                    entity: e,
                    component: n,
                    ..
                } if *e == entity && n == component => {
                    return match self.in_place(i) {
                        true => Latest::InHecs,
                        false => Latest::Set(i),
                    };
                }
                Change::Remove {
                    entity: e,
                    component: n,
                } if *e == entity && n == component => return Latest::Removed,
                _ => {}
            }
        }
        Latest::InHecs
    }

    /// Puts back the values [`World::modify`] changed in place, keeping
    /// the run index in step. A value that does not decode back (a type
    /// whose encoding does not round-trip) stays as modified.
    pub(super) fn undo_in_place(&mut self) {
        if self.undo.is_empty() {
            return;
        }
        let undo = std::mem::take(&mut self.undo);
        for (entity, restore, bytes) in undo.newest_first() {
            let Some(e) = self.hecs_entity(entity) else {
                continue;
            };
            let before = self.run_id_of(e);
            let _ = restore(&mut self.hecs, e, bytes);
            self.reindex_run(entity, e, before);
        }
    }
}

/// Whether change `i` of the pending `values` was made in place.
fn in_place(values: &[(usize, Held)], i: usize) -> bool {
    values
        .binary_search_by_key(&i, |(at, _)| *at)
        .is_ok_and(|k| matches!(values[k].1, Held::InPlace(_)))
}

/// [`super::Reencode`] of `T`.
fn reencode<T: ComponentValue>(
    registry: &ComponentRegistry,
    hecs: &hecs::World,
    e: hecs::Entity,
) -> Option<Result<(String, Vec<u8>), RegistryError>> {
    let value = hecs.get::<&T>(e).ok()?;
    Some(registry.encode(&*value))
}
