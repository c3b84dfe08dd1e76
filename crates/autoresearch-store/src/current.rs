//! The current state of each root world, kept beside its log in the same
//! write transaction as each appended tick (core's `current` module says
//! what it holds): reads of a world's latest tick (`status`, `log
//! --limit`, `show`) then cost O(log n + answer), not a materialization.
//!
//! Tables (all keyed by world first, so a world's entries are one range):
//!
//! - `current_ticks`: `(world, component, block)` -> the ticks that set
//!   the component's current value of the live entities `block * 64 ..
//!   block * 64 + 63` holding it (a [`PointerBlock`]). Values are not
//!   stored twice: a read takes each value from the record of the tick
//!   that set it, decoding each such record once per read;
//! - `current_index`: `(world, index, key, entity)` of a chunk's first
//!   entry -> the chunk (a [`KeyChunk`]): the secondary keys of
//!   `autoresearch_core::current::facts` as `(key, entity)` pairs sorted
//!   and cut into chunks of at most 64, so that an entry costs a few
//!   bytes (front-coded keys), not a redb key of its own;
//! - `current_tally`: `world` -> postcard of the world's `Tally`;
//! - `current_at`: `world` -> the tick the three above are the state
//!   after. They are used only when it equals the world's head.
//!
//! A root world created by this build keeps them from tick 0. A world
//! that has no `current_at` entry at its head (a fork, a world of a
//! ledger written before this table existed, one appended to by an
//! older build, one whose lifecycle component did not decode) keeps none
//! from then on, and its reads fall back to materializing: never a stale
//! or partial answer. The tables are created by the first write
//! transaction of this build; a read-only open of an older file finds
//! none and falls back the same way. (File format 3 kept every value in
//! a `current_values` table; the upgrade to format 4 drops it and the
//! other current-state tables, so those worlds fall back.)

use crate::encoding::{self, RECORDS};
use crate::{EncodedAppend, Failure, load_world};
use autoresearch_core::current::{
    self, CurrentAnswer, CurrentRead, CurrentView, Facts, INPUTS, Tally,
};
use autoresearch_core::{Change, EntityId, Tick, WorldId, WorldInfo};
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;

/// `(world, component, block)` -> a [`PointerBlock`]: the tick that set
/// each current value of the block's entities.
pub(crate) const TICKS: TableDefinition<(u64, &str, u64), &[u8]> =
    TableDefinition::new("current_ticks");
/// The table of file format 3 that held every current value a second
/// time; dropped by the upgrade to format 4.
pub(crate) const OLD_VALUES: TableDefinition<(u64, &str, u64), &[u8]> =
    TableDefinition::new("current_values");
/// `(world, index, first key, first entity)` -> a [`KeyChunk`].
pub(crate) const INDEX: TableDefinition<(u64, &str, &str, u64), &[u8]> =
    TableDefinition::new("current_index");
/// Format 3's secondary keys, one redb key each; dropped by the upgrade.
pub(crate) const OLD_KEYS: TableDefinition<(u64, &str, &str, u64), ()> =
    TableDefinition::new("current_keys");

/// Entries per `current_index` chunk at most.
const CHUNK: usize = 64;

/// The version tag that starts a `current_index` value. Then, for each
/// `(key, entity)` of the chunk, ascending: the length of the prefix it
/// shares with the previous key, the length of the rest and the rest
/// (LEB128, LEB128, UTF-8), then the entity (LEB128), as the difference
/// from the previous entity when the key is the previous one. A value of
/// another version or that does not parse is not read (as pointers).
const CHUNK_VERSION: u8 = 1;

/// A decoded `current_index` value: `(key, entity)` ascending.
type KeyChunk = Vec<(String, u64)>;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0u32);
    loop {
        let (&byte, after) = rest.split_first()?;
        *rest = after;
        if shift > 63 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
}

