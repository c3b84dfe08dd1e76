//! Applying one queued operation inside the writer's transaction: every
//! check (the world exists, ticks start at head + 1, each tick applies to
//! the state before it, ...) before the first write, then the writes of
//! an append (records, snapshots, the entity index, liveness and spawn
//! ranges, the current state and chart series).

use super::{Done, Op};
use crate::encoding::{
    self, ENTITY_TICKS, INDEX_CHUNK, LAST_DELETED_KEY, LIVENESS, META, SPAWNS, WORLD_NAMES, WORLDS,
};
use crate::{EncodedAppend, Failure, find_name, load_world};
use autoresearch_core::{
    EntityId, ForkPoint, LivenessCheck, StorageError, Tick, WorldId, WorldInfo, now_ms,
};
use redb::{ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;

/// The tables of one write transaction.
pub(super) struct Tables<'t> {
    worlds: Table<'t, u64, &'static [u8]>,
    names: Table<'t, &'static str, u64>,
    /// Records, long ones in parts (`crate::stored`).
    records: crate::stored::WriteValues<'t>,
    /// Snapshots, long ones in parts.
    snapshots: crate::stored::WriteValues<'t>,
    index: Table<'t, (u64, u64, u64), u64>,
    liveness: Table<'t, (u64, u64, u64), bool>,
    /// Spawns of new entities as ranges (`encoding::SPAWNS`).
    spawns: Table<'t, (u64, u64, u64), u64>,
    meta: Table<'t, &'static str, &'static [u8]>,
    /// The current state of each world (`crate::current`).
    current: crate::current::CurrentTables<'t>,
    /// The chart series of each world (`crate::series`).
    series: crate::series::SeriesTables<'t>,
    /// The ticks that last set each value, for deltas.
    last: &'t mut crate::stored::LastSets,
    /// The entities of each world's latest ticks, for the entity index.
    chunks: &'t mut ChunkTicks,
}

impl<'t> Tables<'t> {
    /// Every table an operation may touch, in `txn`, with the writer's
    /// caches.
    pub(super) fn open(
        txn: &'t WriteTransaction,
        caches: &'t mut super::Caches,
    ) -> Result<Tables<'t>, Failure> {
        let super::Caches {
            inputs,
            last,
            chunks,
        } = caches;
        Ok(Tables {
            worlds: txn.open_table(WORLDS)?,
            names: txn.open_table(WORLD_NAMES)?,
            records: crate::stored::WriteValues::records(txn, last)?,
            snapshots: crate::stored::WriteValues::snapshots(txn)?,
            index: txn.open_table(ENTITY_TICKS)?,
            liveness: txn.open_table(LIVENESS)?,
            spawns: txn.open_table(SPAWNS)?,
            meta: txn.open_table(META)?,
            current: crate::current::CurrentTables::open(txn, inputs)?,
            last,
            chunks,
            series: crate::series::SeriesTables::open(txn)?,
        })
    }
}

/// The entities each of a world's latest ticks touched, as this writer
/// stored them (the ticks of the entity-index chunk under way, in order,
/// without gaps): the chunk a tick completes is built from them instead of
/// reading, and resolving, the chunk's records again. A tick's entities
/// never change once it is stored and a world id is never reused, so an
/// entry is never stale; ticks this writer did not store (another
/// process's) leave a gap, and a chunk with a gap is read from the
/// records. The writer clears it with a failed transaction.
#[derive(Default)]
pub(super) struct ChunkTicks {
    /// World -> its latest ticks and their entities, consecutive, all in
    /// one chunk.
    worlds: HashMap<u64, Vec<(u64, Vec<EntityId>)>>,
}

/// A tick touching more entities than this is not kept (its chunk is then
/// read from the records): bounds the memory a world's entry holds.
const CHUNK_TICKS_MAX_ENTITIES: usize = 1 << 16;

impl ChunkTicks {
    pub(super) fn clear(&mut self) {
        self.worlds.clear();
    }

    /// Notes that world `w`'s tick `tick`, just stored, touched `entities`.
    fn note(&mut self, w: u64, tick: Tick, entities: &[EntityId]) {
        let kept = self.worlds.entry(w).or_default();
        let (chunk, _) = encoding::index_slot(tick);
        let follows = kept.last().is_some_and(|(last, _)| {
            *last + 1 == tick.0 && encoding::index_slot(Tick(*last)).0 == chunk
        });
        if !follows {
            kept.clear();
        }
        if entities.len() > CHUNK_TICKS_MAX_ENTITIES {
            self.worlds.remove(&w);
            return;
        }
        kept.push((tick.0, entities.to_vec()));
    }

