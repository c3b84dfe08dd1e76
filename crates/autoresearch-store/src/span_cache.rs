//! Decoded one-component reads kept between reads ([`SpanCache`]): a
//! record or snapshot decoded for a component (decompressed, its changes
//! visited) is kept, so that reads of nearby ticks (a replay view
//! scrubbing through time, repeated queries of one tick) decode each
//! stored value once. As a block cache of uncompressed blocks in a
//! key-value store (RocksDB's block cache, for one).
//!
//! A stored record never changes and a world id is never reused, so an
//! entry never goes stale: reads check that the world exists (and how far
//! its log reaches) in their own read transaction before they use one.

use autoresearch_core::{SpanRecord, SpanSnapshot, Tick, WorldId};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// What an entry was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Record,
    Snapshot,
}

type Key = (Kind, u64, u64, String);

enum Entry {
    Record(SpanRecord),
    Snapshot(SpanSnapshot),
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, (Entry, usize)>,
    /// Keys in insertion order: the oldest is evicted first.
    order: VecDeque<Key>,
    bytes: usize,
}

/// A bounded cache of decoded one-component records and snapshots. At
/// most `capacity` bytes (bodies plus changes) are kept; the entries kept
/// longest are dropped first; one larger than `capacity` is not kept.
/// Zero keeps nothing.
pub(crate) struct SpanCache {
    capacity: usize,
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
        SpanCache {
            capacity,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves whole entries: usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of `world` tick `tick` decoded for `component`, if kept.
    pub(crate) fn record(&self, world: WorldId, tick: Tick, component: &str) -> Option<SpanRecord> {
        if self.capacity == 0 {
            return None;
        }
        let key = (Kind::Record, world.0, tick.0, component.to_string());
        match self.lock().entries.get(&key) {
            Some((Entry::Record(r), _)) => Some(r.clone()),
            _ => None,
        }
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
        let key = (Kind::Snapshot, world.0, tick.0, component.to_string());
        match self.lock().entries.get(&key) {
            Some((Entry::Snapshot(s), _)) => Some(s.clone()),
            _ => None,
        }
    }

    pub(crate) fn keep_record(&self, world: WorldId, component: &str, record: &SpanRecord) {
        let size = record_bytes(record);
        self.keep(
            (Kind::Record, world.0, record.tick.0, component.to_string()),
            Entry::Record(record.clone()),
            size,
        );
    }

    pub(crate) fn keep_snapshot(&self, world: WorldId, component: &str, snapshot: &SpanSnapshot) {
        let size = snapshot_bytes(snapshot);
        self.keep(
            (
                Kind::Snapshot,
                world.0,
                snapshot.tick.0,
                component.to_string(),
            ),
            Entry::Snapshot(snapshot.clone()),
            size,
        );
    }

    fn keep(&self, key: Key, entry: Entry, size: usize) {
        // What an entry costs besides its value: the key twice (the map's
        // and the eviction queue's copy, with the component name's heap
        // bytes), the map and queue slots, and the shared allocation.
        let size = size + 2 * (size_of::<Key>() + key.3.len()) + size_of::<(Entry, usize)>() + 48;
        // One as large as the whole cache is kept (a large world's ingest
        // record, which every later read replays, is worth more than all
        // the small ones it evicts).
        if size > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.contains_key(&key) {
            return;
        }
        while inner.bytes + size > self.capacity {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, n)) = inner.entries.remove(&old) {
                inner.bytes -= n;
            }
        }
        inner.bytes += size;
        inner.order.push_back(key.clone());
        inner.entries.insert(key, (entry, size));
    }

    /// Bytes kept now.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
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
            )],
        }
    }

    #[test]
    fn keeps_what_fits_and_drops_the_oldest_first() {
        let cache = SpanCache::new(3_000);
        let w = WorldId(1);
        cache.keep_record(w, "Run", &record(1, 1_000));
        cache.keep_record(w, "Run", &record(2, 1_000));
        assert_eq!(cache.record(w, Tick(1), "Run"), Some(record(1, 1_000)));
        assert_eq!(cache.record(w, Tick(1), "Other"), None);
        assert_eq!(cache.record(WorldId(2), Tick(1), "Run"), None);
        assert_eq!(cache.snapshot(w, Tick(1), "Run"), None);
        // A third does not fit beside both: the oldest goes.
        cache.keep_record(w, "Run", &record(3, 1_000));
        assert_eq!(cache.record(w, Tick(1), "Run"), None);
        assert!(cache.record(w, Tick(2), "Run").is_some());
        assert!(cache.record(w, Tick(3), "Run").is_some());
        assert!(cache.bytes() <= 3_000);
        // One larger than the cache is not kept at all, and evicts nothing.
        cache.keep_record(w, "Run", &record(4, 3_000));
        assert_eq!(cache.record(w, Tick(4), "Run"), None);
        assert!(cache.record(w, Tick(3), "Run").is_some());
        // One that fits alone evicts everything else.
        cache.keep_record(w, "Run", &record(5, 2_000));
        assert!(cache.record(w, Tick(5), "Run").is_some());
        assert_eq!(cache.record(w, Tick(2), "Run"), None);
        assert_eq!(cache.record(w, Tick(3), "Run"), None);
        // A zero capacity keeps nothing.
        let off = SpanCache::new(0);
        off.keep_record(w, "Run", &record(1, 10));
        assert_eq!(off.record(w, Tick(1), "Run"), None);
        assert_eq!(off.bytes(), 0);
    }
}