fn encode_chunk(chunk: &[(String, u64)]) -> Vec<u8> {
    let mut out = vec![CHUNK_VERSION];
    let mut prev: Option<&(String, u64)> = None;
    for entry in chunk {
        let (key, e) = entry;
        let shared = prev.map_or(0, |(p, _)| {
            p.bytes()
                .zip(key.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        });
        put_varint(&mut out, shared as u64);
        put_varint(&mut out, (key.len() - shared) as u64);
        out.extend_from_slice(&key.as_bytes()[shared..]);
        match prev {
            Some((p, pe)) if p == key => put_varint(&mut out, e - pe),
            _ => put_varint(&mut out, *e),
        }
        prev = Some(entry);
    }
    out
}

fn decode_chunk(bytes: &[u8]) -> Option<KeyChunk> {
    let (&CHUNK_VERSION, mut rest) = bytes.split_first()? else {
        return None;
    };
    let mut out: KeyChunk = Vec::new();
    while !rest.is_empty() {
        let shared = usize::try_from(take_varint(&mut rest)?).ok()?;
        let len = usize::try_from(take_varint(&mut rest)?).ok()?;
        let prev = out.last().map_or("", |(k, _)| k.as_str());
        if shared > prev.len() || len > rest.len() {
            return None;
        }
        let mut key = prev.as_bytes()[..shared].to_vec();
        key.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
        let key = String::from_utf8(key).ok()?;
        let v = take_varint(&mut rest)?;
        let e = match out.last() {
            Some((p, pe)) if *p == key => pe.checked_add(v)?,
            _ => v,
        };
        if out
            .last()
            .is_some_and(|(p, pe)| (p.as_str(), *pe) >= (key.as_str(), e))
        {
            return None;
        }
        out.push((key, e));
    }
    Some(out)
}

/// One change to the secondary keys: `(index, key, entity, added)`.
type KeyOp = (&'static str, String, u64, bool);

/// The chunk of `index` that holds (or would hold) `(key, entity)`:
/// its first entry and entries; `None` before the index's first chunk.
/// `Err(None)` when it does not decode.
#[expect(clippy::type_complexity, reason = "a private helper's tuple")]
fn chunk_at(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
    entity: u64,
) -> Result<Result<Option<((String, u64), KeyChunk)>, ()>, Failure> {
    let found = table
        .range::<(u64, &str, &str, u64)>((w, index, "", 0)..=(w, index, key, entity))?
        .next_back();
    let Some(entry) = found else {
        return Ok(Ok(None));
    };
    let (k, v) = entry?;
    let (_, _, first, fe) = k.value();
    Ok(match decode_chunk(v.value()) {
        Some(c) => Ok(Some(((first.to_string(), fe), c))),
        None => Err(()),
    })
}

/// The first entry of `index`'s first chunk after `(key, entity)`.
fn next_chunk(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
    entity: u64,
) -> Result<Option<(String, u64)>, Failure> {
    let next = table
        .range::<(u64, &str, &str, u64)>((
            Bound::Excluded((w, index, key, entity)),
            Bound::Unbounded,
        ))?
        .next();
    Ok(match next {
        Some(entry) => {
            let (k, _) = entry?;
            let (kw, ki, kk, ke) = k.value();
            (kw == w && ki == index).then(|| (kk.to_string(), ke))
        }
        None => None,
    })
}

/// Applies `ops` (sorted by index, key, entity; one per entry) to world
/// `w`'s chunks: each chunk they fall in is read, changed and written back
/// once, cut into chunks of at most [`CHUNK`].
fn apply_keys(
    table: &mut Table<'_, (u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    ops: &[KeyOp],
) -> Result<(), Stop> {
    let mut i = 0;
    while i < ops.len() {
        let (index, key, entity, _) = &ops[i];
        let (start, mut entries) = match chunk_at(table, w, index, key, *entity)? {
            Ok(Some((start, c))) => (Some(start), c),
            Ok(None) => (None, Vec::new()),
            Err(()) => return Err(Stop::Facts),
        };
        let end = next_chunk(table, w, index, key, *entity)?;
        let mut j = i;
        while j < ops.len() {
            let (oi, ok, oe, add) = &ops[j];
            if oi != index || end.as_ref().is_some_and(|(k, e)| (ok, *oe) >= (k, *e)) {
                break;
            }
            let probe = (ok.clone(), *oe);
            match (entries.binary_search(&probe), add) {
                (Err(at), true) => entries.insert(at, probe),
                (Ok(at), false) => {
                    entries.remove(at);
                }
                _ => {}
            }
            j += 1;
        }
        if let Some((k, e)) = &start {
            table.remove((w, *index, k.as_str(), *e))?;
        }
        for piece in entries.chunks(CHUNK) {
            let (k, e) = &piece[0];
            table.insert((w, *index, k.as_str(), *e), encode_chunk(piece).as_slice())?;
        }
        i = j;
    }
    Ok(())
}
/// `world` -> the world's tally (postcard).
pub(crate) const TALLY: TableDefinition<u64, &[u8]> = TableDefinition::new("current_tally");
/// The version tag that starts a `current_tally` value (then the
/// postcard of core's `Tally`). A value of another version is not read:
/// the world's reads fall back to materializing, and a writer stops
/// keeping its current state.
const TALLY_VERSION: u8 = 1;

fn encode_tally(t: &Tally) -> Option<Vec<u8>> {
    postcard::to_extend(t, vec![TALLY_VERSION]).ok()
}

fn decode_tally(bytes: &[u8]) -> Option<Tally> {
    match bytes.split_first() {
        Some((&TALLY_VERSION, body)) => postcard::from_bytes(body).ok(),
        _ => None,
    }
}

/// `world` -> the tick the current state is at.
pub(crate) const AT: TableDefinition<u64, u64> = TableDefinition::new("current_at");

/// Entities per `current_ticks` entry.
const BLOCK: u64 = 64;

/// The version tag that starts a `current_ticks` value. Then, for each
/// entity of the block holding the component, ascending: its offset in
/// the block (one byte, `entity - block * 64`) and the tick that set its
/// value (LEB128). A value of another version, or one that does not
/// parse, is not read: reads fall back to materializing and a writer
/// stops keeping the world's current state.
const POINTER_VERSION: u8 = 1;

/// A decoded `current_ticks` value: `(offset, tick)`, ascending offsets.
type PointerBlock = Vec<(u8, u64)>;

fn encode_block(block: &PointerBlock) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + block.len() * 3);
    out.push(POINTER_VERSION);
    for &(offset, mut tick) in block {
        out.push(offset);
        loop {
            let byte = (tick & 0x7f) as u8;
            tick >>= 7;
            if tick == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

fn decode_block(bytes: &[u8]) -> Option<PointerBlock> {
    let (&POINTER_VERSION, mut rest) = bytes.split_first()? else {
        return None;
    };
    let mut out = Vec::new();
    while let Some((&offset, after)) = rest.split_first() {
        if offset as u64 >= BLOCK || out.last().is_some_and(|(o, _)| *o >= offset) {
            return None;
        }
        let (mut tick, mut shift) = (0u64, 0u32);
        rest = after;
        loop {
            let (&byte, after) = rest.split_first()?;
            rest = after;
            if shift > 63 {
                return None;
            }
            tick |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        out.push((offset, tick));
    }
    Some(out)
}

fn slot(e: u64) -> (u64, u8) {
    (e / BLOCK, (e % BLOCK) as u8)
}

/// The lifecycle components ([`INPUTS`]) each recently read record set,
/// by `(world, tick)`, kept by the writer thread across transactions: an
/// update of runs ingested in one large tick then decodes that tick once,
/// not once per update. A stored record never changes (world ids are
/// never reused); the writer clears the cache when a transaction fails,
/// as it may hold records of that transaction.
#[derive(Default)]
pub(crate) struct InputCache {
    ticks: HashMap<(u64, u64), TickInputs>,
    bytes: usize,
}

/// The lifecycle values one record set: `(component, entity)` -> value.
type TickInputs = HashMap<(&'static str, u64), Vec<u8>>;

/// Values by `(component, entity)`.
type Values = HashMap<(String, u64), Vec<u8>>;

/// One entry of a `current_ticks` range.
type TicksEntry<'a> = (
    redb::AccessGuard<'a, (u64, &'static str, u64)>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// The most bytes of values an [`InputCache`] keeps; past it, it starts
/// over.
const INPUT_CACHE_BYTES: usize = 64 << 20;

impl InputCache {
    /// Forgets every record.
    pub(crate) fn clear(&mut self) {
        self.ticks.clear();
        self.bytes = 0;
    }

    /// The lifecycle values tick `tick` of world `w` set, read and decoded
    /// when not cached. `None` when the record is missing or does not
    /// decode.
    fn tick(
        &mut self,
        records: &Table<'_, (u64, u64), &'static [u8]>,
        w: u64,
        tick: u64,
    ) -> Result<Option<&TickInputs>, Failure> {
        if !self.ticks.contains_key(&(w, tick)) {
            let Some(bytes) = records.get((w, tick))? else {
                return Ok(None);
            };
            let mut values = HashMap::new();
            let mut size = 0;
            let decoded = encoding::record_sets(bytes.value(), |e, c, v| {
                if let Some(name) = input_name(c) {
                    size += v.len() + 32;
                    values.insert((name, e.0), v.to_vec());
                }
            });
            if decoded.is_err() {
                return Ok(None);
            }
            if self.bytes + size > INPUT_CACHE_BYTES {
                self.clear();
            }
            self.bytes += size;
            self.ticks.insert((w, tick), values);
        }
        Ok(self.ticks.get(&(w, tick)))
    }
}

/// The current-state tables inside a write transaction.
pub(crate) struct CurrentTables<'t> {
    inputs: &'t mut InputCache,
    ticks: Table<'t, (u64, &'static str, u64), &'static [u8]>,
    index: Table<'t, (u64, &'static str, &'static str, u64), &'static [u8]>,
    tally: Table<'t, u64, &'static [u8]>,
    at: Table<'t, u64, u64>,
}

impl<'t> CurrentTables<'t> {
    /// Opens (creating when missing) the tables.
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        inputs: &'t mut InputCache,
    ) -> Result<CurrentTables<'t>, Failure> {
        Ok(CurrentTables {
            inputs,
            ticks: txn.open_table(TICKS)?,
            index: txn.open_table(INDEX)?,
            tally: txn.open_table(TALLY)?,
            at: txn.open_table(AT)?,
        })
    }

    /// Deletes every entry of world `w`.
    pub(crate) fn delete(&mut self, w: u64) -> Result<(), Failure> {
        self.ticks
            .retain_in((w, "", 0)..(w + 1, "", 0), |_, _| false)?;
        self.index
            .retain_in((w, "", "", 0)..(w + 1, "", "", 0), |_, _| false)?;
        self.tally.remove(w)?;
        self.at.remove(w)?;
        Ok(())
    }
}

