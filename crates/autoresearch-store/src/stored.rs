//! Records and snapshots as stored: each value in its table (`records`,
//! `snapshots`), or, when long, a stub there and its bytes in the parts
//! table beside it (`encoding::parts`). Every read and write of a record
//! or snapshot goes through [`StoredValues`], which joins (and checks) the
//! parts, so that no reader sees a stub.

use crate::Failure;
use crate::encoding::{self, DecodeError, SetEntry, delta};
use autoresearch_core::{Tick, WorldId};
use redb::{
    AccessGuard, ReadOnlyTable, ReadTransaction, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod last_sets;
pub(crate) use last_sets::LastSets;
use last_sets::SetRef;
use last_sets::{LastInner, last_value};

/// The `Set`s of one stored record, by `(entity, component)`.
type Sets = HashMap<(u64, String), SetEntry>;

/// The most bytes of values a [`BaseMemo`] keeps; past it, it starts over.
const BASE_MEMO_BYTES: usize = 64 << 20;

/// Records decoded as delta bases, by `(world, tick)`: a base read by many
/// deltas (an ingest's record, whose runs later ticks change) is read and
/// decoded once. A stored record never changes and a world id is never
/// reused, so an entry never goes stale; the writer's memo, which may hold
/// records of a transaction that then fails, is cleared with it.
#[derive(Default)]
pub(crate) struct BaseMemo {
    inner: Mutex<MemoInner>,
}

/// The records kept by `(world, tick)`, and the bytes of their values.
type MemoInner = (
    HashMap<(u64, u64), Arc<Sets>, foldhash::fast::FixedState>,
    usize,
);

impl BaseMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoInner> {
        // A panic while holding the lock leaves whole entries: usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, world: u64, tick: u64) -> Option<Arc<Sets>> {
        self.lock().0.get(&(world, tick)).cloned()
    }

    fn keep(&self, world: u64, tick: u64, sets: Arc<Sets>) {
        let size: usize = sets.iter().map(|((_, c), v)| c.len() + v.len() + 48).sum();
        let mut inner = self.lock();
        if inner.1 + size > BASE_MEMO_BYTES {
            inner.0.clear();
            inner.1 = 0;
        }
        inner.1 += size;
        inner.0.insert((world, tick), sets);
    }

    /// Forgets every record.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.0.clear();
        inner.1 = 0;
    }
}

/// A value the writer read ([`StoredValues::value_shared`]): shared with
/// the changes of the tick that set it when its [`LastSets`] hold them,
/// else resolved from the records.
#[derive(Clone)]
pub(crate) enum ReadValue {
    Shared(SetRef),
    Owned(Vec<u8>),
}

impl std::ops::Deref for ReadValue {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadValue::Shared(set) => set.value(),
            ReadValue::Owned(v) => v,
        }
    }
}

impl ReadValue {
    /// The bytes in a vector of their own (copied only when shared).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            ReadValue::Shared(set) => set.value().to_vec(),
            ReadValue::Owned(v) => v,
        }
    }
}

/// A stored record or snapshot: borrowed from its page, or joined from
/// its parts.
pub(crate) enum StoredValue<'a> {
    Inline(AccessGuard<'a, &'static [u8]>),
    Joined(Vec<u8>),
}

impl std::ops::Deref for StoredValue<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            StoredValue::Inline(g) => g.value(),
            StoredValue::Joined(v) => v,
        }
    }
}

/// A table of records or snapshots and its parts table. `parts` is `None`
/// for a file opened read-only that predates them (format 4 or older),
/// which has no value in parts.
pub(crate) struct StoredValues<V, P> {
    pub(crate) values: V,
    pub(crate) parts: Option<P>,
    /// What the values are, for errors (`"tick record"`, `"snapshot"`).
    what: &'static str,
    /// Records decoded as delta bases.
    bases: Arc<BaseMemo>,
    /// The bases this read (or write transaction) has decoded, held for
    /// its whole length: a shared memo that starts over in the middle of
    /// a read does not make it decode a base once per delta.
    pinned: Mutex<HashMap<(u64, u64), Arc<Sets>>>,
    /// The writer's [`LastSets`] (its transaction's records only).
    last: Option<Arc<Mutex<LastInner>>>,
}

/// The base record a reader of spans read last: its `(world, tick)` and
/// its `Set`s ([`StoredValues::span_record`]).
#[derive(Default)]
pub(crate) struct BaseHint(Option<((u64, u64), Arc<Sets>)>);

