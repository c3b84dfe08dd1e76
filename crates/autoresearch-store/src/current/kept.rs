//! The writer's memory of each world's lifecycle values as of the last
//! tick it wrote itself ([`KeptWorld`]): an update tick then takes a
//! changed entity's values before the tick from here, instead of looking
//! up its six pointers and reading each value from the records, and the
//! append check knows it alive.
//!
//! An entry is valid only while the world's head is the tick the writer
//! noted with it: the ticks up to that head were applied to it in order
//! by this writer, so it holds exactly what the tables hold. A tick of
//! another process (or another handle of the same file) moves the head
//! without this writer seeing it; the next append finds the world at
//! another head and starts the world's entries over. A head never moves
//! back, and a world id is never reused, so an entry can never be taken
//! for a later state of the same tick. Entries of entities a batch did
//! not touch stay valid, as their values did not change.

use crate::current::EntityMap;
use autoresearch_core::Change;
use autoresearch_core::current::INPUTS;
use std::collections::HashMap;
use std::sync::Arc;

/// The most entities kept over all worlds; past it, every world starts
/// over (about 250 bytes an entry, beside the values, which are shared
/// with the ticks' changes or read once).
const KEPT_MAX: usize = 1 << 21;

/// A lifecycle value as the writer keeps it: shared with the tick that
/// set it (no copy), or read from the records.
#[derive(Clone)]
pub(super) enum KeptValue {
    /// `changes[at]`, a `Set`.
    Set(Arc<[Change]>, usize),
    /// A value read from the records.
    Read(Arc<[u8]>),
}

impl KeptValue {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            KeptValue::Set(changes, at) => match changes.get(*at) {
                Some(Change::Set { value, .. }) => value,
                // Never: only `Set`s are kept.
                _ => &[],
            },
            KeptValue::Read(v) => v,
        }
    }
}

/// One live entity's lifecycle values (by position in [`INPUTS`]). Its
/// facts are not kept: decoding them from the Run (which the update
/// copies anyway, for the series) cost less than cloning kept ones, whose
/// strings are rarely in the processor's caches (`perf`, `bench ledger`,
/// eight writers).
#[derive(Clone)]
pub(super) struct KeptEntity {
    pub(super) inputs: [Option<KeptValue>; INPUTS.len()],
}

/// One world's kept entities, valid while its head is `head`.
#[derive(Default)]
pub(super) struct KeptWorld {
    pub(super) head: u64,
    /// Live entities, by id (boxed: the map's slots stay small, so its
    /// look-ups touch less memory). An entity not here is read from the
    /// tables.
    pub(super) entities: EntityMap<Box<KeptEntity>>,
}

/// Every world's [`KeptWorld`], in the writer's `InputCache`.
#[derive(Default)]
pub(super) struct Kept {
    worlds: HashMap<u64, KeptWorld>,
}

impl Kept {
    pub(super) fn clear(&mut self) {
        self.worlds.clear();
    }

    /// Forgets world `w`.
    pub(super) fn remove(&mut self, w: u64) {
        self.worlds.remove(&w);
    }

    /// World `w`'s entries, taken out, when they are valid at `head`;
    /// else an empty set at `head`.
    pub(super) fn take(&mut self, w: u64, head: u64) -> KeptWorld {
        match self.worlds.remove(&w) {
            Some(k) if k.head == head => k,
            _ => KeptWorld {
                head,
                entities: EntityMap::default(),
            },
        }
    }

    /// Puts back world `w`'s entries (now valid at `kept.head`).
    pub(super) fn put(&mut self, w: u64, kept: KeptWorld) {
        let total: usize = self.worlds.values().map(|k| k.entities.len()).sum();
        if total + kept.entities.len() > KEPT_MAX {
            self.worlds.clear();
            if kept.entities.len() > KEPT_MAX {
                return;
            }
        }
        self.worlds.insert(w, kept);
    }

    /// Whether `entity` of world `w` is known to be alive at `head` (kept
    /// at that head). `false` means not known: the caller looks it up.
    pub(super) fn alive(&self, w: u64, head: u64, entity: u64) -> bool {
        self.worlds
            .get(&w)
            .is_some_and(|k| (k.head == head) && k.entities.contains_key(&entity))
    }
}