/// Why an update stopped.
enum Stop {
    /// A lifecycle component or a pointer did not decode: stop keeping
    /// this world's state.
    Facts,
    /// redb failed: the whole transaction aborts.
    Db(Failure),
}

impl<E: Into<Failure>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Db(e.into())
    }
}

/// A touched entity's lifecycle components, as loaded before the batch and
/// changed by it, and its facts before the batch.
struct Touched {
    before: Facts,
    inputs: HashMap<&'static str, Option<Vec<u8>>>,
}

/// Whether `info`'s world keeps a current state at its head (before an append).
fn kept_at_head(at: Option<u64>, info: &WorldInfo) -> bool {
    match at {
        Some(t) => t == info.head.0,
        None => info.parent.is_none() && info.head == Tick::ZERO,
    }
}

/// Applies `appends` (already checked, about to be stored) to `info`'s
/// world's current state, when it keeps one. `info` is the catalogue entry
/// before the append; `records` holds every tick up to its head.
pub(crate) fn maintain(
    t: &mut CurrentTables<'_>,
    records: &Table<'_, (u64, u64), &'static [u8]>,
    info: &WorldInfo,
    appends: &[EncodedAppend],
) -> Result<(), Failure> {
    let Some(last) = appends.last() else {
        return Ok(());
    };
    let w = info.id.0;
    let at = t.at.get(w)?.map(|v| v.value());
    if !kept_at_head(at, info) {
        if at.is_some() {
            t.at.remove(w)?;
        }
        return Ok(());
    }
    match update(t, records, w, appends) {
        Ok(()) => {
            t.at.insert(w, last.tick.0)?;
            Ok(())
        }
        Err(Stop::Facts) => {
            t.at.remove(w)?;
            Ok(())
        }
        Err(Stop::Db(f)) => Err(f),
    }
}

