//! Every on-disk encoding of the ledger, in one place: the tables, their
//! keys, and the values stored in them.
//!
//! Keys are fixed-width integers (tuples of `u64`), so that a world's ticks
//! sort numerically and a range scan reads one world's segment in tick order.
//! Values are postcard behind a one-byte format version: a value starting
//! with a byte greater than [`FORMAT_VERSION`] was written by a newer build
//! and is refused, never guessed at. The `meta` table records the version of
//! the file as a whole. Changing any shape below means a new version number
//! and a decoder for the old one.
//!
//! The stored shapes mirror core's types but are declared here, so that an
//! edit to a core type cannot silently change the file format.

mod borrowed;
mod columnar;
pub(crate) mod delta;
mod parts;
mod value;

pub(crate) use borrowed::{
    ChangeRef, decode_component_record, decode_component_snapshot, record_sets, record_sets_of,
};
#[cfg(test)]
pub(crate) use parts::INLINE_MAX;
pub(crate) use parts::{CODEC_PARTS, RECORD_PARTS, SNAPSHOT_PARTS, join, split, stub};
pub(crate) use value::{body, nothing_left, take_whole};
use value::{decode, encode, encode_packed_scratch, encode_packed_sized, encode_versioned};

use autoresearch_core::{
    Change, EntityId, ForkPoint, Snapshot, Tick, TickRecord, WorldId, WorldInfo,
};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

/// The newest file format this build writes and reads (the `meta` table's
/// `format_version`). Version 2 added the `liveness` table; a version 1
/// file is upgraded (the table filled from the records) by the first
/// read-write open, and read as it is by a read-only one. Version 3 allows
/// value version 2 (compressed records and snapshots); older values stay
/// readable, so a version 2 file is upgraded by rewriting the marker only.
/// Version 4 added the `spawn_ranges` table (spawns of new entities as
/// ranges, no longer one `liveness` entry each) and keeps the current
/// state as pointers to the ticks that hold its values (`current_ticks`)
/// instead of a second copy of them (`current_values`): the upgrade drops
/// the format 3 current-state tables (those worlds' reads materialize),
/// and a build that knows only format 3, which would not read the ranges,
/// refuses the file. Version 5 stores a record or snapshot longer than a
/// page as a stub (codec byte [`CODEC_PARTS`]) and its bytes in parts
/// (`record_parts`, `snapshot_parts`, see `parts`) and a value changed in
/// place as a delta of the previous one (records of value version 3, see
/// `delta`); format 4 values are
/// read as they are, so a format 4 file is upgraded by creating the two
/// tables and rewriting the marker, and a build that knows only format 4,
/// which would read a stub or a delta as a damaged value, refuses the
/// file. Version 6 stores a large tick record laid out by column (value
/// version 4, see `columnar`); older values are read as they are, so a
/// format 5 file is upgraded by rewriting the marker, and a build that
/// knows only format 5 refuses the file.
pub const FORMAT_VERSION: u8 = 6;

/// The newest value encoding this build writes and reads (the first byte
/// of every postcard value). Version 1: the postcard body follows.
/// Version 2 (records and snapshots, file format 3): a codec byte follows,
/// [`CODEC_RAW`] then the postcard body, [`CODEC_LZ4`] then the body
/// compressed as one LZ4 block behind its length (u32, little-endian), or
/// (file format 4) [`CODEC_ZSTD`] then one zstd frame behind its length.
///
/// [`CODEC_RAW`]: value::CODEC_RAW
/// [`CODEC_LZ4`]: value::CODEC_LZ4
/// [`CODEC_ZSTD`]: value::CODEC_ZSTD
/// Version 3 (file format 5): a tick record that holds deltas
/// ([`DELTA_VERSION`]); the codec byte and body follow as in version 2.
/// Version 4 (file format 6): a tick record of many changes laid out by
/// column (`columnar`), which decodes to the body of a version 2 record.
pub const VALUE_VERSION: u8 = 4;

/// The version byte of records and snapshots stored whole (value
/// version 2).
pub(crate) const PACKED_VERSION: u8 = 2;

/// The version byte of a tick record that holds deltas (a [`RecordV2`]):
/// readers get it through `stored`, which resolves the deltas.
pub(crate) const DELTA_VERSION: u8 = 3;