    /// The entities of world `w`'s ticks `from..=to`, each with its tick,
    /// when every one of them is kept.
    fn ticks(&self, w: u64, from: u64, to: u64) -> Option<&[(u64, Vec<EntityId>)]> {
        let kept = self.worlds.get(&w)?;
        let first = kept.first()?.0;
        let last = kept.last()?.0;
        if first > from || last != to {
            return None;
        }
        let start = usize::try_from(from - first).ok()?;
        kept.get(start..)
    }
}

fn encode_world(info: &WorldInfo) -> Result<Vec<u8>, Failure> {
    encoding::encode_world(info).map_err(|reason| {
        Failure::Storage(StorageError::Backend {
            context: format!("encoding the catalogue entry of {}", info.id),
            source: reason.into(),
        })
    })
}

fn add_world(t: &mut Tables<'_>, name: &str, parent: Option<ForkPoint>) -> Result<Done, Failure> {
    let info = plan_world(t, name, parent)?;
    insert_world(t, &info)?;
    Ok(Done::Info(info))
}

/// Writes a planned world's catalogue entry and name.
fn insert_world(t: &mut Tables<'_>, info: &WorldInfo) -> Result<(), Failure> {
    let bytes = encode_world(info)?;
    t.worlds.insert(info.id.0, bytes.as_slice())?;
    t.names.insert(info.name.as_str(), info.id.0)?;
    Ok(())
}

/// The catalogue entry a new world named `name` gets, checked (the name
/// is free, the parent exists and has the fork tick), nothing written.
fn plan_world(t: &Tables<'_>, name: &str, parent: Option<ForkPoint>) -> Result<WorldInfo, Failure> {
    if let Some(p) = parent {
        let info = load_world(&t.worlds, p.parent)?;
        if p.tick > info.head {
            return Err(StorageError::ForkBeyondHead {
                world: p.parent,
                at: p.tick,
                head: info.head,
            }
            .into());
        }
    }
    // Checked against the catalogue as well as the name index, so that a
    // damaged index refuses the create instead of allowing a second world
    // of one name.
    if find_name(&t.worlds, &t.names, name)?.is_some() {
        return Err(StorageError::NameTaken(name.to_string()).into());
    }
    // After the greatest id in the catalogue and any deleted one: an id
    // is never given to a second world.
    let after_deleted = match t.meta.get(LAST_DELETED_KEY)? {
        Some(v) => {
            encoding::decode_last_deleted(v.value())
                .map_err(|e| e.at(WorldId(0), Tick::ZERO, "meta last_deleted_world"))?
                + 1
        }
        None => 0,
    };
    let id = t
        .worlds
        .last()?
        .map_or(0, |(k, _)| k.value() + 1)
        .max(after_deleted);
    Ok(WorldInfo {
        id: WorldId(id),
        name: name.to_string(),
        head: parent.map_or(Tick::ZERO, |p| p.tick),
        parent,
        created_at_ms: now_ms(),
    })
}

/// Applies one operation. Every check runs before the first write, so an
/// `Err(Failure::Storage)` leaves the transaction as it found it.
pub(super) fn apply(t: &mut Tables<'_>, op: &Op) -> Result<Done, Failure> {
    match op {
        Op::Create { name, .. } => add_world(t, name, None),
        Op::Fork {
            parent, at, name, ..
        } => add_world(
            t,
            name,
            Some(ForkPoint {
                parent: *parent,
                tick: *at,
            }),
        ),
        Op::ForkAppend {
            parent,
            at,
            name,
            appends,
            ..
        } => {
            let fork = Some(ForkPoint {
                parent: *parent,
                tick: *at,
            });
            add_world_with(t, name, fork, appends)
        }
        Op::CreateAppend { name, appends, .. } => add_world_with(t, name, None, appends),
        Op::Append { world, appends, .. } => {
            let info = load_world(&t.worlds, *world)?;
            let planned = check_append(t, &info, appends)?;
            write_append(t, info, appends, planned)?;
            Ok(Done::Unit)
        }
        Op::Delete { world, .. } => delete(t, *world),
        Op::PutSnapshot {
            world,
            tick,
            snapshot,
            ..
        } => {
            let info = load_world(&t.worlds, *world)?;
            if *tick < info.first_own_tick() || *tick > info.head {
                return Err(StorageError::SnapshotOutOfRange {
                    world: *world,
                    tick: *tick,
                }
                .into());
            }
            // A stored snapshot never changes: the span cache of every
            // handle on this file may keep it decoded.
            if !t.snapshots.contains(world.0, tick.0)? {
                t.snapshots.insert(world.0, tick.0, snapshot)?;
            }
            Ok(Done::Unit)
        }
    }
}

/// A new world (a root, or a fork of `fork`) and its first `appends`,
/// every check of both before the first write.
fn add_world_with(
    t: &mut Tables<'_>,
    name: &str,
    fork: Option<ForkPoint>,
    appends: &[EncodedAppend],
) -> Result<Done, Failure> {
    let info = plan_world(t, name, fork)?;
    let planned = check_append(t, &info, appends)?;
    insert_world(t, &info)?;
    let info = write_append(t, info, appends, planned)?;
    Ok(Done::Info(info))
}