fn input_name(component: &str) -> Option<&'static str> {
    INPUTS.iter().copied().find(|n| *n == component)
}

/// The pointer blocks of one world read (and, in a writer, changed) so
/// far: each decoded once.
struct Blocks {
    w: u64,
    cached: HashMap<(String, u64), (PointerBlock, bool)>,
}

impl Blocks {
    fn new(w: u64) -> Blocks {
        Blocks {
            w,
            cached: HashMap::new(),
        }
    }

    /// The block of `component` holding entity slot `block`; `None` when
    /// a stored block does not decode.
    fn block(
        &mut self,
        table: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
        component: &str,
        block: u64,
    ) -> Result<Option<&mut (PointerBlock, bool)>, Failure> {
        let key = (component.to_string(), block);
        if !self.cached.contains_key(&key) {
            let stored = match table.get((self.w, component, block))? {
                Some(v) => match decode_block(v.value()) {
                    Some(b) => b,
                    None => return Ok(None),
                },
                None => Vec::new(),
            };
            self.cached.insert(key.clone(), (stored, false));
        }
        Ok(self.cached.get_mut(&key))
    }

    /// The tick that set `entity`'s `component`, if it holds one.
    fn tick_of(
        &mut self,
        table: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
        component: &str,
        entity: u64,
    ) -> Result<Option<Option<u64>>, Failure> {
        let (block, offset) = slot(entity);
        Ok(self.block(table, component, block)?.map(|(b, _)| {
            b.binary_search_by_key(&offset, |(o, _)| *o)
                .ok()
                .map(|i| b[i].1)
        }))
    }

    /// Points `entity`'s `component` at `tick` (`None`: it holds none).
    fn set(
        &mut self,
        table: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
        component: &str,
        entity: u64,
        tick: Option<u64>,
    ) -> Result<(), Stop> {
        let (block, offset) = slot(entity);
        let (b, dirty) = self.block(table, component, block)?.ok_or(Stop::Facts)?;
        match (b.binary_search_by_key(&offset, |(o, _)| *o), tick) {
            (Ok(i), Some(t)) => b[i].1 = t,
            (Err(i), Some(t)) => b.insert(i, (offset, t)),
            (Ok(i), None) => {
                b.remove(i);
            }
            (Err(_), None) => return Ok(()),
        }
        *dirty = true;
        Ok(())
    }

    /// Stores the changed blocks.
    fn write(
        self,
        table: &mut Table<'_, (u64, &'static str, u64), &'static [u8]>,
    ) -> Result<(), Failure> {
        for ((component, block), (b, dirty)) in self.cached {
            if !dirty {
                continue;
            }
            if b.is_empty() {
                table.remove((self.w, component.as_str(), block))?;
            } else {
                table.insert(
                    (self.w, component.as_str(), block),
                    encode_block(&b).as_slice(),
                )?;
            }
        }
        Ok(())
    }
}

