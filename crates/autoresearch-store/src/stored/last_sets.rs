//! The writer's memory of the values it last wrote ([`LastSets`]), from
//! which it stores a changed value as a delta and answers its own reads of
//! them without reading the records.

use super::BaseMemo;
use crate::EncodedAppend;
use crate::encoding::{self, delta};
use autoresearch_core::Change;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the writer thread knows of the values it wrote, kept across
/// transactions: the tick that last set each `(world, entity, component)`,
/// how many deltas away from a whole value that value is, the value
/// itself, and the whole value its chain starts from (its *root*: the tick
/// and the value), both shared with their ticks' changes, not copied.
///
/// A later `Set` of it is stored as a delta of the root's value when that
/// delta is small ([`ROOT_MIDDLE_MAX`]) or no larger than one of the last
/// value, else as a delta of the last value: chains stay one long for
/// values changed in a few places (a status), so a read resolves each
/// delta with one base record (often one many deltas share, such as an
/// ingest's), not a chain of records at older ticks. A read of the value
/// a tick set ([`StoredValues::value_at`](super::StoredValues::value_at) inside the writer's
/// transaction: the current state's lifecycle values before a batch) is
/// answered from here instead of from the records and their delta chains.
///
/// An entry is never stale: it says what the record of one tick holds,
/// and a stored record never changes (a world id is never reused). The
/// base of a delta is named explicitly, so an entry that another process
/// has since superseded still gives a correct (if longer) delta, and a
/// read that asks for another tick's value misses and reads the record.
/// The writer clears it with a failed transaction, which may have set
/// some of it.
#[derive(Default)]
pub(crate) struct LastSets {
    pub(super) inner: Arc<Mutex<LastInner>>,
    /// Delta bases decoded by the writer.
    pub(crate) bases: Arc<BaseMemo>,
}

/// The entries of [`LastSets`], shared with the writer's [`WriteValues`](super::WriteValues).
#[derive(Default)]
pub(super) struct LastInner {
    /// Component -> `(world, entity)` -> the last `Set` (a handful of
    /// names, looked up for every `Set` the writer stores: foldhash, not
    /// SipHash).
    map: HashMap<String, LastOf, foldhash::fast::FixedState>,
    /// Entries in `map`.
    len: usize,
    /// About the bytes of the ticks' changes the entries hold (each tick
    /// counted once, when noted; a root keeps its tick's changes alive
    /// after they were counted).
    bytes: usize,
}

/// One component's entries of [`LastSets`], by `(world, entity)`.
type LastOf = HashMap<(u64, u64), LastSet, foldhash::fast::FixedState>;

/// A `Set` held by reference: `changes[at]` of one tick's changes.
#[derive(Clone)]
pub(crate) struct SetRef {
    changes: Arc<[Change]>,
    at: usize,
}

impl SetRef {
    pub(crate) fn value(&self) -> &[u8] {
        match self.changes.get(self.at) {
            Some(Change::Set { value, .. }) => value,
            // Never: only `Set`s are noted.
            _ => &[],
        }
    }
}

/// The `Set` that last set a value: its tick, the chain length of the
/// value as stored, the value, and the root (the tick and value of the
/// whole value its chain starts from; the `Set` itself when `depth` is 0).
struct LastSet {
    tick: u64,
    depth: u8,
    set: SetRef,
    root: u64,
    root_set: SetRef,
}

impl LastSet {
    fn value(&self) -> &[u8] {
        self.set.value()
    }
}

/// A delta of a value's root (the whole value its chain starts from)
/// whose middle is at most this many bytes is taken without looking at
/// the last value: it costs at most this much more than a delta of the
/// last value would, and it keeps the chain one long.
const ROOT_MIDDLE_MAX: usize = 32;

/// The most entries [`LastSets`] keeps; past it, it starts over.
const LAST_SETS_MAX: usize = 4 << 20;

/// The most bytes of changes [`LastSets`] holds; past it, it starts over.
const LAST_SETS_BYTES: usize = 128 << 20;

impl LastInner {
    fn get(&self, world: u64, entity: u64, component: &str) -> Option<&LastSet> {
        self.map.get(component)?.get(&(world, entity))
    }

    fn clear(&mut self) {
        self.map.clear();
        self.len = 0;
        self.bytes = 0;
    }

    /// Makes room for a tick of `bytes` (starting over when full).
    fn reserve(&mut self, bytes: usize) {
        if self.len >= LAST_SETS_MAX || self.bytes + bytes > LAST_SETS_BYTES {
            self.clear();
        }
        self.bytes += bytes;
    }

    fn note(&mut self, world: u64, entity: u64, component: &str, set: LastSet) {
        let by_entity = match self.map.get_mut(component) {
            Some(m) => m,
            None => self.map.entry(component.to_string()).or_default(),
        };
        if by_entity.insert((world, entity), set).is_none() {
            self.len += 1;
        }
    }
}

