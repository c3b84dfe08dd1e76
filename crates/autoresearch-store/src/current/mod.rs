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
//!
//! [`KeyChunk`]: codec::KeyChunk

mod codec;
mod keys;
mod read;

pub(crate) use read::{entities_with_key, kept_at, read, table_bytes};

use crate::encoding;
use crate::{EncodedAppend, Failure};
use autoresearch_core::current::{self, Facts, INPUTS, Tally};
use autoresearch_core::{Change, Tick, WorldInfo};
use codec::{PointerBlock, decode_block, decode_tally, encode_block, encode_tally, slot};
use keys::{KeyOp, apply_keys};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use std::collections::{BTreeSet, HashMap};
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
///
/// [`KeyChunk`]: codec::KeyChunk
pub(crate) const INDEX: TableDefinition<(u64, &str, &str, u64), &[u8]> =
    TableDefinition::new("current_index");
/// Format 3's secondary keys, one redb key each; dropped by the upgrade.
pub(crate) const OLD_KEYS: TableDefinition<(u64, &str, &str, u64), ()> =
    TableDefinition::new("current_keys");

/// `world` -> the world's tally (postcard).
pub(crate) const TALLY: TableDefinition<u64, &[u8]> = TableDefinition::new("current_tally");

/// `world` -> the tick the current state is at.
pub(crate) const AT: TableDefinition<u64, u64> = TableDefinition::new("current_at");

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

    /// The secondary-key table (`current_index`), for
    /// [`entities_with_key`] inside the writer's transaction.
    pub(crate) fn index(
        &self,
    ) -> &Table<'t, (u64, &'static str, &'static str, u64), &'static [u8]> {
        &self.index
    }

    /// The tick world `w`'s current state is at, `None` when it keeps none.
    pub(crate) fn at(&self, w: u64) -> Result<Option<u64>, Failure> {
        Ok(self.at.get(w)?.map(|v| v.value()))
    }

    /// The current value of lifecycle component `component` ([`INPUTS`])
    /// of `entity` in world `w`, taken from the record of the tick that
    /// set it (decoded once per writer, [`InputCache`]): `Some(None)`
    /// when it holds none. `None` when `component` is not an input, or a
    /// pointer or record is missing or does not decode. `records` must
    /// hold the tick that set it (a value set by the batch being appended
    /// is not stored yet: the caller has it).
    pub(crate) fn value(
        &mut self,
        records: &Table<'_, (u64, u64), &'static [u8]>,
        w: u64,
        component: &str,
        entity: u64,
    ) -> Result<Option<Option<Vec<u8>>>, Failure> {
        let Some(name) = input_name(component) else {
            return Ok(None);
        };
        let Some(tick) = Blocks::new(w).tick_of(&self.ticks, name, entity)? else {
            return Ok(None);
        };
        let Some(tick) = tick else {
            return Ok(Some(None));
        };
        let Some(values) = self.inputs.tick(records, w, tick)? else {
            return Ok(None);
        };
        Ok(values.get(&(name, entity)).map(|v| Some(v.clone())))
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