/// The values of `wanted` (`(component, entity)` -> the tick whose record
/// set it), each record read and decoded once. `None` when a record does
/// not hold a value it is pointed at for (the index is damaged).
fn fetch(
    records: &impl ReadableTable<(u64, u64), &'static [u8]>,
    w: u64,
    wanted: &HashMap<(String, u64), u64>,
) -> Result<Option<Values>, Failure> {
    let mut by_tick: HashMap<u64, HashSet<(&str, u64)>> = HashMap::new();
    for ((c, e), tick) in wanted {
        by_tick.entry(*tick).or_default().insert((c.as_str(), *e));
    }
    let mut ticks: Vec<u64> = by_tick.keys().copied().collect();
    ticks.sort_unstable();
    let mut out = HashMap::with_capacity(wanted.len());
    for tick in ticks {
        let want = &by_tick[&tick];
        let Some(bytes) = records.get((w, tick))? else {
            return Ok(None);
        };
        let decoded = encoding::record_sets(bytes.value(), |e, c, v| {
            if want.contains(&(c, e.0)) {
                out.insert((c.to_string(), e.0), v.to_vec());
            }
        });
        if decoded.is_err() {
            return Ok(None);
        }
    }
    Ok((out.len() == wanted.len()).then_some(out))
}

/// The component names world `w` holds any value of (a skip scan: one
/// range look-up per name).
fn component_names(
    ticks: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
    w: u64,
) -> Result<Vec<String>, Failure> {
    let mut names: Vec<String> = Vec::new();
    loop {
        let next = match names.last() {
            None => ticks.range((w, "", 0)..(w + 1, "", 0))?.next(),
            Some(last) => ticks
                .range::<(u64, &str, u64)>((
                    Bound::Excluded((w, last.as_str(), u64::MAX)),
                    Bound::Excluded((w + 1, "", 0)),
                ))?
                .next(),
        };
        match next {
            Some(entry) => {
                let (k, _) = entry?;
                names.push(k.value().1.to_string());
            }
            None => return Ok(names),
        }
    }
}

/// The lifecycle components (before the batch) of each of `entities`.
fn load_inputs(
    t: &mut CurrentTables<'_>,
    records: &Table<'_, (u64, u64), &'static [u8]>,
    blocks: &mut Blocks,
    entities: &BTreeSet<u64>,
) -> Result<HashMap<u64, Touched>, Stop> {
    let mut wanted = HashMap::new();
    for &e in entities {
        for name in INPUTS {
            match blocks.tick_of(&t.ticks, name, e)? {
                Some(Some(tick)) => {
                    wanted.insert((name.to_string(), e), tick);
                }
                Some(None) => {}
                None => return Err(Stop::Facts),
            }
        }
    }
    let mut out = HashMap::with_capacity(entities.len());
    for &e in entities {
        let mut inputs = HashMap::new();
        for name in INPUTS {
            let Some(&tick) = wanted.get(&(name.to_string(), e)) else {
                continue;
            };
            let values = t.inputs.tick(records, blocks.w, tick)?.ok_or(Stop::Facts)?;
            // A pointer to a tick that did not set the value: damaged.
            let v = values.get(&(name, e)).ok_or(Stop::Facts)?;
            inputs.insert(name, Some(v.clone()));
        }
        let before = current::facts(|n| inputs.get(n).and_then(|v| v.as_deref()))
            .map_err(|_| Stop::Facts)?;
        out.insert(e, Touched { before, inputs });
    }
    Ok(out)
}

