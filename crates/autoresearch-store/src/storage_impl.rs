//! `impl Storage for RedbStorage`: the trait's reads (each in one redb
//! read transaction) and writes (queued to the group-commit writer).

use crate::encoding::{self, ENTITY_TICKS, WORLD_NAMES, WORLDS};
use crate::stored::{BaseHint, BaseMemo, ReadValues};
use crate::writer::Op;
use crate::{EncodedAppend, Failure, RedbStorage, find_name, load_world};
use async_trait::async_trait;
use autoresearch_core::{
    ComponentRecord, ComponentSnapshot, EntityId, Snapshot, SpanRecord, SpanSnapshot, Storage,
    StorageError, Tick, TickRecord, WorldId, WorldInfo,
};
use redb::{ReadTransaction, ReadableTable, TableDefinition};
use std::sync::Arc;

pub(crate) fn encode_failed(
    world: WorldId,
    tick: Tick,
    what: &str,
    reason: String,
) -> StorageError {
    StorageError::Backend {
        context: format!("encoding the {what} of {world} tick {tick}"),
        source: reason.into(),
    }
}

/// Opens a table in a read transaction; keeps the type noise in one place.
fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<'static, K, V>,
) -> Result<redb::ReadOnlyTable<K, V>, Failure> {
    Ok(txn.open_table(def)?)
}

/// `world`'s own tick records in `from..=to`, oldest first, each decoded by
/// `decode` (a whole record, or one component's part of it).
fn own_records<T>(
    txn: &ReadTransaction,
    bases: &Arc<BaseMemo>,
    world: WorldId,
    from: Tick,
    to: Tick,
    decode: impl Fn(Tick, &[u8]) -> Result<T, encoding::DecodeError>,
) -> Result<Vec<T>, Failure> {
    load_world(&table(txn, WORLDS)?, world)?;
    let mut out = Vec::new();
    let records = ReadValues::records_with(txn, bases)?;
    for entry in records.raw_range(world.0, from.0, to.0)? {
        let (tick, raw) = entry?;
        let v = records.resolve(world.0, tick, raw)?;
        out.push(decode(tick, &v).map_err(|e| e.at(world, tick, "tick record"))?);
    }
    Ok(out)
}

/// `world`'s own newest snapshot at or before `at`, decoded by `decode`;
/// `None` when it has none.
fn own_snapshot<T>(
    txn: &ReadTransaction,
    world: WorldId,
    at: Tick,
    decode: impl Fn(Tick, &[u8]) -> Result<T, encoding::DecodeError>,
) -> Result<Option<T>, Failure> {
    load_world(&table(txn, WORLDS)?, world)?;
    let snapshots = ReadValues::snapshots(txn)?;
    let Some((tick, v)) = snapshots.last_at_or_before(world.0, at.0)? else {
        return Ok(None);
    };
    Ok(Some(
        decode(tick, &v).map_err(|e| e.at(world, tick, "snapshot"))?,
    ))
}

#[async_trait]
impl Storage for RedbStorage {
    async fn create_world(&self, name: &str) -> Result<WorldInfo, StorageError> {
        let owned = name.to_string();
        self.write(
            || format!("creating world {name:?}"),
            |reply| Op::Create { name: owned, reply },
        )
        .await
    }

    async fn fork_world(
        &self,
        parent: WorldId,
        at: Tick,
        name: &str,
    ) -> Result<WorldInfo, StorageError> {
        let name = name.to_string();
        self.write(
            || format!("forking {parent} at tick {at}"),
            |reply| Op::Fork {
                parent,
                at,
                name,
                reply,
            },
        )
        .await
    }

