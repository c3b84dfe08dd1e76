//! Decoded one-component reads kept between reads ([`SpanCache`]): a
//! record or snapshot decoded for a component (decompressed, its changes
//! visited) is kept, so that reads of nearby ticks (a replay view
//! scrubbing through time, repeated queries of one tick) decode each
//! stored value once. As a block cache of uncompressed blocks in a
//! key-value store (RocksDB's block cache, for one).
//!
//! A value is kept only when it is decoded a second time while its key is
//! still remembered as decoded once (admission on the second touch): reads
//! at random ticks of a long history, which seldom come back to a value,
//! then pay nothing for keeping what they decoded (no copy, no eviction),
//! and their one-off values do not push out the ones read again and
//! again. This is the doorkeeper of TinyLFU (G. Einziger, R. Friedman and
//! B. Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", ACM
//! Transactions on Storage 13(4), 2017), which admits on a second
//! occurrence, and plays the part of the `A1out` queue of remembered keys
//! of 2Q (T. Johnson and D. Shasha, "2Q: A Low Overhead High Performance
//! Buffer Management Replacement Algorithm", VLDB 1994). The remembered
//! keys are a fixed direct-mapped table of 64-bit key fingerprints (one
//! slot per key, chosen by its hash; a newer key in the same slot makes
//! the older one forgotten): one memory access per offer, and a bounded
//! size. A fingerprint collision admits a value one decode early, which
//! costs only memory.
//!
//! Besides what was decoded, it keeps states that reads replayed
//! ([`SpanCache::offer_gathered`]): a one-component read that replayed
//! many records after its snapshot offers the state it reached, and on
//! the second offer of the same (world, tick, component) the values are
//! gathered into one body in entity order and kept as a snapshot at that
//! tick, which later reads at or after it start from
//! ([`SpanCache::gathered_at_or_before`]). This is a snapshot made in
//! memory by a read instead of by the writer: it costs no stored byte,
//! and a read of the same tick then neither replays the records nor
//! reads values scattered over their bodies.
//!
//! A stored record never changes and a world id is never reused, so an
//! entry never goes stale: reads check that the world exists (and how far
//! its log reaches) in their own read transaction before they use one.

use autoresearch_core::{SpanRecord, SpanSnapshot, Tick, WorldId};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

/// What an entry was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Record,
    Snapshot,
    /// A state a read replayed, gathered ([`SpanCache::offer_gathered`]).
    Gathered,
}

/// `(kind, world, tick, component)`, the component as its index in
/// [`Inner::names`] (a look-up copies no text).
type Key = (Kind, u64, u64, u32);

enum Entry {
    Record(SpanRecord),
    Snapshot(SpanSnapshot),
}

type Hasher = foldhash::fast::FixedState;

/// Bytes one remembered key costs: its slot's fingerprint.
const GHOST_KEY_BYTES: usize = size_of::<u64>();

/// Share of the capacity spent on remembered keys (1/64): for the
/// default 64 MiB, 131,072 slots (about twice the records it keeps).
const GHOST_SHARE: usize = 64;

/// The fewest keys remembered, however small the capacity.
const GHOST_MIN_KEYS: usize = 8;

/// The fewest records a read must have replayed after its snapshot for
/// the state it reached to be offered for keeping
/// ([`SpanCache::offer_gathered`]). Below it, the replay costs little
/// more than starting from a kept state would, and keeping one per tick
/// read would fill the cache with near-copies of one state.
pub(crate) const GATHER_AFTER_RECORDS: usize = 16;

#[derive(Default)]
struct Inner {
    /// The components seen, by index.
    names: Vec<String>,
    entries: HashMap<Key, (Entry, usize), Hasher>,
    /// Keys in insertion order: the oldest is evicted first.
    order: VecDeque<Key>,
    bytes: usize,
    /// Fingerprints of keys decoded once and not kept, by slot (0: none);
    /// [`SpanCache::ghost_keys`] slots, made on the first offer.
    ghost: Vec<u64>,
    /// The kept gathered states as (world, component, tick): the one at
    /// or before a tick is a range look-up.
    gathered: BTreeSet<(u64, u32, u64)>,
    /// The kept records as (world, component, tick): those of a range of
    /// ticks are one range look-up ([`SpanCache::records_in`]), so a read
    /// of ticks none of which is kept (a random past tick of a long
    /// history) costs no look-up per tick.
    records: BTreeSet<(u64, u32, u64)>,
}