fn update(
    t: &mut CurrentTables<'_>,
    records: &Table<'_, (u64, u64), &'static [u8]>,
    w: u64,
    appends: &[EncodedAppend],
) -> Result<(), Stop> {
    let mut blocks = Blocks::new(w);
    // Entities whose lifecycle components the batch changes and that it
    // did not spawn first: their facts before the batch are loaded (from
    // the records their values are in) before anything changes.
    let mut first_is_spawn: HashMap<u64, bool> = HashMap::new();
    let mut load = BTreeSet::new();
    for a in appends {
        for change in &a.changes_full {
            let e = change.entity().0;
            let spawned = *first_is_spawn
                .entry(e)
                .or_insert(matches!(change, Change::Spawn { .. }));
            let lifecycle = match change {
                Change::Spawn { .. } => false,
                Change::Set { component, .. } | Change::Remove { component, .. } => {
                    input_name(component).is_some()
                }
                Change::Despawn { .. } => true,
            };
            if lifecycle && !spawned {
                load.insert(e);
            }
        }
    }
    let mut loaded = load_inputs(t, records, &mut blocks, &load)?;
    let mut touched: HashMap<u64, Touched> = HashMap::new();
    fn touch<'m>(
        touched: &'m mut HashMap<u64, Touched>,
        loaded: &mut HashMap<u64, Touched>,
        e: u64,
    ) -> &'m mut Touched {
        touched.entry(e).or_insert_with(|| {
            loaded.remove(&e).unwrap_or(Touched {
                before: Facts::default(),
                inputs: HashMap::new(),
            })
        })
    }
    for a in appends {
        let tick = a.tick.0;
        for change in &a.changes_full {
            match change {
                Change::Spawn { entity } => {
                    touch(&mut touched, &mut loaded, entity.0);
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } => {
                    if let Some(name) = input_name(component) {
                        touch(&mut touched, &mut loaded, entity.0)
                            .inputs
                            .insert(name, Some(value.clone()));
                    }
                    blocks.set(&t.ticks, component, entity.0, Some(tick))?;
                }
                Change::Remove { entity, component } => {
                    if let Some(name) = input_name(component) {
                        touch(&mut touched, &mut loaded, entity.0)
                            .inputs
                            .insert(name, None);
                    }
                    blocks.set(&t.ticks, component, entity.0, None)?;
                }
                Change::Despawn { entity } => {
                    touch(&mut touched, &mut loaded, entity.0).inputs.clear();
                    let mut names: BTreeSet<String> =
                        component_names(&t.ticks, w)?.into_iter().collect();
                    names.extend(blocks.cached.keys().map(|(c, _)| c.clone()));
                    for name in names {
                        blocks.set(&t.ticks, &name, entity.0, None)?;
                    }
                }
            }
        }
    }
    blocks.write(&mut t.ticks)?;
    // Entities only spawned, or changed in other components, have the
    // facts they had.
    touched.retain(|_, touch| !touch.inputs.is_empty() || touch.before != Facts::default());
    if touched.is_empty() {
        return Ok(());
    }
    let mut tally: Tally = match t.tally.get(w)? {
        Some(v) => decode_tally(v.value()).ok_or(Stop::Facts)?,
        None => Tally::default(),
    };
    let mut ops: Vec<KeyOp> = Vec::new();
    for (e, touch) in touched {
        let after = current::facts(|n| touch.inputs.get(n).and_then(|v| v.as_deref()))
            .map_err(|_| Stop::Facts)?;
        if after == touch.before {
            continue;
        }
        let old: BTreeSet<(&'static str, &str)> = touch
            .before
            .keys
            .iter()
            .map(|(i, k)| (*i, k.as_str()))
            .collect();
        let new: BTreeSet<(&'static str, &str)> =
            after.keys.iter().map(|(i, k)| (*i, k.as_str())).collect();
        for (i, k) in old.difference(&new) {
            ops.push((i, k.to_string(), e, false));
        }
        for (i, k) in new.difference(&old) {
            ops.push((i, k.to_string(), e, true));
        }
        tally.sub(&touch.before);
        tally.add(&after);
    }
    ops.sort_unstable_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    apply_keys(&mut t.index, w, &ops)?;
    let bytes = encode_tally(&tally).ok_or(Stop::Facts)?;
    t.tally.insert(w, bytes.as_slice())?;
    Ok(())
}

/// The entries of `index` whose key is `key` (starts with it, when
/// `prefix`), ascending; at most `limit` unless `prefix`. `None` when a
/// chunk does not decode.
fn keyed_forward(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
    prefix: bool,
    limit: usize,
) -> Result<Option<Vec<(String, EntityId)>>, Failure> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(Some(out));
    }
    // The chunk that holds the first key at or after `key` may start
    // before it.
    let start = match table
        .range::<(u64, &str, &str, u64)>((w, index, "", 0)..=(w, index, key, 0))?
        .next_back()
    {
        Some(entry) => {
            let (k, _) = entry?;
            let (_, _, first, fe) = k.value();
            (first.to_string(), fe)
        }
        None => (key.to_string(), 0),
    };
    let range = table.range::<(u64, &str, &str, u64)>((
        Bound::Included((w, index, start.0.as_str(), start.1)),
        Bound::Unbounded,
    ))?;
    for entry in range {
        let (k, v) = entry?;
        let (kw, ki, _, _) = k.value();
        if kw != w || ki != index {
            break;
        }
        let Some(chunk) = decode_chunk(v.value()) else {
            return Ok(None);
        };
        for (ck, ce) in chunk {
            if ck.as_str() < key {
                continue;
            }
            let hit = if prefix {
                ck.starts_with(key)
            } else {
                ck == key
            };
            // Sorted: past the first miss, nothing matches.
            if !hit {
                return Ok(Some(out));
            }
            out.push((ck, EntityId(ce)));
            if !prefix && out.len() >= limit {
                return Ok(Some(out));
            }
        }
    }
    Ok(Some(out))
}