/// `"format_version"` -> `[version]`: the format of the file as a whole.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const FORMAT_KEY: &str = "format_version";

/// `"last_deleted_world"` -> the id of a deleted world that had the
/// greatest id, `u64` little-endian; absent until one was deleted. A new
/// world's id is greater than it, so that no id is ever reused. Additive:
/// a file without it reads as before.
pub(crate) const LAST_DELETED_KEY: &str = "last_deleted_world";

/// The value of [`LAST_DELETED_KEY`].
pub(crate) fn encode_last_deleted(id: u64) -> [u8; 8] {
    id.to_le_bytes()
}

/// Reads the value of [`LAST_DELETED_KEY`].
pub(crate) fn decode_last_deleted(bytes: &[u8]) -> Result<u64, DecodeError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_le_bytes)
        .map_err(|_| DecodeError::Corrupt(format!("{} bytes, expected 8", bytes.len())))
}

/// World id -> catalogue entry (name, parent, fork tick, head, created_at).
pub(crate) const WORLDS: TableDefinition<u64, &[u8]> = TableDefinition::new("worlds");

/// World name -> world id, so that look-up by name is one read.
pub(crate) const WORLD_NAMES: TableDefinition<&str, u64> = TableDefinition::new("world_names");

/// (world, tick) -> the tick's record: every change one commit made.
pub(crate) const RECORDS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("records");

/// (world, tick) -> the world's whole state after that tick.
pub(crate) const SNAPSHOTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("snapshots");

/// (world, chunk, entity) -> bitmask: which ticks of one chunk of
/// [`INDEX_CHUNK`] ticks of a world's own segment changed an entity. Bit `i`
/// of chunk `c` stands for tick `c * INDEX_CHUNK + i + 1`.
///
/// A chunk's entries are written in one go by the append that completes the
/// chunk, so they land side by side at the end of the world's key range:
/// per-tick appends never scatter writes across the index. The ticks of the
/// unfinished chunk (fewer than [`INDEX_CHUNK`]) are found from their records.
pub(crate) const ENTITY_TICKS: TableDefinition<(u64, u64, u64), u64> =
    TableDefinition::new("entity_ticks");

/// (world, entity, tick) -> whether the entity is alive after that own tick
/// of the world, for each tick that changed its liveness (spawn, despawn).
/// The append check reads the newest entry at or before the head (then the
/// parent's, at most at the fork tick): one range step per lineage level.
pub(crate) const LIVENESS: TableDefinition<(u64, u64, u64), bool> =
    TableDefinition::new("liveness");

/// (world, last entity, first entity) -> the own tick that spawned every
/// entity `first..=last` of the world (file format 4). A tick's spawns of
/// entities above every range the world has are stored here, one entry
/// per run of consecutive ids, instead of one `liveness` entry each; so
/// ranges never overlap, and the range holding an entity is the first
/// entry whose last entity is at least it. An entity's liveness at a tick
/// is the newer of its `liveness` entry and its range spawn at or before
/// that tick.
pub(crate) const SPAWNS: TableDefinition<(u64, u64, u64), u64> =
    TableDefinition::new("spawn_ranges");

/// Ticks per entity-index chunk (the width of its bitmask).
pub(crate) const INDEX_CHUNK: u64 = 64;

/// The index chunk holding `tick` (>= 1), and its bit in that chunk's mask.
pub(crate) fn index_slot(tick: Tick) -> (u64, u64) {
    let t = tick.0.saturating_sub(1);
    (t / INDEX_CHUNK, 1u64 << (t % INDEX_CHUNK))
}

/// The ticks a chunk's bitmask stands for, ascending.
pub(crate) fn index_ticks(chunk: u64, mask: u64) -> impl Iterator<Item = Tick> {
    (0..INDEX_CHUNK)
        .filter(move |i| mask & (1u64 << i) != 0)
        .map(move |i| Tick(chunk * INDEX_CHUNK + i + 1))
}

/// The distinct entities a stored record touches, without building the
/// record. Used when an index chunk is completed.
pub(crate) fn record_entities(tick: Tick, bytes: &[u8]) -> Result<Vec<EntityId>, DecodeError> {
    Ok(decode_record(tick, bytes)?.entities())
}