impl Inner {
    /// The ordered index of `kind`'s kept entries, for the kinds that have one.
    fn index_of(&mut self, kind: Kind) -> Option<&mut BTreeSet<(u64, u32, u64)>> {
        match kind {
            Kind::Gathered => Some(&mut self.gathered),
            Kind::Record => Some(&mut self.records),
            Kind::Snapshot => None,
        }
    }
}

impl Inner {
    fn name(&self, component: &str) -> Option<u32> {
        let i = self.names.iter().position(|n| n == component)?;
        u32::try_from(i).ok()
    }

    /// The snapshot or gathered state kept under `key`, shared.
    fn snapshot(&self, key: Key) -> Option<SpanSnapshot> {
        match self.entries.get(&key) {
            Some((Entry::Snapshot(s), _)) => Some(s.clone()),
            _ => None,
        }
    }

    fn name_or_add(&mut self, component: &str) -> Option<u32> {
        if let Some(i) = self.name(component) {
            return Some(i);
        }
        let i = u32::try_from(self.names.len()).ok()?;
        self.names.push(component.to_string());
        Some(i)
    }
}

/// A bounded cache of decoded one-component records and snapshots,
/// admitting a value on its second decode (see the module). At most
/// `capacity` bytes are used: the kept values (bodies plus changes, and
/// the keys' and slots' overhead) and the remembered keys together; the
/// entries kept longest are dropped first; one larger than the room left
/// for values is not kept. Zero keeps and remembers nothing.
pub(crate) struct SpanCache {
    /// Bytes for kept values: the capacity less the remembered keys'.
    capacity: usize,
    /// Keys remembered as decoded once, at most.
    ghost_keys: usize,
    inner: Mutex<Inner>,
}

fn record_bytes(r: &SpanRecord) -> usize {
    r.body.len()
        + r.changes.len() * size_of::<autoresearch_core::ComponentChange<autoresearch_core::Span>>()
        + 64
}

fn snapshot_bytes(s: &SpanSnapshot) -> usize {
    s.body.len()
        + s.entities.len()
            * size_of::<(autoresearch_core::EntityId, Option<autoresearch_core::Span>)>()
        + 64
}

impl SpanCache {
    pub(crate) fn new(capacity: usize) -> SpanCache {
        let ghost_keys = if capacity == 0 {
            0
        } else {
            (capacity / GHOST_SHARE / GHOST_KEY_BYTES).max(GHOST_MIN_KEYS)
        };
        SpanCache {
            capacity: capacity.saturating_sub(ghost_keys * GHOST_KEY_BYTES),
            ghost_keys,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves whole entries: usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of `world` tick `tick` decoded for `component`, if kept.
    #[cfg(test)]
    pub(crate) fn record(&self, world: WorldId, tick: Tick, component: &str) -> Option<SpanRecord> {
        if self.capacity == 0 {
            return None;
        }
        let inner = self.lock();
        let key = (Kind::Record, world.0, tick.0, inner.name(component)?);
        match inner.entries.get(&key) {
            Some((Entry::Record(r), _)) => Some(r.clone()),
            _ => None,
        }
    }

    /// The kept records of `world` with ticks in `from..=to` decoded for
    /// `component`, in tick order (shared, not copied). One lock and one
    /// range look-up, O(log kept + found): a read asks for its whole range
    /// at once instead of tick by tick.
    pub(crate) fn records_in(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
        component: &str,
    ) -> Vec<SpanRecord> {
        if self.capacity == 0 || from > to {
            return Vec::new();
        }
        let inner = self.lock();
        let Some(name) = inner.name(component) else {
            return Vec::new();
        };
        inner
            .records
            .range((world.0, name, from.0)..=(world.0, name, to.0))
            .filter_map(
                |&(w, n, t)| match inner.entries.get(&(Kind::Record, w, t, n)) {
                    Some((Entry::Record(r), _)) => Some(r.clone()),
                    _ => None,
                },
            )
            .collect()
    }

    /// The snapshot of `world` at `tick` decoded for `component`, if kept.
    pub(crate) fn snapshot(
        &self,
        world: WorldId,
        tick: Tick,
        component: &str,
    ) -> Option<SpanSnapshot> {
        if self.capacity == 0 {
            return None;
        }
        let inner = self.lock();
        inner.snapshot((Kind::Snapshot, world.0, tick.0, inner.name(component)?))
    }

    /// Offers records of `world` just decoded for `component` (taking one
    /// lock for all of them): each is kept (copied) if it was decoded once
    /// before and its key is still remembered, else its key is
    /// remembered.
    pub(crate) fn offer_records<'a>(
        &self,
        world: WorldId,
        component: &str,
        records: impl IntoIterator<Item = &'a SpanRecord>,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        let Some(name) = inner.name_or_add(component) else {
            return;
        };
        for r in records {
            let key = (Kind::Record, world.0, r.tick.0, name);
            if self.admit(&mut inner, key) {
                self.insert(&mut inner, key, record_bytes(r), Entry::Record(r.clone()));
            }
        }
    }