/// The entries of `index` whose key is `key`, newest (highest entity)
/// first, at most `limit`: read backwards from the chunk holding the
/// last. `None` when a chunk does not decode.
fn keyed_newest(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    w: u64,
    index: &str,
    key: &str,
    limit: usize,
) -> Result<Option<Vec<(String, EntityId)>>, Failure> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(Some(out));
    }
    let range = table
        .range::<(u64, &str, &str, u64)>((w, index, "", 0)..=(w, index, key, u64::MAX))?
        .rev();
    for entry in range {
        let (_, v) = entry?;
        let Some(chunk) = decode_chunk(v.value()) else {
            return Ok(None);
        };
        for (ck, ce) in chunk.into_iter().rev() {
            match ck.as_str().cmp(key) {
                std::cmp::Ordering::Greater => continue,
                std::cmp::Ordering::Less => return Ok(Some(out)),
                std::cmp::Ordering::Equal => {}
            }
            out.push((ck, EntityId(ce)));
            if out.len() >= limit {
                return Ok(Some(out));
            }
        }
    }
    Ok(Some(out))
}

/// A table of a read transaction, `None` when the file has none yet.
fn open<T>(r: Result<T, redb::TableError>) -> Result<Option<T>, Failure> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(Failure::from(e)),
    }
}

/// How one read is answered, before the values are fetched.
enum Plan {
    /// `(entity, tick that set it)` of one component, in answer order.
    Values(String, Vec<(u64, u64)>),
    Done(CurrentAnswer),
}