/// Names of every table, for statistics.
pub(crate) const TABLE_NAMES: [&str; 10] = [
    "meta",
    "worlds",
    "world_names",
    "records",
    "snapshots",
    "entity_ticks",
    "liveness",
    "spawn_ranges",
    "record_parts",
    "snapshot_parts",
];

/// Why a stored value could not be decoded.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// The value starts with a version byte newer than this build's.
    Newer(u8),
    Corrupt(String),
}

impl DecodeError {
    /// The storage error for this failure, naming what was being read.
    pub(crate) fn at(
        self,
        world: WorldId,
        tick: Tick,
        what: &str,
    ) -> autoresearch_core::StorageError {
        use autoresearch_core::StorageError;
        match self {
            DecodeError::Newer(found) => StorageError::NewerFormat {
                what: format!("{what} of {world} tick {tick}"),
                found,
                supported: VALUE_VERSION,
            },
            DecodeError::Corrupt(reason) => StorageError::Corrupt {
                world,
                tick,
                reason: format!("{what}: {reason}"),
            },
        }
    }
}

/// Bytes serialized with serde's `bytes` hint: postcard writes them exactly
/// as a `Vec<u8>` (a length, then the bytes) but copies them in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[derive(Serialize, Deserialize)]
struct WorldV1 {
    name: String,
    /// (parent world, last shared tick).
    parent: Option<(u64, u64)>,
    head: u64,
    created_at_ms: i64,
}

#[derive(Serialize, Deserialize)]
enum ChangeV1 {
    Spawn(u64),
    Set(u64, String, Blob),
    Remove(u64, String),
    Despawn(u64),
}

impl From<Change> for ChangeV1 {
    fn from(c: Change) -> ChangeV1 {
        match c {
            Change::Spawn { entity } => ChangeV1::Spawn(entity.0),
            Change::Set {
                entity,
                component,
                value,
            } => ChangeV1::Set(entity.0, component, Blob(value)),
            Change::Remove { entity, component } => ChangeV1::Remove(entity.0, component),
            Change::Despawn { entity } => ChangeV1::Despawn(entity.0),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RecordV1 {
    at_ms: i64,
    changes: Vec<ChangeV1>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    next_entity: u64,
    entities: Vec<(u64, Vec<(String, Blob)>)>,
}

/// [`ChangeV1`] and a fifth variant (file format 5, value version 3):
/// a `Set` stored as a delta of the value the tick `base` set.
#[derive(Serialize, Deserialize)]
enum ChangeV2 {
    Spawn(u64),
    Set(u64, String, Blob),
    Remove(u64, String),
    Despawn(u64),
    SetDelta(u64, String, DeltaV1),
}

/// A value stored as a delta (`delta`): of the value of the same entity
/// and component that tick `base` of the same world set (its last `Set`
/// of them; any older tick that set them, not necessarily the latest),
/// keep `prefix` leading and `suffix` trailing bytes and put `middle`
/// between them.
#[derive(Serialize, Deserialize)]
struct DeltaV1 {
    base: u64,
    prefix: u32,
    suffix: u32,
    middle: Blob,
}

/// A record that holds deltas (value version 3).
#[derive(Serialize, Deserialize)]
struct RecordV2 {
    at_ms: i64,
    changes: Vec<ChangeV2>,
}

/// What a stored record sets for one `(entity, component)` (its last
/// `Set` of them): the value, or a delta of an older tick's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SetEntry {
    Whole(Vec<u8>),
    Delta {
        base: u64,
        prefix: u32,
        suffix: u32,
        middle: Vec<u8>,
    },
}

impl SetEntry {
    /// Bytes it holds, for cache accounting.
    pub(crate) fn len(&self) -> usize {
        match self {
            SetEntry::Whole(v) => v.len(),
            SetEntry::Delta { middle, .. } => middle.len() + 16,
        }
    }
}

/// A record's changes with the values of some `Set`s given as deltas:
/// `deltas[i]` is `Some((base tick, prefix, suffix))` for a `Set` stored
/// as a delta of the value `base` set (its middle taken from the value).
/// Encoded as value version 3.
pub(crate) fn encode_record_with_deltas(
    at_ms: i64,
    changes: &[Change],
    deltas: &[Option<(u64, u32, u32)>],
) -> Result<Vec<u8>, String> {
    // Borrowed from `changes` (the same bytes as `RecordV2`'s owned
    // shapes): the record's values are not copied before postcard copies
    // them once.
    let changes = changes
        .iter()
        .zip(deltas)
        .map(|(c, d)| match (c, d) {
            (Change::Spawn { entity }, _) => ChangeV2Ref::Spawn(entity.0),
            (
                Change::Set {
                    entity,
                    component,
                    value,
                },
                Some((base, prefix, suffix)),
            ) => {
                let end = value.len().saturating_sub(*suffix as usize);
                let middle = value.get(*prefix as usize..end).unwrap_or_default();
                ChangeV2Ref::SetDelta(
                    entity.0,
                    component,
                    DeltaV1Ref {
                        base: *base,
                        prefix: *prefix,
                        suffix: *suffix,
                        middle: BlobRef(middle),
                    },
                )
            }
            (
                Change::Set {
                    entity,
                    component,
                    value,
                },
                None,
            ) => ChangeV2Ref::Set(entity.0, component, BlobRef(value)),
            (Change::Remove { entity, component }, _) => ChangeV2Ref::Remove(entity.0, component),
            (Change::Despawn { entity }, _) => ChangeV2Ref::Despawn(entity.0),
        })
        .collect();
    encode_versioned(DELTA_VERSION, 0, &RecordV2Ref { at_ms, changes })
}

/// [`Blob`] borrowed: the same bytes when serialized.
struct BlobRef<'a>(&'a [u8]);

impl Serialize for BlobRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// [`ChangeV2`] borrowed, for encoding only: the same variants in the
/// same order, so the same bytes.
#[derive(Serialize)]
enum ChangeV2Ref<'a> {
    Spawn(u64),
    Set(u64, &'a str, BlobRef<'a>),
    Remove(u64, &'a str),
    Despawn(u64),
    SetDelta(u64, &'a str, DeltaV1Ref<'a>),
}

/// [`DeltaV1`] borrowed, for encoding only.
#[derive(Serialize)]
struct DeltaV1Ref<'a> {
    base: u64,
    prefix: u32,
    suffix: u32,
    middle: BlobRef<'a>,
}

