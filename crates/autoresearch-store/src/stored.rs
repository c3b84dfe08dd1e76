//! Records and snapshots as stored: each value in its table (`records`,
//! `snapshots`), or, when long, a stub there and its bytes in the parts
//! table beside it (`encoding::parts`). Every read and write of a record
//! or snapshot goes through [`StoredValues`], which joins (and checks) the
//! parts, so that no reader sees a stub.

use crate::Failure;
use crate::encoding::{self, DecodeError};
use autoresearch_core::{Tick, WorldId};
use redb::{
    AccessGuard, ReadOnlyTable, ReadTransaction, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};

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
}

/// Keys of a world's values.
type ValueKey = (u64, u64);
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
    /// The records of a read transaction.
    pub(crate) fn records(txn: &ReadTransaction) -> Result<ReadValues, Failure> {
        Self::open(txn, encoding::RECORDS, encoding::RECORD_PARTS, RECORD)
    }

    /// The snapshots of a read transaction.
    pub(crate) fn snapshots(txn: &ReadTransaction) -> Result<ReadValues, Failure> {
        Self::open(txn, encoding::SNAPSHOTS, encoding::SNAPSHOT_PARTS, SNAPSHOT)
    }

    fn open(
        txn: &ReadTransaction,
        values: TableDefinition<'static, ValueKey, &'static [u8]>,
        parts: TableDefinition<'static, PartKey, &'static [u8]>,
        what: &'static str,
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
        })
    }
}

impl<'t> WriteValues<'t> {
    /// The records of a write transaction.
    pub(crate) fn records(txn: &'t WriteTransaction) -> Result<WriteValues<'t>, Failure> {
        Ok(StoredValues {
            values: txn.open_table(encoding::RECORDS)?,
            parts: Some(txn.open_table(encoding::RECORD_PARTS)?),
            what: RECORD,
        })
    }

    /// The snapshots of a write transaction.
    pub(crate) fn snapshots(txn: &'t WriteTransaction) -> Result<WriteValues<'t>, Failure> {
        Ok(StoredValues {
            values: txn.open_table(encoding::SNAPSHOTS)?,
            parts: Some(txn.open_table(encoding::SNAPSHOT_PARTS)?),
            what: SNAPSHOT,
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

    /// `guard` itself, or the value its stub stands for.
    fn whole<'a>(
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