/// Deletes `world` and every key of its own (records, snapshots, entity
/// index, liveness), after checking that no world was forked from it.
fn delete(t: &mut Tables<'_>, world: WorldId) -> Result<Done, Failure> {
    let info = load_world(&t.worlds, world)?;
    let mut forks = Vec::new();
    for entry in t.worlds.iter()? {
        let (k, v) = entry?;
        let id = WorldId(k.value());
        let other = encoding::decode_world(id, v.value())
            .map_err(|e| e.at(id, Tick::ZERO, "catalogue entry"))?;
        if other.parent.is_some_and(|p| p.parent == world) {
            forks.push(other.name);
        }
    }
    if !forks.is_empty() {
        return Err(StorageError::HasForks { world, forks }.into());
    }
    let w = world.0;
    if t.worlds.last()?.is_some_and(|(k, _)| k.value() == w) {
        let before = match t.meta.get(LAST_DELETED_KEY)? {
            Some(v) => encoding::decode_last_deleted(v.value())
                .map_err(|e| e.at(world, Tick::ZERO, "meta last_deleted_world"))?,
            None => 0,
        };
        let bytes = encoding::encode_last_deleted(w.max(before));
        t.meta.insert(LAST_DELETED_KEY, bytes.as_slice())?;
    }
    t.worlds.remove(w)?;
    t.names.remove(info.name.as_str())?;
    t.records.delete_world(w)?;
    t.snapshots.delete_world(w)?;
    t.index
        .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
    t.liveness
        .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
    t.spawns
        .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
    t.current.delete(w)?;
    t.series.delete(w)?;
    Ok(Done::Unit)
}

/// What [`check_append`] found: each tick's liveness changes and the
/// entity-index chunks the ticks complete.
struct PlannedAppend {
    liveness: Vec<Vec<(EntityId, bool)>>,
    chunks: Vec<(u64, std::collections::BTreeMap<u64, u64>)>,
}

/// Checks every tick of `appends` against `info`'s world (consecutive
/// from its head + 1, each applying to the state before it), writing
/// nothing.
fn check_append(
    t: &Tables<'_>,
    info: &WorldInfo,
    appends: &[EncodedAppend],
) -> Result<PlannedAppend, Failure> {
    let world = info.id;
    let Some(first) = appends.first() else {
        return Ok(PlannedAppend {
            liveness: Vec::new(),
            chunks: Vec::new(),
        });
    };
    let head = info.head;
    for (i, a) in appends.iter().enumerate() {
        if a.tick.0 != head.0 + 1 + i as u64 {
            return Err(StorageError::Conflict {
                world,
                attempted: a.tick,
                head,
            }
            .into());
        }
    }
    let mut check = LivenessCheck::new(world);
    let mut liveness = Vec::with_capacity(appends.len());
    for a in appends {
        let changes = a.changes.iter().copied();
        liveness.push(check.check(a.tick, changes, |e| alive_at(t, info, e, head))?);
    }
    // Entity-index chunks the batch completes.
    let mut chunks = Vec::new();
    for (i, a) in appends.iter().enumerate() {
        if a.tick.0 % INDEX_CHUNK == 0 {
            chunks.push(chunk_masks(t, info, first.tick, &appends[..=i])?);
        }
    }
    Ok(PlannedAppend { liveness, chunks })
}

/// Stores checked `appends` ([`check_append`]) and `info` with its new
/// head; returns that entry. A failure here is redb's and aborts the
/// transaction.
fn write_append(
    t: &mut Tables<'_>,
    mut info: WorldInfo,
    appends: &[EncodedAppend],
    planned: PlannedAppend,
) -> Result<WorldInfo, Failure> {
    let Some(last) = appends.last() else {
        return Ok(info);
    };
    let PlannedAppend { liveness, chunks } = planned;
    let before = info.clone();
    info.head = last.tick;
    let entry = encode_world(&info)?;
    crate::current::maintain(&mut t.current, &t.records, &before, appends)?;
    crate::series::maintain(&mut t.series, &mut t.current, &t.records, &before, appends)?;
    let w = info.id.0;
    for (chunk, masks) in chunks {
        for (e, mask) in masks {
            t.index.insert((w, chunk, e), mask)?;
        }
    }
    // Spawns above every range of the world become ranges (one entry per
    // run of consecutive ids), so that ranges never overlap.
    let mut top = match t
        .spawns
        .range((w, 0, 0)..=(w, u64::MAX, u64::MAX))?
        .next_back()
    {
        Some(entry) => Some(entry?.0.value().1),
        None => None,
    };
    for (a, live) in appends.iter().zip(liveness) {
        let k = a.tick.0;
        let mut run: Option<(u64, u64)> = None;
        for (e, alive) in live {
            let e = e.0;
            if !alive || top.is_some_and(|top| e <= top) {
                t.liveness.insert((w, e, k), alive)?;
                continue;
            }
            run = match run {
                Some((first, last)) if e == last + 1 => Some((first, e)),
                Some((first, last)) => {
                    t.spawns.insert((w, last, first), k)?;
                    Some((e, e))
                }
                None => Some((e, e)),
            };
        }
        if let Some((first, last)) = run {
            t.spawns.insert((w, last, first), k)?;
            top = Some(last);
        }
        let with_deltas = t.last.encode(w, a);
        let bytes = match with_deltas.as_deref() {
            Some(bytes) => bytes,
            None => a.record()?,
        };
        t.records.insert(w, k, bytes)?;
        t.chunks.note(w, a.tick, &a.entities);
        if let Some(s) = &a.snapshot {
            t.snapshots.insert(w, k, s)?;
        }
    }
    t.worlds.insert(w, entry.as_slice())?;
    Ok(info)
}