/// [`RecordV2`] borrowed, for encoding only.
#[derive(Serialize)]
struct RecordV2Ref<'a> {
    at_ms: i64,
    changes: Vec<ChangeV2Ref<'a>>,
}

/// Whether a stored record holds deltas (and must be resolved before a
/// reader decodes it).
pub(crate) fn has_deltas(bytes: &[u8]) -> bool {
    bytes.first() == Some(&DELTA_VERSION)
}

/// The `Set`s of a stored record (whole or with deltas), the last of each
/// `(entity, component)`.
pub(crate) fn record_set_entries(
    bytes: &[u8],
) -> Result<std::collections::HashMap<(u64, String), SetEntry>, DecodeError> {
    let mut out = std::collections::HashMap::new();
    if !has_deltas(bytes) {
        record_sets(bytes, |e, c, v| {
            out.insert((e.0, c.to_string()), SetEntry::Whole(v.to_vec()));
        })?;
        return Ok(out);
    }
    let r: RecordV2 = decode(bytes)?;
    for c in r.changes {
        match c {
            ChangeV2::Set(e, c, Blob(v)) => {
                out.insert((e, c), SetEntry::Whole(v));
            }
            ChangeV2::SetDelta(e, c, d) => {
                out.insert(
                    (e, c),
                    SetEntry::Delta {
                        base: d.base,
                        prefix: d.prefix,
                        suffix: d.suffix,
                        middle: d.middle.0,
                    },
                );
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A record that holds deltas rewritten as the whole record (value
/// version 2, raw), each delta's base value asked of `base(entity,
/// component, base tick)`. Errors with `map`'s error on a damaged record
/// or delta.
pub(crate) fn resolve_record<E>(
    bytes: &[u8],
    mut base: impl FnMut(u64, &str, u64) -> Result<Vec<u8>, E>,
    map: impl Fn(DecodeError) -> E,
) -> Result<Vec<u8>, E> {
    let r: RecordV2 = decode(bytes).map_err(&map)?;
    let mut changes = Vec::with_capacity(r.changes.len());
    for c in r.changes {
        changes.push(match c {
            ChangeV2::Spawn(e) => ChangeV1::Spawn(e),
            ChangeV2::Set(e, c, v) => ChangeV1::Set(e, c, v),
            ChangeV2::Remove(e, c) => ChangeV1::Remove(e, c),
            ChangeV2::Despawn(e) => ChangeV1::Despawn(e),
            ChangeV2::SetDelta(e, c, d) => {
                let old = base(e, &c, d.base)?;
                let value = delta::apply(&old, d.prefix, d.suffix, &d.middle.0).map_err(&map)?;
                ChangeV1::Set(e, c, Blob(value))
            }
        });
    }
    let mut out = vec![PACKED_VERSION, value::CODEC_RAW];
    out = postcard::to_extend(
        &RecordV1 {
            at_ms: r.at_ms,
            changes,
        },
        out,
    )
    .map_err(|e| map(DecodeError::Corrupt(e.to_string())))?;
    Ok(out)
}

/// The whole-file format marker stored under [`FORMAT_KEY`].
pub(crate) fn encode_file_version() -> [u8; 1] {
    [FORMAT_VERSION]
}

/// The liveness entries of a stored record, for the upgrade of a format 1
/// file: (entity, alive after the tick) for every entity the record spawns
/// or despawns. The log replays, so the last such change of an entity in
/// the record says whether it is alive after it.
pub(crate) fn record_liveness(
    tick: Tick,
    bytes: &[u8],
) -> Result<Vec<(EntityId, bool)>, DecodeError> {
    let mut out = std::collections::BTreeMap::new();
    for c in decode_record(tick, bytes)?.changes {
        match c {
            Change::Spawn { entity } => out.insert(entity, true),
            Change::Despawn { entity } => out.insert(entity, false),
            _ => None,
        };
    }
    Ok(out.into_iter().collect())
}

/// The file format a `meta` entry names. Errors on an empty entry.
pub(crate) fn decode_file_version(bytes: &[u8]) -> Result<u8, String> {
    bytes
        .first()
        .copied()
        .ok_or_else(|| "empty format_version entry".to_string())
}

pub(crate) fn encode_world(info: &WorldInfo) -> Result<Vec<u8>, String> {
    encode(&WorldV1 {
        name: info.name.clone(),
        parent: info.parent.map(|p| (p.parent.0, p.tick.0)),
        head: info.head.0,
        created_at_ms: info.created_at_ms,
    })
}

/// Errors also when the entry names a parent that is not older than the
/// world (ids are allocated in order, so a parent always has a smaller id):
/// lineage walks over a damaged catalogue then always end.
pub(crate) fn decode_world(id: WorldId, bytes: &[u8]) -> Result<WorldInfo, DecodeError> {
    let w: WorldV1 = decode(bytes)?;
    if let Some((p, _)) = w.parent
        && p >= id.0
    {
        return Err(DecodeError::Corrupt(format!(
            "parent world#{p} is not older than the world"
        )));
    }
    Ok(WorldInfo {
        id,
        name: w.name,
        head: Tick(w.head),
        parent: w.parent.map(|(p, t)| ForkPoint {
            parent: WorldId(p),
            tick: Tick(t),
        }),
        created_at_ms: w.created_at_ms,
    })
}

/// Encodes a record's body; its tick is the key: laid out by column
/// (value version 4) when it has many changes, row-wise (version 2)
/// otherwise. Consumes the record so that no value is copied twice.
#[cfg(test)]
pub(crate) fn encode_record(record: TickRecord) -> Result<Vec<u8>, String> {
    match columnar::encode_record(record.at_ms, &record.changes) {
        Some(bytes) => Ok(bytes),
        None => encode_record_rows(record),
    }
}

/// Encodes a record's body from borrowed changes (an ingest's, which the
/// writer reads while they are encoded; an update tick's stored whole):
/// laid out by column (value version 4) when it has many changes,
/// row-wise (version 2) otherwise, the values copied once, into the
/// encoding. The same bytes as `encode_record` of the owned record.
pub(crate) fn encode_changes(at_ms: i64, changes: &[Change]) -> Result<Vec<u8>, String> {
    match columnar::encode_record(at_ms, changes) {
        Some(bytes) => Ok(bytes),
        None => encode_rows_borrowed(at_ms, changes),
    }
}

/// [`encode_record_rows`] of borrowed changes: the same bytes (version 2's
/// variants are version 3's first four, in the same order), the values
/// not copied before postcard copies them once.
pub(crate) fn encode_rows_borrowed(at_ms: i64, changes: &[Change]) -> Result<Vec<u8>, String> {
    let size_hint = estimated_bytes(changes);
    let changes = changes
        .iter()
        .map(|c| match c {
            Change::Spawn { entity } => ChangeV2Ref::Spawn(entity.0),
            Change::Set {
                entity,
                component,
                value,
            } => ChangeV2Ref::Set(entity.0, component, BlobRef(value)),
            Change::Remove { entity, component } => ChangeV2Ref::Remove(entity.0, component),
            Change::Despawn { entity } => ChangeV2Ref::Despawn(entity.0),
        })
        .collect();
    encode_packed_sized(size_hint, &RecordV2Ref { at_ms, changes })
}

/// About the row-wise encoded size of `changes` in bytes, before
/// compression: a capacity hint, and what decides whether a record is
/// encoded on a thread of its own. O(changes).
pub(crate) fn estimated_bytes(changes: &[Change]) -> usize {
    16 + changes
        .iter()
        .map(|c| match c {
            Change::Set {
                component, value, ..
            } => 16 + component.len() + value.len(),
            Change::Remove { component, .. } => 16 + component.len(),
            _ => 11,
        })
        .sum::<usize>()
}

/// [`encode_record`] row-wise (value version 2), whatever its size.
#[cfg(test)]
pub(crate) fn encode_record_rows(record: TickRecord) -> Result<Vec<u8>, String> {
    // About the encoded size, so that a large record is not copied by
    // doubling its buffer a score of times.
    let size_hint = estimated_bytes(&record.changes);
    encode_packed_sized(
        size_hint,
        &RecordV1 {
            at_ms: record.at_ms,
            changes: record.changes.into_iter().map(ChangeV1::from).collect(),
        },
    )
}

pub(crate) fn decode_record(tick: Tick, bytes: &[u8]) -> Result<TickRecord, DecodeError> {
    let r: RecordV1 = decode(bytes)?;
    Ok(TickRecord {
        tick,
        at_ms: r.at_ms,
        changes: r
            .changes
            .into_iter()
            .map(|c| match c {
                ChangeV1::Spawn(e) => Change::Spawn {
                    entity: EntityId(e),
                },
                ChangeV1::Set(e, component, Blob(value)) => Change::Set {
                    entity: EntityId(e),
                    component,
                    value,
                },
                ChangeV1::Remove(e, component) => Change::Remove {
                    entity: EntityId(e),
                    component,
                },
                ChangeV1::Despawn(e) => Change::Despawn {
                    entity: EntityId(e),
                },
            })
            .collect(),
    })
}

/// Encodes a snapshot's body; its tick is the key.
pub(crate) fn encode_snapshot(snapshot: Snapshot) -> Result<Vec<u8>, String> {
    // Through the thread's scratch buffer: a snapshot's raw encoding is
    // megabytes, written every snapshot interval.
    encode_packed_scratch(&SnapshotV1 {
        next_entity: snapshot.next_entity,
        entities: snapshot
            .entities
            .into_iter()
            .map(|(e, comps)| (e.0, comps.into_iter().map(|(n, v)| (n, Blob(v))).collect()))
            .collect(),
    })
}

pub(crate) fn decode_snapshot(tick: Tick, bytes: &[u8]) -> Result<Snapshot, DecodeError> {
    let s: SnapshotV1 = decode(bytes)?;
    Ok(Snapshot {
        tick,
        next_entity: s.next_entity,
        entities: s
            .entities
            .into_iter()
            .map(|(e, comps)| {
                (
                    EntityId(e),
                    comps.into_iter().map(|(n, Blob(v))| (n, v)).collect(),
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests;