    /// The fork and its ticks go to the writer as one operation: checked
    /// together inside one write transaction, stored together (one durable
    /// commit), or not at all.
    async fn fork_and_append(
        &self,
        parent: WorldId,
        at: Tick,
        name: &str,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<WorldInfo, StorageError> {
        let owned = name.to_string();
        let appends = records
            .into_iter()
            .map(|(record, snapshot)| EncodedAppend::new(parent, record, snapshot))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(
            || format!("forking {parent} at tick {at} into {name:?} with its first tick"),
            |reply| Op::ForkAppend {
                parent,
                at,
                name: owned,
                appends,
                reply,
            },
        )
        .await
    }

    /// One write transaction: the world and its ticks are stored
    /// together, or nothing is.
    async fn create_and_append(
        &self,
        name: &str,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<WorldInfo, StorageError> {
        let owned = name.to_string();
        // (The world's id is not known yet; encoding errors name id 0.)
        let appends = records
            .into_iter()
            .map(|(record, snapshot)| EncodedAppend::new(WorldId(0), record, snapshot))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(
            || format!("creating world {name:?} with its first tick"),
            |reply| Op::CreateAppend {
                name: owned,
                appends,
                reply,
            },
        )
        .await
    }

    async fn world(&self, id: WorldId) -> Result<WorldInfo, StorageError> {
        self.read(
            || format!("reading the catalogue entry of {id}"),
            move |txn| load_world(&table(txn, WORLDS)?, id),
        )
        .await
    }

    async fn find_world(&self, name: &str) -> Result<Option<WorldInfo>, StorageError> {
        let owned = name.to_string();
        self.read(
            || format!("looking up world {name:?}"),
            move |txn| find_name(&table(txn, WORLDS)?, &table(txn, WORLD_NAMES)?, &owned),
        )
        .await
    }

    async fn list_worlds(&self) -> Result<Vec<WorldInfo>, StorageError> {
        self.read(
            || "listing worlds".to_string(),
            |txn| {
                let worlds = table(txn, WORLDS)?;
                let names = table(txn, WORLD_NAMES)?;
                let mut out = Vec::new();
                for entry in worlds.iter()? {
                    let (k, v) = entry?;
                    let id = WorldId(k.value());
                    let info = encoding::decode_world(id, v.value())
                        .map_err(|e| e.at(id, Tick::ZERO, "catalogue entry"))?;
                    // Each listed world must be found again by its name (a
                    // damaged B-tree can list keys a look-up cannot reach).
                    match find_name(&worlds, &names, &info.name)? {
                        Some(found) if found.id == id => out.push(info),
                        _ => {
                            return Err(StorageError::Corrupt {
                                world: id,
                                tick: Tick::ZERO,
                                reason: format!(
                                    "world catalogue: {:?} is listed but a look-up does not find it",
                                    info.name
                                ),
                            }
                            .into());
                        }
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    async fn append(
        &self,
        world: WorldId,
        record: TickRecord,
        snapshot: Option<Snapshot>,
    ) -> Result<(), StorageError> {
        self.append_all(world, vec![(record, snapshot)]).await
    }

    /// The records go to the writer as one operation: checked together
    /// inside the write transaction and stored together, or not at all.
    async fn append_all(
        &self,
        world: WorldId,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let first = records[0].0.tick;
        // Everything is encoded before anything is queued.
        let appends = records
            .into_iter()
            .map(|(record, snapshot)| EncodedAppend::new(world, record, snapshot))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(
            || format!("appending tick {first} of {world}"),
            |reply| Op::Append {
                world,
                appends,
                reply,
            },
        )
        .await
    }

    fn location(&self) -> String {
        format!("ledger {}", self.sink.path.display())
    }

    async fn read_own_records(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
    ) -> Result<Vec<TickRecord>, StorageError> {
        let bases = self.bases.clone();
        self.read(
            || format!("reading ticks {from}..={to} of {world}"),
            move |txn| own_records(txn, &bases, world, from, to, encoding::decode_record),
        )
        .await
    }

    /// Decodes each record in place (borrowing its text and values) and
    /// copies out only `component`'s values.
    async fn read_own_component_records(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
        component: &str,
    ) -> Result<Vec<ComponentRecord>, StorageError> {
        let bases = self.bases.clone();
        let component = component.to_string();
        self.read(
            || format!("reading ticks {from}..={to} of {world}"),
            move |txn| {
                own_records(txn, &bases, world, from, to, |tick, bytes| {
                    encoding::decode_component_record(tick, bytes, &component)
                })
            },
        )
        .await
    }

    /// Decodes the snapshot in place and copies out only `component`'s
    /// values.
    async fn own_component_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
        component: &str,
    ) -> Result<Option<ComponentSnapshot>, StorageError> {
        let component = component.to_string();
        self.read(
            || format!("reading the snapshot at or before tick {at} of {world}"),
            move |txn| {
                own_snapshot(txn, world, at, |tick, bytes| {
                    encoding::decode_component_snapshot(tick, bytes, &component)
                })
            },
        )
        .await
    }

    /// Decodes each record once (decompressed, or copied out of its page)
    /// and leaves `component`'s values in it; a record without any keeps
    /// no body; of a record that holds deltas, only `component`'s are
    /// resolved. Decoded records are kept for later reads
    /// ([`RedbConfig::decoded_cache_bytes`](crate::RedbConfig)), each from
    /// its second decode on (`span_cache`): a range whose records are all
    /// kept reads only the world's catalogue entry.
    async fn read_own_component_spans(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
        component: &str,
    ) -> Result<Vec<SpanRecord>, StorageError> {
        let bases = self.bases.clone();
        let component = component.to_string();
        let cache = self.spans.clone();
        self.read(
            || format!("reading ticks {from}..={to} of {world}"),
            move |txn| {
                let head = load_world(&table(txn, WORLDS)?, world)?.head;
                let to = to.min(head);
                let mut out = Vec::new();
                if from > to {
                    return Ok(out);
                }
                // The records of the range that are kept, in tick order
                // (one look-up for the range): those from `from` on, one
                // tick after another, need no read; when all are, none is.
                let mut kept = cache
                    .records_in(world, from, to, &component)
                    .into_iter()
                    .peekable();
                let mut next = from;
                while let Some(r) = kept.next_if(|r| r.tick == next) {
                    out.push(r);
                    next = next.next();
                }
                if next > to {
                    return Ok(out);
                }
                // Each of the others kept or, failing that, read, decoded
                // and offered to the cache (all in one go).
                let mut fresh = Vec::new();
                let mut hint = BaseHint::default();
                let records = ReadValues::records_with(txn, &bases)?;
                for entry in records.raw_range(world.0, next.0, to.0)? {
                    let (tick, raw) = entry?;
                    while kept.next_if(|r| r.tick < tick).is_some() {}
                    if let Some(r) = kept.next_if(|r| r.tick == tick) {
                        out.push(r);
                        continue;
                    }
                    fresh.push(out.len());
                    out.push(records.span_record(world.0, tick, raw, &component, &mut hint)?);
                }
                cache.offer_records(world, &component, fresh.iter().map(|&i| &out[i]));
                Ok(out)
            },
        )
        .await
    }

    /// Decodes the snapshot once and leaves `component`'s values in it;
    /// kept decoded for later reads, as records are.
    async fn own_component_span_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
        component: &str,
    ) -> Result<Option<SpanSnapshot>, StorageError> {
        let component = component.to_string();
        let cache = self.spans.clone();
        self.read(
            || format!("reading the snapshot at or before tick {at} of {world}"),
            move |txn| {
                // A state a read gathered stands for a stored snapshot at
                // its tick: it is used unless a stored one is newer.
                if let Some(g) = cache.gathered_at_or_before(world, at, &component) {
                    load_world(&table(txn, WORLDS)?, world)?;
                    let stored =
                        ReadValues::snapshots(txn)?.last_tick_at_or_before(world.0, at.0)?;
                    if stored.is_none_or(|t| t <= g.tick) {
                        return Ok(Some(g));
                    }
                }
                own_snapshot(txn, world, at, |tick, bytes| {
                    if let Some(s) = cache.snapshot(world, tick, &component) {
                        return Ok(s);
                    }
                    let s = crate::spans::decode_span_snapshot(tick, bytes, &component)?;
                    cache.offer_snapshot(world, &component, &s);
                    Ok(s)
                })
            },
        )
        .await
    }

    /// Kept in the decoded-span cache (see its module): offered states of
    /// at least 16 replayed records that fit in it, kept on the second
    /// offer of one.
    fn offer_component_span_snapshot(
        &self,
        world: WorldId,
        component: &str,
        tick: Tick,
        replayed: usize,
        bytes: usize,
        gather: &mut dyn FnMut() -> Option<SpanSnapshot>,
    ) -> Option<SpanSnapshot> {
        self.spans
            .offer_gathered(world, component, tick, replayed, bytes, gather)
    }

    async fn own_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
    ) -> Result<Option<Snapshot>, StorageError> {
        self.read(
            || format!("reading the snapshot at or before tick {at} of {world}"),
            move |txn| own_snapshot(txn, world, at, encoding::decode_snapshot),
        )
        .await
    }

    async fn put_snapshot(&self, world: WorldId, snapshot: Snapshot) -> Result<(), StorageError> {
        let tick = snapshot.tick;
        let snapshot = encoding::encode_snapshot(snapshot)
            .map_err(|r| encode_failed(world, tick, "snapshot", r))?;
        self.write(
            || format!("storing a snapshot of {world} tick {tick}"),
            |reply| Op::PutSnapshot {
                world,
                tick,
                snapshot,
                reply,
            },
        )
        .await
    }

    async fn delete_world(&self, world: WorldId) -> Result<(), StorageError> {
        self.write(
            || format!("deleting {world}"),
            |reply| Op::Delete { world, reply },
        )
        .await
    }

    async fn own_entity_ticks(
        &self,
        world: WorldId,
        entity: EntityId,
        to: Tick,
    ) -> Result<Vec<Tick>, StorageError> {
        let bases = self.bases.clone();
        self.read(
            || format!("reading the ticks that changed {entity} in {world}"),
            move |txn| {
                let info = load_world(&table(txn, WORLDS)?, world)?;
                let to = to.min(info.head);
                let first = info.first_own_tick();
                let mut out = Vec::new();
                if to < first {
                    return Ok(out);
                }
                // Completed chunks from the index, one point read each.
                let (first_chunk, _) = encoding::index_slot(first);
                let (to_chunk, _) = encoding::index_slot(to);
                let closed = info.head.0 / encoding::INDEX_CHUNK;
                let index = table(txn, ENTITY_TICKS)?;
                for chunk in first_chunk..=to_chunk.min(closed.saturating_sub(1)) {
                    if closed == 0 {
                        break;
                    }
                    if let Some(mask) = index.get((world.0, chunk, entity.0))? {
                        out.extend(
                            encoding::index_ticks(chunk, mask.value())
                                .filter(|t| *t >= first && *t <= to),
                        );
                    }
                }
                // The unfinished chunk, from its records.
                let tail = Tick((closed * encoding::INDEX_CHUNK + 1).max(first.0));
                if tail <= to {
                    let records = ReadValues::records_with(txn, &bases)?;
                    for entry in records.range(world.0, tail.0, to.0)? {
                        let (tick, v) = entry?;
                        let touched = encoding::record_entities(tick, &v)
                            .map_err(|e| e.at(world, tick, "tick record"))?;
                        if touched.binary_search(&entity).is_ok() {
                            out.push(tick);
                        }
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    fn snapshot_interval(&self) -> Option<u64> {
        self.snapshot_interval
    }

    /// From the `current_*` tables (see the `current` module), in one read
    /// transaction; `None` for a world that keeps none at its head.
    async fn read_current(
        &self,
        world: WorldId,
        reads: Vec<autoresearch_core::current::CurrentRead>,
    ) -> Result<Option<autoresearch_core::current::CurrentView>, StorageError> {
        self.read(
            || format!("reading the current state of {world}"),
            move |txn| crate::current::read(txn, world, &reads),
        )
        .await
    }

    async fn read_series(
        &self,
        world: WorldId,
        experiment: String,
        metric: Option<String>,
    ) -> Result<Option<autoresearch_core::series::Series>, StorageError> {
        let what = format!("reading the chart series of {experiment:?} in {world}");
        self.read(
            || what,
            move |txn| crate::series::read(txn, world, &experiment, metric.as_deref()),
        )
        .await
    }

    /// The ledger file's length in bytes (redb allocates in regions, so
    /// it includes free space inside the file).
    async fn check_structure(&self) -> Result<Vec<String>, StorageError> {
        // Every table opened and its B-tree walked (their sizes): a damaged
        // table catalogue or page a replay of the worlds never reads shows
        // here (a panic of the engine is contained as an error).
        Ok(match self.table_bytes().await {
            Ok(_) => Vec::new(),
            Err(e) => vec![format!("the file's tables cannot all be read: {e}")],
        })
    }

    async fn size_bytes(&self) -> Result<Option<u64>, StorageError> {
        let path = self.sink.path.clone();
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) => Err(StorageError::Backend {
                context: format!("measuring ledger {}", path.display()),
                source: Box::new(e),
            }),
        }
    }
}