/// Answers `reads` for `world` from its current state, in the read
/// transaction `txn`: `None` when it keeps none at its head (or a part of
/// it does not decode). Each record that holds an answered value is read
/// and decoded once.
pub(crate) fn read(
    txn: &ReadTransaction,
    world: WorldId,
    reads: &[CurrentRead],
) -> Result<Option<CurrentView>, Failure> {
    let worlds = txn.open_table(encoding::WORLDS)?;
    let info = load_world(&worlds, world)?;
    let (Some(at), Some(ticks), Some(index_table), Some(tally)) = (
        open(txn.open_table(AT))?,
        open(txn.open_table(TICKS))?,
        open(txn.open_table(INDEX))?,
        open(txn.open_table(TALLY))?,
    ) else {
        return Ok(None);
    };
    let w = world.0;
    let at_tick = at.get(w)?.map(|v| v.value());
    if !kept_at_head(at_tick, &info) {
        return Ok(None);
    }
    let mut blocks = Blocks::new(w);
    let mut plans = Vec::with_capacity(reads.len());
    for read in reads {
        plans.push(match read {
            CurrentRead::Values {
                component,
                newest_first,
                before,
                limit,
            } => {
                let c = component.as_str();
                let limit = limit.unwrap_or(usize::MAX);
                let upper = match before {
                    Some(b) => Bound::Included((w, c, b.0.saturating_sub(1) / BLOCK)),
                    None => Bound::Included((w, c, u64::MAX)),
                };
                let range = ticks.range::<(u64, &str, u64)>((Bound::Included((w, c, 0)), upper))?;
                let mut out = Vec::new();
                let push = |entry: Result<_, redb::StorageError>,
                            out: &mut Vec<(u64, u64)>|
                 -> Result<Option<bool>, Failure> {
                    let (k, v): TicksEntry<'_> = entry?;
                    let block = k.value().2;
                    let Some(mut b) = decode_block(v.value()) else {
                        return Ok(None);
                    };
                    if *newest_first {
                        b.reverse();
                    }
                    for (offset, tick) in b {
                        let e = block * BLOCK + u64::from(offset);
                        if before.is_some_and(|x| e >= x.0) {
                            continue;
                        }
                        if out.len() >= limit {
                            return Ok(Some(false));
                        }
                        out.push((e, tick));
                    }
                    Ok(Some(out.len() < limit))
                };
                if limit > 0 && before.is_none_or(|b| b.0 > 0) {
                    let mut step =
                        |entry| -> Result<Option<bool>, Failure> { push(entry, &mut out) };
                    let go = if *newest_first {
                        let mut go = Some(true);
                        for entry in range.rev() {
                            go = step(entry)?;
                            if go != Some(true) {
                                break;
                            }
                        }
                        go
                    } else {
                        let mut go = Some(true);
                        for entry in range {
                            go = step(entry)?;
                            if go != Some(true) {
                                break;
                            }
                        }
                        go
                    };
                    if go.is_none() {
                        return Ok(None);
                    }
                }
                Plan::Values(component.clone(), out)
            }
            CurrentRead::Get {
                component,
                entities,
            } => {
                let mut out = Vec::with_capacity(entities.len());
                for e in entities {
                    match blocks.tick_of(&ticks, component, e.0)? {
                        Some(Some(tick)) => out.push((e.0, tick)),
                        Some(None) => {}
                        None => return Ok(None),
                    }
                }
                Plan::Values(component.clone(), out)
            }
            CurrentRead::Keyed {
                index,
                key,
                prefix,
                newest_first,
                limit,
            } => {
                let limit = limit.unwrap_or(usize::MAX);
                let found = if *newest_first && !*prefix {
                    keyed_newest(&index_table, w, index, key, limit)?
                } else {
                    keyed_forward(&index_table, w, index, key, *prefix, limit)?
                };
                let Some(mut out) = found else {
                    return Ok(None);
                };
                if *newest_first && *prefix {
                    out.reverse();
                }
                out.truncate(limit);
                Plan::Done(CurrentAnswer::Keys(out))
            }
            CurrentRead::Tally => Plan::Done(CurrentAnswer::Tally(match tally.get(w)? {
                Some(v) => match decode_tally(v.value()) {
                    Some(t) => t,
                    // Written by a newer build, or damaged: the caller
                    // materializes instead (which reports any damage).
                    None => return Ok(None),
                },
                None => Tally::default(),
            })),
        });
    }
    let mut wanted = HashMap::new();
    for plan in &plans {
        if let Plan::Values(c, slots) = plan {
            for (e, tick) in slots {
                wanted.insert((c.clone(), *e), *tick);
            }
        }
    }
    let values = if wanted.is_empty() {
        HashMap::new()
    } else {
        let records = txn.open_table(RECORDS)?;
        match fetch(&records, w, &wanted)? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
    let mut answers = Vec::with_capacity(plans.len());
    for plan in plans {
        answers.push(match plan {
            Plan::Done(a) => a,
            Plan::Values(c, slots) => {
                let mut out = Vec::with_capacity(slots.len());
                for (e, _) in slots {
                    // Present: `fetch` answers every wanted value or none.
                    let Some(v) = values.get(&(c.clone(), e)) else {
                        return Ok(None);
                    };
                    out.push((EntityId(e), v.clone()));
                }
                CurrentAnswer::Values(out)
            }
        });
    }
    Ok(Some(CurrentView {
        tick: info.head,
        answers,
    }))
}

/// The bytes of each current-state table the file has.
pub(crate) fn table_bytes(txn: &ReadTransaction) -> Result<Vec<crate::TableBytes>, Failure> {
    use redb::{ReadableTableMetadata, TableHandle};
    let mut out = Vec::new();
    let mut push = |name: &str, stats: Option<redb::TableStats>| {
        if let Some(stats) = stats {
            out.push(crate::TableBytes {
                name: name.to_string(),
                stored: stats.stored_bytes(),
                metadata: stats.metadata_bytes(),
                fragmented: stats.fragmented_bytes(),
            });
        }
    };
    push(
        TICKS.name(),
        open(txn.open_table(TICKS))?
            .map(|t| t.stats())
            .transpose()?,
    );
    push(
        INDEX.name(),
        open(txn.open_table(INDEX))?
            .map(|t| t.stats())
            .transpose()?,
    );
    push(
        TALLY.name(),
        open(txn.open_table(TALLY))?
            .map(|t| t.stats())
            .transpose()?,
    );
    push(
        AT.name(),
        open(txn.open_table(AT))?.map(|t| t.stats()).transpose()?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_blocks_round_trip_and_damage_is_refused() {
        let block: PointerBlock = vec![(0, 1), (5, 300), (63, u64::MAX)];
        let bytes = encode_block(&block);
        assert_eq!(bytes[0], POINTER_VERSION);
        assert_eq!(decode_block(&bytes), Some(block));
        assert_eq!(decode_block(&[POINTER_VERSION]), Some(Vec::new()));
        // Another version, a cut tick, an offset out of the block, and
        // offsets out of order are not read.
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(decode_block(&other), None);
        assert_eq!(decode_block(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_block(&[POINTER_VERSION, 64, 1]), None);
        assert_eq!(decode_block(&[POINTER_VERSION, 3, 1, 2, 1]), None);
        assert_eq!(decode_block(&[]), None);
    }

    #[test]
    fn key_chunks_round_trip_front_coded_and_damage_is_refused() {
        let chunk: KeyChunk = vec![
            ("".into(), 4),
            ("nanogpt".into(), 1),
            ("nanogpt".into(), 900),
            ("nanogpt-speedrun".into(), 2),
            ("r1".into(), 3),
            ("r10".into(), 0),
            ("é-run".into(), u64::MAX),
        ];
        let bytes = encode_chunk(&chunk);
        assert_eq!(bytes[0], CHUNK_VERSION);
        assert_eq!(decode_chunk(&bytes), Some(chunk.clone()));
        // A repeated key costs its entity only: far less than the text.
        let same: KeyChunk = (0..64).map(|e| ("nanogpt-speedrun".into(), e)).collect();
        assert!(encode_chunk(&same).len() < 64 * 4 + 20);
        assert_eq!(decode_chunk(&encode_chunk(&same)), Some(same));
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(decode_chunk(&other), None);
        assert_eq!(decode_chunk(&bytes[..bytes.len() - 1]), None);
        // Entries out of order (a repeated entry) are refused.
        let twice = [CHUNK_VERSION, 0, 1, b'a', 5, 1, 0, 0];
        assert_eq!(decode_chunk(&twice[..5]), Some(vec![("a".into(), 5)]));
        assert_eq!(decode_chunk(&twice), None);
        let down = [CHUNK_VERSION, 0, 1, b'b', 5, 0, 1, b'a', 6];
        assert_eq!(decode_chunk(&down), None);
    }
}