    /// Offers a snapshot just decoded, as [`SpanCache::offer_records`].
    pub(crate) fn offer_snapshot(&self, world: WorldId, component: &str, snapshot: &SpanSnapshot) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        let Some(name) = inner.name_or_add(component) else {
            return;
        };
        let key = (Kind::Snapshot, world.0, snapshot.tick.0, name);
        if self.admit(&mut inner, key) {
            let entry = Entry::Snapshot(snapshot.clone());
            self.insert(&mut inner, key, snapshot_bytes(snapshot), entry);
        }
    }

    /// The gathered state of `component` in `world` with the greatest
    /// tick `<= at`, if one is kept. O(log kept states).
    pub(crate) fn gathered_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
        component: &str,
    ) -> Option<SpanSnapshot> {
        if self.capacity == 0 {
            return None;
        }
        let inner = self.lock();
        let name = inner.name(component)?;
        let &(w, n, tick) = inner
            .gathered
            .range((world.0, name, 0)..=(world.0, name, at.0))
            .next_back()?;
        inner.snapshot((Kind::Gathered, w, tick, n))
    }

    /// Offers the state of `component` in `world` at `tick` that a read
    /// replayed from `replayed` records, its values `bytes` long (see the
    /// module): when at least [`GATHER_AFTER_RECORDS`] were replayed, the
    /// values fit in the cache, and the same state was offered once
    /// before while its key is still remembered, `gather` is called
    /// (outside the lock) and what it returns is kept and returned; else
    /// the key is remembered and `None` returned.
    pub(crate) fn offer_gathered(
        &self,
        world: WorldId,
        component: &str,
        tick: Tick,
        replayed: usize,
        bytes: usize,
        gather: &mut dyn FnMut() -> Option<SpanSnapshot>,
    ) -> Option<SpanSnapshot> {
        if self.capacity == 0 || replayed < GATHER_AFTER_RECORDS || bytes >= self.capacity {
            return None;
        }
        let key = {
            let mut inner = self.lock();
            let name = inner.name_or_add(component)?;
            let key = (Kind::Gathered, world.0, tick.0, name);
            if !self.admit(&mut inner, key) {
                return None;
            }
            key
        };
        let snapshot = gather().filter(|s| s.tick == tick)?;
        let mut inner = self.lock();
        let entry = Entry::Snapshot(snapshot.clone());
        self.insert(&mut inner, key, snapshot_bytes(&snapshot), entry)
            .then_some(snapshot)
    }

    /// Whether a value for `key` should be made and kept: `key` was
    /// remembered (it is forgotten now); else it is remembered and the
    /// answer is no. No for a key already kept.
    fn admit(&self, inner: &mut Inner, key: Key) -> bool {
        if inner.ghost.len() != self.ghost_keys {
            inner.ghost = vec![0; self.ghost_keys];
        }
        // The remembered keys first: most offers (values decoded once)
        // stop here, at one memory access, without probing the entries.
        let (slot, print) = self.slot(&key);
        if inner.ghost[slot] != print {
            inner.ghost[slot] = print;
            return false;
        }
        if inner.entries.contains_key(&key) {
            return false;
        }
        inner.ghost[slot] = 0;
        true
    }

    /// Keeps `entry` (its value `size` bytes) under `key`, dropping the
    /// entries kept longest until it fits; whether it was kept (not when
    /// larger than the room for values, or when `key` is kept already).
    fn insert(&self, inner: &mut Inner, key: Key, size: usize, entry: Entry) -> bool {
        if inner.entries.contains_key(&key) {
            return false;
        }
        // What an entry costs besides its value: the key twice (the map's
        // and the eviction queue's copy), the map's slot, and a gathered
        // state's or a record's place in its index.
        let index = if key.0 == Kind::Snapshot {
            0
        } else {
            size_of::<Key>()
        };
        let size = size + 2 * size_of::<Key>() + index + size_of::<(Entry, usize)>() + 16;
        // One as large as the whole cache is kept (a large world's ingest
        // record, which every later read replays, is worth more than all
        // the small ones it evicts).
        if size > self.capacity {
            return false;
        }
        while inner.bytes + size > self.capacity {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, n)) = inner.entries.remove(&old) {
                inner.bytes -= n;
            }
            if let Some(index) = inner.index_of(old.0) {
                index.remove(&(old.1, old.3, old.2));
            }
        }
        inner.bytes += size;
        inner.order.push_back(key);
        inner.entries.insert(key, (entry, size));
        if let Some(index) = inner.index_of(key.0) {
            index.insert((key.1, key.3, key.2));
        }
        true
    }

    /// The doorkeeper's slot of `key` and its fingerprint (never 0).
    fn slot(&self, key: &Key) -> (usize, u64) {
        let hash = Hasher::default().hash_one(key);
        let slot = (hash >> 32) as usize % self.ghost_keys.max(1);
        (slot, hash | 1)
    }

    /// Bytes used now: kept values and remembered keys.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        let inner = self.lock();
        inner.bytes + inner.ghost.len() * GHOST_KEY_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoresearch_core::{ComponentChange, EntityId, Span};
    use std::sync::Arc;

    fn record(tick: u64, body: usize) -> SpanRecord {
        SpanRecord {
            tick: Tick(tick),
            body: Arc::new(vec![7; body]),
            changes: vec![ComponentChange::Set(
                EntityId(1),
                Span {
                    start: 0,
                    len: body as u32,
                },
            )]
            .into(),
        }
    }

    /// Offers `r` twice: the second offer keeps it (if it fits).
    fn keep(cache: &SpanCache, w: WorldId, component: &str, r: &SpanRecord) {
        cache.offer_records(w, component, [r]);
        cache.offer_records(w, component, [r]);
    }

    #[test]
    fn the_kept_records_of_a_range_are_found_in_tick_order_and_leave_it_when_evicted() {
        // Room for about four records of 1,000 bytes.
        let cache = SpanCache::new(4_700 + 4_700 / GHOST_SHARE);
        let w = WorldId(1);
        for t in [5, 3, 9, 4] {
            keep(&cache, w, "Run", &record(t, 1_000));
        }
        keep(&cache, WorldId(2), "Run", &record(6, 10));
        keep(&cache, w, "Other", &record(6, 10));
        let ticks = |from, to| -> Vec<u64> {
            cache
                .records_in(w, Tick(from), Tick(to), "Run")
                .iter()
                .map(|r| r.tick.0)
                .collect()
        };
        // The two small ones of other keys evicted the oldest (tick 5).
        assert_eq!(cache.record(w, Tick(5), "Run"), None);
        assert_eq!(ticks(1, 100), vec![3, 4, 9]);
        assert_eq!(ticks(4, 8), vec![4]);
        assert_eq!(ticks(10, 100), Vec::<u64>::new());
        assert_eq!(ticks(9, 3), Vec::<u64>::new());
        assert_eq!(
            cache.records_in(w, Tick(1), Tick(100), "Absent"),
            Vec::<SpanRecord>::new()
        );
        assert_eq!(
            cache.records_in(WorldId(2), Tick(1), Tick(100), "Run")[0],
            record(6, 10)
        );
        // Each found record is the one kept, shared.
        for r in cache.records_in(w, Tick(1), Tick(100), "Run") {
            assert_eq!(cache.record(w, r.tick, "Run"), Some(r.clone()));
            assert_eq!(r, record(r.tick.0, 1_000));
        }
        // Filling the cache with others evicts them from the index too.
        for t in 100..110 {
            keep(&cache, w, "Run", &record(t, 1_000));
        }
        assert_eq!(ticks(1, 99), Vec::<u64>::new());
        let kept: Vec<u64> = (100..110)
            .filter(|&t| cache.record(w, Tick(t), "Run").is_some())
            .collect();
        assert!(kept.len() >= 2, "{kept:?}");
        assert_eq!(ticks(100, 200), kept);
        // The index holds the kept records and nothing evicted.
        let small = [(WorldId(2), "Run"), (w, "Other")]
            .into_iter()
            .filter(|&(w, c)| cache.record(w, Tick(6), c).is_some())
            .count();
        assert_eq!(cache.lock().records.len(), kept.len() + small);
    }

    #[test]
    fn a_value_decoded_once_is_not_kept_and_one_decoded_twice_is() {
        let cache = SpanCache::new(1 << 20);
        let w = WorldId(1);
        cache.offer_records(w, "Run", [&record(1, 100), &record(2, 100)]);
        assert_eq!(cache.record(w, Tick(1), "Run"), None);
        assert_eq!(cache.record(w, Tick(2), "Run"), None);
        // Only the keys are remembered: no value's bytes.
        let remembered = cache.bytes();
        assert_eq!(remembered, cache.ghost_keys * GHOST_KEY_BYTES);
        cache.offer_records(w, "Run", [&record(1, 100)]);
        assert_eq!(cache.record(w, Tick(1), "Run"), Some(record(1, 100)));
        assert_eq!(cache.record(w, Tick(2), "Run"), None);
        assert!(cache.bytes() > remembered + 100);
        // Another component, world or kind is another key.
        assert_eq!(cache.record(w, Tick(1), "Other"), None);
        assert_eq!(cache.record(WorldId(2), Tick(1), "Run"), None);
        assert_eq!(cache.snapshot(w, Tick(1), "Run"), None);
        cache.offer_records(w, "Other", [&record(1, 100)]);
        assert_eq!(cache.record(w, Tick(1), "Other"), None);
        // Snapshots are admitted the same way.
        let snap = SpanSnapshot {
            tick: Tick(1),
            body: Arc::new(vec![1; 10]),
            entities: vec![(EntityId(1), Some(Span { start: 0, len: 10 }))],
        };
        cache.offer_snapshot(w, "Run", &snap);
        assert_eq!(cache.snapshot(w, Tick(1), "Run"), None);
        cache.offer_snapshot(w, "Run", &snap);
        assert_eq!(cache.snapshot(w, Tick(1), "Run"), Some(snap));
        assert_eq!(cache.record(w, Tick(1), "Run"), Some(record(1, 100)));
    }

    #[test]
    fn a_kept_record_is_handed_out_without_copying_its_body_or_changes() {
        // An ingest's record is replayed by every later read: each read
        // must share it, not copy its changes (24 bytes each, two per run).
        let cache = SpanCache::new(1 << 20);
        let w = WorldId(1);
        let r = record(1, 100);
        keep(&cache, w, "Run", &r);
        for _ in 0..2 {
            let got = cache.record(w, Tick(1), "Run").unwrap();
            assert!(Arc::ptr_eq(&got.body, &r.body));
            assert!(Arc::ptr_eq(&got.changes, &r.changes));
        }
    }

    #[test]
    fn a_remembered_key_is_forgotten_when_another_takes_its_slot() {
        let cache = SpanCache::new(1 << 20);
        let w = WorldId(1);
        let name = 0; // "Run", the first component offered
        let slot = |t: u64| cache.slot(&(Kind::Record, w.0, t, name)).0;
        // A tick whose key shares tick 0's slot, and one that does not.
        let same = (1..).find(|t| slot(*t) == slot(0)).unwrap();
        let other = (1..).find(|t| slot(*t) != slot(0)).unwrap();
        cache.offer_records(w, "Run", [&record(0, 10), &record(other, 10)]);
        cache.offer_records(w, "Run", [&record(same, 10)]);
        cache.offer_records(w, "Run", [&record(0, 10), &record(other, 10)]);
        assert_eq!(cache.record(w, Tick(0), "Run"), None);
        assert!(cache.record(w, Tick(other), "Run").is_some());
        // Tick 0 is remembered again now, and kept on its next offer.
        cache.offer_records(w, "Run", [&record(0, 10)]);
        assert!(cache.record(w, Tick(0), "Run").is_some());
        // However many keys are offered, the table does not grow.
        let before = cache.bytes();
        for t in 1_000..1_000 + 4 * cache.ghost_keys as u64 {
            cache.offer_records(w, "Run", [&record(t, 10)]);
        }
        assert!(cache.bytes() <= before);
    }

    #[test]
    fn keeps_what_fits_and_drops_the_oldest_first() {
        let total = 3_600;
        let cache = SpanCache::new(total);
        let room = cache.capacity;
        assert_eq!(room, total - cache.ghost_keys * GHOST_KEY_BYTES);
        let w = WorldId(1);
        keep(&cache, w, "Run", &record(1, 1_000));
        keep(&cache, w, "Run", &record(2, 1_000));
        assert_eq!(cache.record(w, Tick(1), "Run"), Some(record(1, 1_000)));
        assert!(cache.record(w, Tick(2), "Run").is_some());
        // A third does not fit beside both: the oldest goes.
        keep(&cache, w, "Run", &record(3, 1_500));
        assert_eq!(cache.record(w, Tick(1), "Run"), None);
        assert!(cache.record(w, Tick(2), "Run").is_some());
        assert!(cache.record(w, Tick(3), "Run").is_some());
        assert!(cache.bytes() <= total);
        // One larger than the room for values is not kept at all, and
        // evicts nothing.
        keep(&cache, w, "Run", &record(4, room));
        assert_eq!(cache.record(w, Tick(4), "Run"), None);
        assert!(cache.record(w, Tick(3), "Run").is_some());
        // One that fits alone evicts everything else.
        keep(&cache, w, "Run", &record(5, 2_500));
        assert!(cache.record(w, Tick(5), "Run").is_some());
        assert_eq!(cache.record(w, Tick(2), "Run"), None);
        assert_eq!(cache.record(w, Tick(3), "Run"), None);
        assert!(cache.bytes() <= total);
        // A zero capacity keeps and remembers nothing.
        let off = SpanCache::new(0);
        keep(&off, w, "Run", &record(1, 10));
        assert_eq!(off.record(w, Tick(1), "Run"), None);
        assert_eq!(off.bytes(), 0);
    }

    fn state(tick: u64, body: usize) -> SpanSnapshot {
        SpanSnapshot {
            tick: Tick(tick),
            body: Arc::new(vec![3; body]),
            entities: vec![(
                EntityId(1),
                Some(Span {
                    start: 0,
                    len: body as u32,
                }),
            )],
        }
    }

    /// Offers the state at `tick` once; whether `gather` was called, and
    /// what was kept.
    fn offer_state(
        cache: &SpanCache,
        w: WorldId,
        tick: u64,
        replayed: usize,
        body: usize,
    ) -> (bool, Option<SpanSnapshot>) {
        let mut called = false;
        let kept = cache.offer_gathered(w, "Run", Tick(tick), replayed, body, &mut || {
            called = true;
            Some(state(tick, body))
        });
        (called, kept)
    }

    #[test]
    fn a_state_offered_twice_after_many_records_is_gathered_and_found_at_or_after_its_tick() {
        let cache = SpanCache::new(1 << 20);
        let w = WorldId(1);
        // Too few records replayed: never gathered, however often.
        for _ in 0..3 {
            assert_eq!(
                offer_state(&cache, w, 10, GATHER_AFTER_RECORDS - 1, 100),
                (false, None)
            );
        }
        // The first offer only remembers; the second gathers and keeps.
        assert_eq!(
            offer_state(&cache, w, 40, GATHER_AFTER_RECORDS, 100),
            (false, None)
        );
        assert_eq!(cache.gathered_at_or_before(w, Tick(40), "Run"), None);
        let (called, kept) = offer_state(&cache, w, 40, GATHER_AFTER_RECORDS, 100);
        assert!(called);
        assert_eq!(kept, Some(state(40, 100)));
        // Found at its tick and after it, not before, nor for another
        // world or component; not a record or a stored snapshot.
        assert_eq!(
            cache.gathered_at_or_before(w, Tick(40), "Run"),
            Some(state(40, 100))
        );
        assert_eq!(
            cache.gathered_at_or_before(w, Tick(1_000), "Run"),
            Some(state(40, 100))
        );
        assert_eq!(cache.gathered_at_or_before(w, Tick(39), "Run"), None);
        assert_eq!(
            cache.gathered_at_or_before(WorldId(2), Tick(40), "Run"),
            None
        );
        assert_eq!(cache.gathered_at_or_before(w, Tick(40), "Other"), None);
        assert_eq!(cache.snapshot(w, Tick(40), "Run"), None);
        // A kept state is not gathered again.
        assert_eq!(offer_state(&cache, w, 40, 50, 100), (false, None));
        // The newest at or before a tick is the one found.
        offer_state(&cache, w, 70, 30, 100);
        offer_state(&cache, w, 70, 30, 100);
        assert_eq!(
            cache
                .gathered_at_or_before(w, Tick(69), "Run")
                .unwrap()
                .tick,
            Tick(40)
        );
        assert_eq!(
            cache
                .gathered_at_or_before(w, Tick(80), "Run")
                .unwrap()
                .tick,
            Tick(70)
        );
        // A gather that fails keeps nothing; a cache of no bytes never
        // gathers.
        cache.offer_gathered(w, "Run", Tick(90), 30, 10, &mut || None);
        assert_eq!(
            cache.offer_gathered(w, "Run", Tick(90), 30, 10, &mut || None),
            None
        );
        assert_eq!(
            cache
                .gathered_at_or_before(w, Tick(95), "Run")
                .unwrap()
                .tick,
            Tick(70)
        );
        let off = SpanCache::new(0);
        for _ in 0..2 {
            assert_eq!(offer_state(&off, w, 40, 100, 10), (false, None));
        }
    }

    #[test]
    fn an_evicted_state_is_no_longer_found() {
        let total = 4_000;
        let cache = SpanCache::new(total);
        let w = WorldId(1);
        for t in [20, 40] {
            offer_state(&cache, w, t, 20, 1_000);
            assert!(offer_state(&cache, w, t, 20, 1_000).1.is_some());
        }
        assert_eq!(
            cache
                .gathered_at_or_before(w, Tick(50), "Run")
                .unwrap()
                .tick,
            Tick(40)
        );
        // A third does not fit beside both: the oldest (tick 20) goes.
        offer_state(&cache, w, 60, 20, 1_800);
        assert!(offer_state(&cache, w, 60, 20, 1_800).1.is_some());
        assert_eq!(cache.gathered_at_or_before(w, Tick(30), "Run"), None);
        assert_eq!(
            cache
                .gathered_at_or_before(w, Tick(50), "Run")
                .unwrap()
                .tick,
            Tick(40)
        );
        // Values larger than the room for values are not gathered at all;
        // ones that fit alone but not with the entry's overhead are
        // gathered and dropped.
        let room = cache.capacity;
        offer_state(&cache, w, 80, 20, room);
        assert_eq!(offer_state(&cache, w, 80, 20, room), (false, None));
        offer_state(&cache, w, 85, 20, room - 10);
        assert_eq!(offer_state(&cache, w, 85, 20, room - 10), (true, None));
        assert_eq!(
            cache
                .gathered_at_or_before(w, Tick(90), "Run")
                .unwrap()
                .tick,
            Tick(60)
        );
        assert!(cache.bytes() <= total);
        assert_eq!(cache.lock().gathered.len(), 2);
    }

    /// Many values offered twice each, of many sizes: the bytes used never
    /// pass the capacity.
    #[test]
    fn the_byte_cap_holds_under_churn() {
        let total = 50_000;
        let cache = SpanCache::new(total);
        let w = WorldId(3);
        for t in 0..2_000u64 {
            let r = record(t, (t as usize * 37) % 3_000);
            cache.offer_records(w, if t % 3 == 0 { "A" } else { "B" }, [&r]);
            if t % 2 == 0 {
                cache.offer_records(w, if t % 3 == 0 { "A" } else { "B" }, [&r]);
            }
            assert!(cache.bytes() <= total, "{} at {t}", cache.bytes());
        }
        // The last value offered twice is kept.
        assert!(cache.record(w, Tick(1_996), "B").is_some());
    }
}