/// Whether `entity` is alive in `info`'s world at tick `at` (at most its
/// head): the newest liveness entry at or before `at`, in the world's own
/// segment, then in its parent's at most at the fork tick, and so on.
fn alive_at(t: &Tables<'_>, info: &WorldInfo, entity: EntityId, at: Tick) -> Result<bool, Failure> {
    // Borrowed until an ancestor is loaded: asked once per entity a batch
    // touches (an ingest's ten thousand spawns), a copy cost a name each.
    let mut info = std::borrow::Cow::Borrowed(info);
    let mut at = at;
    loop {
        // A root world at tick 0 is empty (a new world's first append).
        if info.parent.is_none() && at == Tick::ZERO {
            return Ok(false);
        }
        let (w, e) = (info.id.0, entity.0);
        let single = match t.liveness.range((w, e, 0)..=(w, e, at.0))?.next_back() {
            Some(entry) => {
                let (k, v) = entry?;
                Some((k.value().2, v.value()))
            }
            None => None,
        };
        let spawned = match t.spawns.range((w, e, 0)..=(w, u64::MAX, u64::MAX))?.next() {
            Some(entry) => {
                let (k, v) = entry?;
                let (_, _, first) = k.value();
                let tick = v.value();
                (first <= e && tick <= at.0).then_some(tick)
            }
            None => None,
        };
        // The newer of the two (an entity is in no range and has no entry
        // of the same tick).
        match (single, spawned) {
            (Some((tick, alive)), Some(spawn)) => {
                return Ok(if spawn > tick { true } else { alive });
            }
            (Some((_, alive)), None) => return Ok(alive),
            (None, Some(_)) => return Ok(true),
            (None, None) => {}
        }
        match info.parent {
            Some(p) => {
                at = at.min(p.tick);
                info = std::borrow::Cow::Owned(load_world(&t.worlds, p.parent)?);
            }
            None => return Ok(false),
        }
    }
}

/// The entity-index masks of the chunk that the last of `batch` completes:
/// every entity changed by the world's own ticks in it. Ticks before
/// `batch_from` come from their stored records (whichever process appended
/// them), the others from the batch.
fn chunk_masks(
    t: &Tables<'_>,
    info: &WorldInfo,
    batch_from: Tick,
    batch: &[EncodedAppend],
) -> Result<(u64, std::collections::BTreeMap<u64, u64>), Failure> {
    let tick = batch[batch.len() - 1].tick;
    let (chunk, _) = encoding::index_slot(tick);
    let w = info.id.0;
    let from = (chunk * INDEX_CHUNK + 1).max(info.first_own_tick().0);
    let mut masks: std::collections::BTreeMap<u64, u64> = Default::default();
    let kept = t.chunks.ticks(w, from, batch_from.0.saturating_sub(1));
    if let Some(kept) = kept.filter(|_| from < batch_from.0) {
        for (at, entities) in kept {
            let (_, bit) = encoding::index_slot(Tick(*at));
            for e in entities {
                *masks.entry(e.0).or_default() |= bit;
            }
        }
    } else if from < batch_from.0 {
        for entry in t.records.range(w, from, batch_from.0 - 1)? {
            let (at, v) = entry?;
            let (_, bit) = encoding::index_slot(at);
            let touched =
                encoding::record_entities(at, &v).map_err(|e| e.at(info.id, at, "tick record"))?;
            for e in touched {
                *masks.entry(e.0).or_default() |= bit;
            }
        }
    }
    for a in batch.iter().filter(|a| a.tick.0 >= from) {
        let (_, bit) = encoding::index_slot(a.tick);
        for e in &a.entities {
            *masks.entry(e.0).or_default() |= bit;
        }
    }
    Ok((chunk, masks))
}
