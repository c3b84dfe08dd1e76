//! The `current_pending` table: the changes of a world's latest ticks to
//! its pointers and to its experiment-keyed secondary keys, not yet folded
//! into `current_ticks` and `current_index`.
//!
//! An update tick of k changes would otherwise rewrite about k pointer
//! blocks and key chunks spread over as many B-tree leaves; here it adds
//! one small entry `(world, tick)` at the end of a small table instead (a
//! leaf or two), and every [`MAX_ENTRIES`] entries (or [`MAX_BYTES`]) the
//! world's entries are folded into the main tables in key order, at once.
//! Reads apply a world's entries, oldest first, over the main tables.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A world's entries are folded once it has this many.
pub(super) const MAX_ENTRIES: usize = 32;

/// ... or once their encoded values exceed this many bytes.
pub(super) const MAX_BYTES: usize = 48 << 10;

/// A tick (or a batch of ticks) with at least this many changes is folded
/// at once, never kept pending: a large ingest builds the main tables in
/// key order in one pass.
pub(super) const FOLD_NOW: usize = 2_048;

/// The version tag that starts a `current_pending` value (then the
/// postcard of an [`Overlay`]). A value of another version or that does
/// not parse is not read: reads fall back to materializing and a writer
/// stops keeping the world's current state.
const PENDING_VERSION: u8 = 1;

/// Changes over the main tables; a later one overrides an earlier one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Overlay {
    /// Component -> entity -> the tick that set its current value
    /// (`None`: the entity holds none).
    pub(super) pointers: BTreeMap<String, BTreeMap<u64, Option<u64>>>,
    /// Index -> `(key, entity)` -> whether the entry is present.
    pub(super) keys: BTreeMap<String, BTreeMap<(String, u64), bool>>,
}

impl Overlay {
    /// The changes it holds.
    pub(super) fn len(&self) -> usize {
        self.pointers.values().map(BTreeMap::len).sum::<usize>()
            + self.keys.values().map(BTreeMap::len).sum::<usize>()
    }

    /// Whether it holds no change.
    pub(super) fn is_empty(&self) -> bool {
        self.pointers.values().all(BTreeMap::is_empty) && self.keys.values().all(BTreeMap::is_empty)
    }

    /// Points `entity`'s `component` at `tick` (`None`: it holds none).
    pub(super) fn set_pointer(&mut self, component: &str, entity: u64, tick: Option<u64>) {
        match self.pointers.get_mut(component) {
            Some(m) => {
                m.insert(entity, tick);
            }
            None => {
                self.pointers
                    .insert(component.to_string(), BTreeMap::from([(entity, tick)]));
            }
        }
    }

    /// The pointer it sets for `entity`'s `component`, if any.
    pub(super) fn pointer(&self, component: &str, entity: u64) -> Option<Option<u64>> {
        self.pointers.get(component)?.get(&entity).copied()
    }

    /// Adds (`present`) or removes the entry `(key, entity)` of `index`.
    pub(super) fn set_key(&mut self, index: &str, key: String, entity: u64, present: bool) {
        match self.keys.get_mut(index) {
            Some(m) => {
                m.insert((key, entity), present);
            }
            None => {
                self.keys.insert(
                    index.to_string(),
                    BTreeMap::from([((key, entity), present)]),
                );
            }
        }
    }

    /// Applies `newer` over this overlay.
    pub(super) fn merge(&mut self, newer: Overlay) {
        for (c, m) in newer.pointers {
            match self.pointers.get_mut(&c) {
                Some(mine) => mine.extend(m),
                None => {
                    self.pointers.insert(c, m);
                }
            }
        }
        for (i, m) in newer.keys {
            match self.keys.get_mut(&i) {
                Some(mine) => mine.extend(m),
                None => {
                    self.keys.insert(i, m);
                }
            }
        }
    }

    /// The stored value; `None` when postcard fails (it does not on
    /// these types).
    pub(super) fn encode(&self) -> Option<Vec<u8>> {
        postcard::to_extend(self, vec![PENDING_VERSION]).ok()
    }

    /// A stored value; `None` for another version or damage.
    pub(super) fn decode(bytes: &[u8]) -> Option<Overlay> {
        match bytes.split_first() {
            Some((&PENDING_VERSION, body)) => postcard::from_bytes(body).ok(),
            _ => None,
        }
    }
}

/// A world's pending entries as a writer thread keeps them between
/// transactions (decoded and merged once, not on every tick): valid while
/// the table's first and last entry of the world are `first` and `last`.
#[derive(Clone, Debug, Default)]
pub(super) struct Pending {
    /// The first and last entry's tick; `None` when there is none.
    pub(super) ends: Option<(u64, u64)>,
    /// Entries.
    pub(super) count: usize,
    /// Their encoded bytes.
    pub(super) bytes: usize,
    /// Their changes, merged oldest first.
    pub(super) overlay: Overlay,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_round_trip_merge_newest_last_and_damage_is_refused() {
        let mut a = Overlay::default();
        assert!(a.is_empty());
        a.set_pointer("Run", 5, Some(1));
        a.set_pointer("Run", 6, Some(1));
        a.set_key("active", "exp".into(), 5, true);
        let mut b = Overlay::default();
        b.set_pointer("Run", 5, None);
        b.set_pointer("Outcome", 6, Some(2));
        b.set_key("active", "exp".into(), 5, false);
        a.merge(b);
        assert_eq!(a.pointer("Run", 5), Some(None));
        assert_eq!(a.pointer("Run", 6), Some(Some(1)));
        assert_eq!(a.pointer("Outcome", 6), Some(Some(2)));
        assert_eq!(a.pointer("Outcome", 5), None);
        assert!(!a.keys["active"][&("exp".to_string(), 5)]);
        assert_eq!(a.len(), 4);
        let bytes = a.encode().unwrap();
        assert_eq!(bytes[0], PENDING_VERSION);
        assert_eq!(Overlay::decode(&bytes), Some(a.clone()));
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(Overlay::decode(&other), None);
        assert_eq!(Overlay::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Overlay::decode(&[]), None);
    }
}