impl LastSets {
    fn lock(&self) -> std::sync::MutexGuard<'_, LastInner> {
        // A panic while holding the lock leaves whole entries: usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets everything (after a failed transaction).
    pub(crate) fn clear(&mut self) {
        self.lock().clear();
        self.bases.clear();
    }

    /// The bytes to store for `append`'s record in `world`: `None` to store
    /// its whole encoding, or the record with each `Set` of a value this
    /// writer knows, and that shares most of its bytes with its root or
    /// its last value, as a delta of one of them ([`choose_base`]). Notes
    /// the record's `Set`s either way.
    pub(crate) fn encode(&mut self, world: u64, append: &EncodedAppend) -> Option<Vec<u8>> {
        let tick = append.tick.0;
        let changes: &Arc<[Change]> = &append.changes_full;
        let mut deltas = vec![None; changes.len()];
        // What is noted of each `Set`: its chain length and its root
        // (`None`: the `Set` itself, stored whole).
        let mut noted: Vec<(u8, Option<(u64, SetRef)>)> = vec![(0, None); changes.len()];
        let mut any = false;
        let mut bytes = 0usize;
        let mut inner = self.lock();
        for (i, c) in changes.iter().enumerate() {
            let Change::Set {
                entity,
                component,
                value,
            } = c
            else {
                continue;
            };
            bytes += value.len() + component.len() + 64;
            let Some(last) = inner.get(world, entity.0, component) else {
                continue;
            };
            if let Some((base, prefix, suffix, depth)) = choose_base(tick, value, last) {
                deltas[i] = Some((base, prefix, suffix));
                noted[i] = (depth, Some((last.root, last.root_set.clone())));
                any = true;
            }
        }
        let whole = any
            .then(|| encoding::encode_record_with_deltas(append.at_ms, changes, &deltas))
            .and_then(Result::ok);
        if any && whole.is_none() {
            // Stored whole: no value of it is a delta.
            noted.iter_mut().for_each(|n| *n = (0, None));
        }
        if bytes > 0 {
            inner.reserve(bytes);
        }
        for (i, (c, (depth, root))) in changes.iter().zip(noted).enumerate() {
            if let Change::Set {
                entity, component, ..
            } = c
            {
                let set = SetRef {
                    changes: changes.clone(),
                    at: i,
                };
                let (root, root_set) = root.unwrap_or_else(|| (tick, set.clone()));
                let last = LastSet {
                    tick,
                    depth,
                    set,
                    root,
                    root_set,
                };
                inner.note(world, entity.0, component, last);
            }
        }
        whole
    }
}

/// The delta to store `value` as, at `tick`, given the `Set` it replaces:
/// `(base, prefix, suffix, chain length)`, or `None` to store it whole. A
/// delta of the root (chain length 1) when its middle is at most
/// [`ROOT_MIDDLE_MAX`] bytes or no longer than a delta of the last value;
/// else a delta of the last value while its chain is shorter than
/// [`delta::MAX_CHAIN`]. Both values are in memory: no record is read.
fn choose_base(tick: u64, value: &[u8], last: &LastSet) -> Option<(u64, u32, u32, u8)> {
    if last.tick >= tick {
        return None;
    }
    let of_root = if last.depth > 0 && last.root < last.tick {
        delta::diff(last.root_set.value(), value)
    } else {
        None
    };
    if let Some((prefix, suffix, middle)) = of_root
        && middle.len() <= ROOT_MIDDLE_MAX
    {
        return Some((last.root, prefix, suffix, 1));
    }
    let of_last = if last.depth < delta::MAX_CHAIN {
        delta::diff(last.value(), value)
    } else {
        None
    };
    match (of_root, of_last) {
        (Some((p, s, root_middle)), Some((_, _, last_middle)))
            if root_middle.len() <= last_middle.len() =>
        {
            Some((last.root, p, s, 1))
        }
        (_, Some((p, s, _))) => Some((last.tick, p, s, last.depth + 1)),
        (Some((p, s, _)), None) => Some((last.root, p, s, 1)),
        (None, None) => None,
    }
}

/// A read of the value a tick set, answered from [`LastSets`] when it
/// holds that tick's `Set` (the writer's transaction only): shared with
/// that tick's changes, not copied.
pub(super) fn last_value(
    last: &Mutex<LastInner>,
    world: u64,
    entity: u64,
    component: &str,
    tick: u64,
) -> Option<SetRef> {
    let inner = last.lock().unwrap_or_else(|p| p.into_inner());
    let set = inner.get(world, entity, component)?;
    (set.tick == tick).then(|| set.set.clone())
}