/// Keys of a world's values.
type ValueKey = (u64, u64);
/// A value's tick and its bytes as stored ([`StoredValues::raw_range`]).
pub(crate) type RawValue<'a> = (Tick, AccessGuard<'a, &'static [u8]>);
/// Keys of a value's parts.
type PartKey = (u64, u64, u64);

/// The records or snapshots of a write transaction.
pub(crate) type WriteValues<'t> =
    StoredValues<Table<'t, ValueKey, &'static [u8]>, Table<'t, PartKey, &'static [u8]>>;

/// The records or snapshots of a read transaction.
pub(crate) type ReadValues =
    StoredValues<ReadOnlyTable<ValueKey, &'static [u8]>, ReadOnlyTable<PartKey, &'static [u8]>>;

const RECORD: &str = "tick record";
const SNAPSHOT: &str = "snapshot";

impl ReadValues {
    /// The records of a read transaction (delta bases decoded for this
    /// read alone).
    pub(crate) fn records(txn: &ReadTransaction) -> Result<ReadValues, Failure> {
        Self::records_with(txn, &Arc::default())
    }

    /// The records of a read transaction, delta bases decoded through
    /// `bases` (shared between reads).
    pub(crate) fn records_with(
        txn: &ReadTransaction,
        bases: &Arc<BaseMemo>,
    ) -> Result<ReadValues, Failure> {
        Self::open(
            txn,
            encoding::RECORDS,
            encoding::RECORD_PARTS,
            RECORD,
            bases,
        )
    }

    /// The snapshots of a read transaction.
    pub(crate) fn snapshots(txn: &ReadTransaction) -> Result<ReadValues, Failure> {
        Self::open(
            txn,
            encoding::SNAPSHOTS,
            encoding::SNAPSHOT_PARTS,
            SNAPSHOT,
            &Arc::default(),
        )
    }

    fn open(
        txn: &ReadTransaction,
        values: TableDefinition<'static, ValueKey, &'static [u8]>,
        parts: TableDefinition<'static, PartKey, &'static [u8]>,
        what: &'static str,
        bases: &Arc<BaseMemo>,
    ) -> Result<ReadValues, Failure> {
        let parts = match txn.open_table(parts) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(StoredValues {
            values: txn.open_table(values)?,
            parts,
            what,
            bases: bases.clone(),
            pinned: Mutex::default(),
            last: None,
        })
    }
}

impl<'t> WriteValues<'t> {
    /// The records of a write transaction, delta bases decoded through
    /// `last`'s memo, and the values `last` holds read from it.
    pub(crate) fn records(
        txn: &'t WriteTransaction,
        last: &LastSets,
    ) -> Result<WriteValues<'t>, Failure> {
        Ok(StoredValues {
            values: txn.open_table(encoding::RECORDS)?,
            parts: Some(txn.open_table(encoding::RECORD_PARTS)?),
            what: RECORD,
            bases: last.bases.clone(),
            pinned: Mutex::default(),
            last: Some(last.inner.clone()),
        })
    }

    /// The snapshots of a write transaction.
    pub(crate) fn snapshots(txn: &'t WriteTransaction) -> Result<WriteValues<'t>, Failure> {
        Ok(StoredValues {
            values: txn.open_table(encoding::SNAPSHOTS)?,
            parts: Some(txn.open_table(encoding::SNAPSHOT_PARTS)?),
            what: SNAPSHOT,
            bases: Arc::default(),
            pinned: Mutex::default(),
            last: None,
        })
    }

    /// Stores `bytes` as the value of `world`'s tick `tick`: whole, or a
    /// stub and its parts when long.
    pub(crate) fn insert(&mut self, world: u64, tick: u64, bytes: &[u8]) -> Result<(), Failure> {
        let Some((stub, parts)) = encoding::split(bytes) else {
            self.values.insert((world, tick), bytes)?;
            return Ok(());
        };
        let Some(table) = self.parts.as_mut() else {
            return Err(Failure::Storage(autoresearch_core::StorageError::Backend {
                context: format!("storing the {} of world#{world} tick {tick}", self.what),
                source: "the parts table is not open".into(),
            }));
        };
        // A value stored again (never by this crate's writer) leaves no
        // parts of the old one behind.
        table.retain_in((world, tick, 0)..=(world, tick, u64::MAX), |_, _| false)?;
        for (i, part) in parts.into_iter().enumerate() {
            table.insert((world, tick, i as u64), part)?;
        }
        self.values.insert((world, tick), stub.as_slice())?;
        Ok(())
    }

    /// Removes every value of `world` and their parts.
    pub(crate) fn delete_world(&mut self, world: u64) -> Result<(), Failure> {
        self.values
            .retain_in((world, 0)..=(world, u64::MAX), |_, _| false)?;
        if let Some(parts) = self.parts.as_mut() {
            parts.retain_in((world, 0, 0)..=(world, u64::MAX, u64::MAX), |_, _| false)?;
        }
        Ok(())
    }
}

impl<V, P> StoredValues<V, P>
where
    V: ReadableTable<ValueKey, &'static [u8]>,
    P: ReadableTable<PartKey, &'static [u8]>,
{
    /// The value of `world`'s tick `tick`, joined from its parts if it has
    /// them. Errors (`Corrupt`, naming the value) on damaged parts.
    pub(crate) fn get(&self, world: u64, tick: u64) -> Result<Option<StoredValue<'_>>, Failure> {
        match self.values.get((world, tick))? {
            Some(guard) => Ok(Some(self.whole(world, tick, guard)?)),
            None => Ok(None),
        }
    }

    /// As [`StoredValues::get`], but `None` also when the value's parts do
    /// not join (damaged): for readers that fall back on any damage.
    pub(crate) fn get_or_none(
        &self,
        world: u64,
        tick: u64,
    ) -> Result<Option<StoredValue<'_>>, Failure> {
        match self.get(world, tick) {
            Err(Failure::Storage(_)) => Ok(None),
            other => other,
        }
    }

    /// Whether `world` has a value at `tick` (its parts not read).
    pub(crate) fn contains(&self, world: u64, tick: u64) -> Result<bool, Failure> {
        Ok(self.values.get((world, tick))?.is_some())
    }

    /// `world`'s values of ticks `from..=to`, in tick order, each joined.
    pub(crate) fn range(
        &self,
        world: u64,
        from: u64,
        to: u64,
    ) -> Result<impl Iterator<Item = Result<(Tick, StoredValue<'_>), Failure>> + '_, Failure> {
        let range = if from <= to {
            Some(self.values.range((world, from)..=(world, to))?)
        } else {
            None
        };
        Ok(range.into_iter().flatten().map(move |entry| {
            let (k, v) = entry?;
            let tick = k.value().1;
            Ok((Tick(tick), self.whole(world, tick, v)?))
        }))
    }

    /// `world`'s values of ticks `from..=to`, in tick order, as stored:
    /// not joined, their deltas not resolved. For readers that keep
    /// decoded values and look there first; [`StoredValues::resolve`]
    /// makes one whole.
    pub(crate) fn raw_range(
        &self,
        world: u64,
        from: u64,
        to: u64,
    ) -> Result<impl Iterator<Item = Result<RawValue<'_>, Failure>> + '_, Failure> {
        let range = if from <= to {
            Some(self.values.range((world, from)..=(world, to))?)
        } else {
            None
        };
        Ok(range.into_iter().flatten().map(|entry| {
            let (k, v) = entry?;
            Ok((Tick(k.value().1), v))
        }))
    }

    /// A value from [`StoredValues::raw_range`] as readers see it: joined
    /// from its parts, its deltas resolved.
    pub(crate) fn resolve<'a>(
        &'a self,
        world: u64,
        tick: Tick,
        raw: AccessGuard<'a, &'static [u8]>,
    ) -> Result<StoredValue<'a>, Failure> {
        self.whole(world, tick.0, raw)
    }

    /// A record from [`StoredValues::raw_range`] projected on
    /// `component`, its values spans of one body
    /// ([`crate::spans::decode_span_record`]). A record that holds deltas
    /// is not rewritten whole first: only `component`'s deltas are
    /// resolved, each written straight into the body from its base value
    /// as the base record holds it (decoded once, [`BaseMemo`]), not
    /// copied out first ([`StoredValues::value_at`] only for a base that is
    /// itself a delta). Errors (`Corrupt`, at `tick`) as a whole read does.
    ///
    /// `hint` holds the base record this reader used last (consecutive
    /// deltas often share one, such as an ingest's record), found again
    /// without a look-up; pass the same one to every call of a read.
    pub(crate) fn span_record(
        &self,
        world: u64,
        tick: Tick,
        raw: AccessGuard<'_, &'static [u8]>,
        component: &str,
        hint: &mut BaseHint,
    ) -> Result<autoresearch_core::SpanRecord, Failure> {
        let joined = self.joined(world, tick.0, raw)?;
        let at = |e: DecodeError| Failure::from(e.at(WorldId(world), tick, self.what));
        if self.what != RECORD || !encoding::has_deltas(&joined) {
            return crate::spans::decode_span_record(tick, &joined, component).map_err(at);
        }
        let mut key = (0, component.to_string());
        crate::spans::decode_span_delta_record(
            tick,
            &joined,
            component,
            |entity, d, body| {
                key.0 = entity;
                self.resolve_into(world, tick.0, &key, d, body, hint)
            },
            at,
        )
    }

    /// Appends to `out` the value of `key` (entity, component) that delta
    /// `d` of `world`'s record of `tick` stands for.
    fn resolve_into(
        &self,
        world: u64,
        tick: u64,
        key: &(u64, String),
        d: &crate::spans::DeltaRef<'_>,
        out: &mut Vec<u8>,
        hint: &mut BaseHint,
    ) -> Result<(), Failure> {
        let (entity, component) = (key.0, key.1.as_str());
        // The base record's sets (a base not older than the delta is
        // refused by `value_at`, with its reason).
        if d.base < tick && hint.0.as_ref().is_none_or(|(at, _)| *at != (world, d.base)) {
            // Decoded before (most are): taken from the memo as it is, not
            // pinned for this read (the hint holds it while it is used).
            let sets = match self.bases.get(world, d.base) {
                Some(s) => Some(s),
                None => self.sets(world, d.base)?,
            };
            hint.0 = sets.map(|s| ((world, d.base), s));
        }
        let sets = hint
            .0
            .as_ref()
            .filter(|(at, _)| d.base < tick && *at == (world, d.base));
        let owned;
        let base: &[u8] = match sets.and_then(|(_, s)| s.get(key)) {
            Some(SetEntry::Whole(v)) => v,
            _ => {
                owned = self.value_at(world, tick, entity, component, d.base)?;
                &owned
            }
        };
        let (prefix, suffix) = (d.prefix as usize, d.suffix as usize);
        if prefix.saturating_add(suffix) > base.len() {
            return Err(Failure::from(
                DecodeError::Corrupt(format!(
                    "a delta keeps {prefix} + {suffix} bytes of a base value of {}",
                    base.len()
                ))
                .at(WorldId(world), Tick(tick), self.what),
            ));
        }
        out.reserve(prefix + d.middle.len() + suffix);
        out.extend_from_slice(&base[..prefix]);
        out.extend_from_slice(d.middle);
        out.extend_from_slice(&base[base.len() - suffix..]);
        Ok(())
    }

    /// The greatest tick `<= at` of `world` that holds a value, without
    /// reading the value.
    pub(crate) fn last_tick_at_or_before(
        &self,
        world: u64,
        at: u64,
    ) -> Result<Option<Tick>, Failure> {
        let Some(entry) = self.values.range((world, 0)..=(world, at))?.next_back() else {
            return Ok(None);
        };
        Ok(Some(Tick(entry?.0.value().1)))
    }

    /// `world`'s newest value at or before `at`, joined.
    pub(crate) fn last_at_or_before(
        &self,
        world: u64,
        at: u64,
    ) -> Result<Option<(Tick, StoredValue<'_>)>, Failure> {
        let Some(entry) = self.values.range((world, 0)..=(world, at))?.next_back() else {
            return Ok(None);
        };
        let (k, v) = entry?;
        let tick = k.value().1;
        Ok(Some((Tick(tick), self.whole(world, tick, v)?)))
    }

    /// The value of `guard` as readers see it: joined from its parts, its
    /// deltas (a record's) resolved.
    fn whole<'a>(
        &'a self,
        world: u64,
        tick: u64,
        guard: AccessGuard<'a, &'static [u8]>,
    ) -> Result<StoredValue<'a>, Failure> {
        let joined = self.joined(world, tick, guard)?;
        if self.what != RECORD || !encoding::has_deltas(&joined) {
            return Ok(joined);
        }
        let at = |e: DecodeError| Failure::from(e.at(WorldId(world), Tick(tick), self.what));
        let whole = encoding::resolve_record(
            &joined,
            |e, c, base| self.value_at(world, tick, e, c, base),
            at,
        )?;
        Ok(StoredValue::Joined(whole))
    }

    /// The value `entity`'s `component` had as set by `world`'s tick
    /// `base`, the base of a delta in the record of tick `tick`: through
    /// the chain of deltas to a whole value, each base record decoded once
    /// ([`BaseMemo`]); in the writer's transaction, from its [`LastSets`]
    /// when they hold the value `base` set. Errors (`Corrupt`, at `tick`)
    /// on a base that does not set it, is not older, or a chain past
    /// `delta::READ_CHAIN`.
    pub(crate) fn value_at(
        &self,
        world: u64,
        tick: u64,
        entity: u64,
        component: &str,
        base: u64,
    ) -> Result<Vec<u8>, Failure> {
        self.value_shared(world, tick, entity, component, base)
            .map(ReadValue::into_vec)
    }

    /// [`StoredValues::value_at`], sharing the value with the writer's
    /// [`LastSets`] when they hold it (no copy).
    pub(crate) fn value_shared(
        &self,
        world: u64,
        tick: u64,
        entity: u64,
        component: &str,
        base: u64,
    ) -> Result<ReadValue, Failure> {
        if let Some(last) = self.last.as_deref().filter(|_| base < tick)
            && let Some(set) = last_value(last, world, entity, component, base)
        {
            return Ok(ReadValue::Shared(set));
        }
        self.value_resolved(world, tick, entity, component, base)
            .map(ReadValue::Owned)
    }

    /// [`StoredValues::value_at`] from the records alone.
    fn value_resolved(
        &self,
        world: u64,
        tick: u64,
        entity: u64,
        component: &str,
        base: u64,
    ) -> Result<Vec<u8>, Failure> {
        let corrupt = |reason: String| {
            Failure::from(DecodeError::Corrupt(reason).at(WorldId(world), Tick(tick), self.what))
        };
        let key = (entity, component.to_string());
        let (mut at, mut newer) = (base, tick);
        let mut chain: Vec<(u32, u32, Vec<u8>)> = Vec::new();
        loop {
            if at >= newer || chain.len() >= delta::READ_CHAIN {
                return Err(corrupt(format!(
                    "a delta of entity#{entity}'s {component} at tick {newer} names base tick {at} (chain of {})",
                    chain.len() + 1
                )));
            }
            let Some(sets) = self.sets(world, at)? else {
                return Err(corrupt(format!(
                    "tick {at}, the base of a delta of entity#{entity}'s {component}, has no record"
                )));
            };
            match sets.get(&key) {
                None => {
                    return Err(corrupt(format!(
                        "tick {at}, the base of a delta, sets no {component} of entity#{entity}"
                    )));
                }
                Some(SetEntry::Whole(v)) => {
                    let mut value = v.clone();
                    for (prefix, suffix, middle) in chain.iter().rev() {
                        value = delta::apply(&value, *prefix, *suffix, middle).map_err(|e| {
                            Failure::from(e.at(WorldId(world), Tick(tick), self.what))
                        })?;
                    }
                    return Ok(value);
                }
                Some(SetEntry::Delta {
                    base,
                    prefix,
                    suffix,
                    middle,
                }) => {
                    chain.push((*prefix, *suffix, middle.clone()));
                    newer = at;
                    at = *base;
                }
            }
        }
    }

    /// The `Set`s of `world`'s record of `tick` as stored (deltas not
    /// resolved), decoded once through the memo; `None` without a record.
    fn sets(&self, world: u64, tick: u64) -> Result<Option<Arc<Sets>>, Failure> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sets) = pinned.get(&(world, tick)) {
            return Ok(Some(sets.clone()));
        }
        if let Some(sets) = self.bases.get(world, tick) {
            pinned.insert((world, tick), sets.clone());
            return Ok(Some(sets));
        }
        let Some(guard) = self.values.get((world, tick))? else {
            return Ok(None);
        };
        let joined = self.joined(world, tick, guard)?;
        let sets = Arc::new(
            encoding::record_set_entries(&joined)
                .map_err(|e| Failure::from(e.at(WorldId(world), Tick(tick), self.what)))?,
        );
        self.bases.keep(world, tick, sets.clone());
        pinned.insert((world, tick), sets.clone());
        Ok(Some(sets))
    }

    /// `guard` itself, or the value its stub stands for.
    fn joined<'a>(
        &'a self,
        world: u64,
        tick: u64,
        guard: AccessGuard<'a, &'static [u8]>,
    ) -> Result<StoredValue<'a>, Failure> {
        let at = |e: DecodeError| Failure::from(e.at(WorldId(world), Tick(tick), self.what));
        let Some(stub) = encoding::stub(guard.value()).map_err(at)? else {
            return Ok(StoredValue::Inline(guard));
        };
        let Some(parts) = self.parts.as_ref() else {
            return Err(at(DecodeError::Corrupt(
                "a value in parts, in a file without a parts table".into(),
            )));
        };
        let mut read = Vec::new();
        for entry in parts.range((world, tick, 0)..=(world, tick, u64::MAX))? {
            let (k, v) = entry?;
            read.push((k.value().2, v));
        }
        let joined = encoding::join(stub, read.iter().map(|(i, v)| (*i, v.value()))).map_err(at)?;
        Ok(StoredValue::Joined(joined))
    }
}
