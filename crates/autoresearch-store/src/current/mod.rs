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
//! - `current_pending`: `(world, tick)` -> the changes the ticks up to
//!   `tick` (since the entry before) made to the world's pointers and to
//!   its experiment-keyed secondary keys, not yet in the two tables above
//!   (the `pending` module): an update tick writes one small entry, not a
//!   B-tree leaf per changed entity; every few dozen ticks, and at once
//!   for a large tick (an ingest), they are folded into the main tables in
//!   key order. Reads apply them over the main tables. The `run_id`-keyed
//!   indexes (`run`, `result`, `vote`, `confirm`) are never pending, so
//!   [`ChunkMemo::entities_with_key`] reads them from `current_index` alone;
//! - `current_tally`: `world` -> postcard of the world's `Tally`;
//! - `current_head`: `world` -> the tick the four above are the state
//!   after. They are used only when it equals the world's head.
//!
//! A root world created by this build keeps them from tick 0. A world
//! that has no `current_head` entry at its head (a fork, a world of a
//! ledger written before these tables existed, one appended to by an
//! older build, one whose lifecycle component did not decode) keeps none
//! from then on, and its reads fall back to materializing: never a stale
//! or partial answer. The tables are created by the first write
//! transaction of this build; a read-only open of an older file finds
//! none and falls back the same way. A world kept by a build before
//! `current_pending` existed has its head in `current_at` (the main
//! tables are the same): it is read as kept, and its first append by this
//! build moves the entry to `current_head`; older builds never read
//! `current_head`, so they keep no state of a world this build appended
//! to. (File format 3 kept every value in a `current_values` table; the
//! upgrade to format 4 drops it and the other current-state tables, so
//! those worlds fall back.)
//!
//! [`KeyChunk`]: codec::KeyChunk

mod codec;
mod keys;
mod memo;
mod pending;
mod read;
mod update;

use update::update;
pub(crate) use update::{EntityMap, PARALLEL_FROM, both};

pub(crate) use memo::ChunkMemo;
#[cfg(test)]
pub(crate) use read::entities_with_key;
pub(crate) use read::{kept_at, read, table_bytes};

use crate::stored::ReadValue;
use crate::{EncodedAppend, Failure, Stop};
use autoresearch_core::current::{
    self, BY_RUN_ID, CONFIRMATION_OF, Facts, INPUTS, RESULT_OF, VOTE_ON,
};
use autoresearch_core::{Tick, WorldInfo};
use codec::{PointerBlock, decode_block, decode_state, encode_state, slot};
use pending::{Overlay, Pending};
use redb::{ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};
use std::collections::HashMap;

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
/// `(world, tick)` -> the pending changes of the ticks up to `tick` (the
/// postcard of an [`Overlay`] after a version byte).
pub(crate) const PENDING: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("current_pending");

/// `world` -> the world's tally (postcard), as builds before the state
/// row ([`STATE_KEY`]) kept it: read when a world has no state row.
pub(crate) const TALLY: TableDefinition<u64, &[u8]> = TableDefinition::new("current_tally");

/// The second key part of a world's state row in [`PENDING`]: `(world,
/// STATE_KEY)` -> the tick the current state is after and the world's
/// tally (`codec::encode_state`). It sorts after every pending entry of
/// the world, so the row shares their leaf page. Pending reads range over
/// `(world, 0)..(world, STATE_KEY)`.
pub(crate) const STATE_KEY: u64 = u64::MAX;

/// `world` -> the tick the current state is at, as builds before the
/// state row ([`STATE_KEY`]) kept it: read when a world has no state row.
pub(crate) const HEAD: TableDefinition<u64, u64> = TableDefinition::new("current_head");

/// `world` -> the tick the current state is at, as builds before
/// `current_pending` kept it (they had no pending changes): read as
/// [`HEAD`] when a world has no entry there.
pub(crate) const OLD_AT: TableDefinition<u64, u64> = TableDefinition::new("current_at");

/// The secondary keys written to `current_index` by every tick, never
/// pending: the `run_id`-keyed ones, which change when an entity is
/// spawned or despawned, not when a run changes status.
const NEVER_PENDING: [&str; 4] = [BY_RUN_ID, RESULT_OF, VOTE_ON, CONFIRMATION_OF];

/// What the writer thread keeps across transactions: each world's
/// pending changes decoded. The writer clears it when a transaction
/// fails, as it may hold pending changes of that transaction.
///
/// The lifecycle values an update needs come from the records that set
/// them, one value at a time ([`InputCache::value`]), through the
/// writer's memo of decoded records (`crate::stored::BaseMemo`): a record
/// is decoded once, its deltas are resolved only for the values read.
/// (This cache used to keep every lifecycle value of each record read,
/// resolving all of a record's deltas to read one of them, and started
/// over past 64 MiB: with eight worlds of 10,000 runs updated at random,
/// nearly every read missed and resolved a whole record, `bench ledger`'s
/// eight writers ran at 5,800 changes/s.)
#[derive(Default)]
pub(crate) struct InputCache {
    pending: HashMap<u64, Pending>,
}

impl InputCache {
    /// Forgets every pending change.
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    /// The value of lifecycle component `component` of `entity` that
    /// world `w`'s tick `tick` set. `None` when the record is missing,
    /// does not decode, or sets no such value (a damaged pointer): the
    /// caller stops keeping the world's state. Cost: a look-up in the
    /// writer's memo of decoded records (one decoding per record), and
    /// the chain of deltas of this one value.
    fn value(
        &mut self,
        records: &crate::stored::WriteValues<'_>,
        w: u64,
        tick: u64,
        component: &str,
        entity: u64,
    ) -> Result<Option<ReadValue>, Failure> {
        // The value tick `tick` set is the base `tick` of a (virtual)
        // delta one tick later.
        match records.value_shared(w, tick.saturating_add(1), entity, component, tick) {
            Ok(v) => Ok(Some(v)),
            Err(Failure::Storage(_)) => Ok(None),
            Err(db) => Err(db),
        }
    }
}

/// The current-state tables inside a write transaction.
pub(crate) struct CurrentTables<'t> {
    inputs: &'t mut InputCache,
    ticks: Table<'t, (u64, &'static str, u64), &'static [u8]>,
    index: Table<'t, (u64, &'static str, &'static str, u64), &'static [u8]>,
    pending: Table<'t, (u64, u64), &'static [u8]>,
    tally: Table<'t, u64, &'static [u8]>,
    head: Table<'t, u64, u64>,
    /// [`OLD_AT`], when the file has it.
    old_at: Option<Table<'t, u64, u64>>,
    /// The tally the batch being applied computed (a `current_tally`
    /// value), written into the world's state row by [`maintain`].
    new_tally: Option<Vec<u8>>,
    /// The Run each entity whose Run the batch being applied set held
    /// before it, where [`maintain`] loaded it (entities it did not
    /// spawn): what the series compares a changed Run with
    /// ([`CurrentTables::take_prior_runs`]).
    prior_runs: EntityMap<ReadValue>,
}

impl<'t> CurrentTables<'t> {
    /// Opens (creating when missing) the tables.
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        inputs: &'t mut InputCache,
    ) -> Result<CurrentTables<'t>, Failure> {
        let has_old_at = txn.list_tables()?.any(|t| t.name() == OLD_AT.name());
        Ok(CurrentTables {
            inputs,
            ticks: txn.open_table(TICKS)?,
            index: txn.open_table(INDEX)?,
            pending: txn.open_table(PENDING)?,
            tally: txn.open_table(TALLY)?,
            head: txn.open_table(HEAD)?,
            old_at: if has_old_at {
                Some(txn.open_table(OLD_AT)?)
            } else {
                None
            },
            new_tally: None,
            prior_runs: EntityMap::default(),
        })
    }

    /// The Runs held before the batch [`maintain`] just applied, by
    /// entity, of the entities whose Run it set and loaded (not those it
    /// spawned, nor those whose Run it removed first); empty when the
    /// world keeps no current state. Taken: a second call gives none.
    pub(crate) fn take_prior_runs(&mut self) -> EntityMap<ReadValue> {
        std::mem::take(&mut self.prior_runs)
    }

    /// The secondary-key table (`current_index`), for
    /// [`ChunkMemo::entities_with_key`] inside the writer's transaction.
    pub(crate) fn index(
        &self,
    ) -> &Table<'t, (u64, &'static str, &'static str, u64), &'static [u8]> {
        &self.index
    }

    /// The current value of lifecycle component `component` ([`INPUTS`])
    /// of `entity` in world `w`, taken from the record of the tick that
    /// set it (through the writer's memo of decoded records,
    /// [`InputCache::value`]): `Some(None)`
    /// when it holds none. `None` when `component` is not an input, or a
    /// pointer or record is missing or does not decode. `records` must
    /// hold the tick that set it (a value set by the batch being appended
    /// is not stored yet: the caller has it).
    pub(crate) fn value(
        &mut self,
        records: &crate::stored::WriteValues<'_>,
        w: u64,
        component: &str,
        entity: u64,
    ) -> Result<Option<Option<ReadValue>>, Failure> {
        let Some(name) = input_index(component).map(|i| INPUTS[i]) else {
            return Ok(None);
        };
        // The pointer may still be pending (an update tick's change not yet
        // folded into `current_ticks`).
        let Some(pending) = self.load_pending(w)? else {
            return Ok(None);
        };
        let none = Overlay::default();
        let found = pointer(
            &mut Blocks::new(w),
            &self.ticks,
            [&pending.overlay, &none],
            name,
            entity,
        );
        self.inputs.pending.insert(w, pending);
        let Some(tick) = found? else {
            return Ok(None);
        };
        let Some(tick) = tick else {
            return Ok(Some(None));
        };
        Ok(self.inputs.value(records, w, tick, name, entity)?.map(Some))
    }

    /// Deletes every entry of world `w`.
    pub(crate) fn delete(&mut self, w: u64) -> Result<(), Failure> {
        self.ticks
            .retain_in((w, "", 0)..(w + 1, "", 0), |_, _| false)?;
        self.index
            .retain_in((w, "", "", 0)..(w + 1, "", "", 0), |_, _| false)?;
        self.tally.remove(w)?;
        self.stop(w)
    }

    /// The tick world `w`'s current state is at, if it keeps one: its
    /// state row's, else (a world last appended to by an older build) its
    /// `current_head` or `current_at` entry. A state row that does not
    /// decode stands for no tick ([`u64::MAX`], never a head), so the
    /// world stops keeping its state.
    pub(crate) fn at(&self, w: u64) -> Result<Option<u64>, Failure> {
        if let Some(v) = self.pending.get((w, STATE_KEY))? {
            return Ok(Some(
                decode_state(v.value()).map_or(u64::MAX, |(head, _)| head),
            ));
        }
        if let Some(v) = self.head.get(w)? {
            return Ok(Some(v.value()));
        }
        Ok(match &self.old_at {
            Some(t) => t.get(w)?.map(|v| v.value()),
            None => None,
        })
    }

    /// World `w`'s tally as stored (a `current_tally` value): in its state
    /// row, else in `current_tally` (a world last appended to by an older
    /// build); `None` when it has none. A state row that does not decode
    /// gives an empty value, which does not decode as a tally either.
    pub(crate) fn stored_tally(&self, w: u64) -> Result<Option<Vec<u8>>, Failure> {
        if let Some(v) = self.pending.get((w, STATE_KEY))? {
            return Ok(Some(
                decode_state(v.value()).map_or_else(Vec::new, |(_, t)| t.to_vec()),
            ));
        }
        Ok(self.tally.get(w)?.map(|v| v.value().to_vec()))
    }

    /// Records that world `w`'s current state is after tick `head`: its
    /// state row (head and tally) in `current_pending`, beside the
    /// world's pending changes, so that an update tick rewrites one leaf
    /// page for all three; the entries an older build kept in
    /// `current_head`, `current_at` and `current_tally` go.
    fn set_head(&mut self, w: u64, head: u64) -> Result<(), Stop> {
        let tally = match self.new_tally.take() {
            Some(t) => t,
            None => match self.stored_tally(w)? {
                Some(t) => t,
                None => codec::encode_tally(&Default::default()).ok_or(Stop::Unkept)?,
            },
        };
        self.pending
            .insert((w, STATE_KEY), encode_state(head, &tally).as_slice())?;
        // Only when present: a remove of a missing key would still
        // rewrite the table's pages.
        if self.head.get(w)?.is_some() {
            self.head.remove(w)?;
        }
        if self.tally.get(w)?.is_some() {
            self.tally.remove(w)?;
        }
        if let Some(old) = &mut self.old_at
            && old.get(w)?.is_some()
        {
            old.remove(w)?;
        }
        Ok(())
    }

    /// Stops keeping world `w`'s current state: its state row, head entry
    /// and pending changes go (the main tables' entries are left; they
    /// are never read without a head).
    fn stop(&mut self, w: u64) -> Result<(), Failure> {
        self.head.remove(w)?;
        if let Some(t) = &mut self.old_at {
            t.remove(w)?;
        }
        self.pending
            .retain_in((w, 0)..=(w, u64::MAX), |_, _| false)?;
        self.inputs.pending.remove(&w);
        Ok(())
    }

    /// World `w`'s pending changes: from the writer's cache when it still
    /// matches the table, else read and decoded. `None` when an entry does
    /// not decode.
    fn load_pending(&mut self, w: u64) -> Result<Option<Pending>, Failure> {
        let first = match self.pending.range((w, 0)..(w, STATE_KEY))?.next() {
            Some(entry) => Some(entry?.0.value().1),
            None => None,
        };
        let last = match self.pending.range((w, 0)..(w, STATE_KEY))?.next_back() {
            Some(entry) => Some(entry?.0.value().1),
            None => None,
        };
        let ends = first.zip(last);
        if let Some(p) = self.inputs.pending.remove(&w)
            && p.ends == ends
        {
            return Ok(Some(p));
        }
        let mut p = Pending {
            ends,
            ..Pending::default()
        };
        if ends.is_some() {
            for entry in self.pending.range((w, 0)..(w, STATE_KEY))? {
                let (_, v) = entry?;
                let bytes = v.value();
                p.count += 1;
                p.bytes += bytes.len();
                match Overlay::decode(bytes) {
                    Some(o) => p.overlay.merge(o),
                    None => return Ok(None),
                }
            }
        }
        Ok(Some(p))
    }
}

/// The changes a `current_pending` value holds; `None` when it does not
/// decode.
#[cfg(test)]
pub(crate) fn pending_changes(bytes: &[u8]) -> Option<usize> {
    Overlay::decode(bytes).map(|o| o.len())
}

/// A touched entity's lifecycle values (by position in [`INPUTS`]), as
/// loaded before the batch and changed by it, and its facts before the
/// batch.
///
/// Small (about 160 bytes): an ingest holds one for each entity it
/// spawns, all at once; the facts before are boxed (none for an entity
/// spawned by the batch), as is a value read before the batch.
struct Touched<'a> {
    before: Option<Box<Facts>>,
    inputs: [Option<Input<'a>>; INPUTS.len()],
    /// Whether the batch set or removed one of them.
    changed: bool,
}

/// The facts of an entity that had none (spawned by the batch).
static NO_FACTS: Facts = Facts {
    keys: Vec::new(),
    attempt: None,
    cost: None,
};

/// A lifecycle value of a [`Touched`] entity: set by the batch (borrowed
/// from its changes), or read as it was before the batch.
enum Input<'a> {
    Batch(&'a [u8]),
    Stored(Box<ReadValue>),
}

impl std::ops::Deref for Input<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Batch(v) => v,
            Input::Stored(v) => v,
        }
    }
}

impl Touched<'_> {
    fn new() -> Self {
        Touched {
            before: None,
            inputs: Default::default(),
            changed: false,
        }
    }

    /// Its facts before the batch.
    fn before(&self) -> &Facts {
        self.before.as_deref().unwrap_or(&NO_FACTS)
    }

    fn facts(&self) -> Result<Facts, current::FactsError> {
        current::facts(|n| input_index(n).and_then(|i| self.inputs[i].as_deref()))
    }

    /// [`Touched::facts`], borrowing the values' text.
    fn facts_ref(&self) -> Result<current::FactsRef<'_>, current::FactsError> {
        current::facts_ref(|n| input_index(n).and_then(|i| self.inputs[i].as_deref()))
    }
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
    records: &crate::stored::WriteValues<'_>,
    info: &WorldInfo,
    appends: &[EncodedAppend],
) -> Result<(), Failure> {
    let Some(last) = appends.last() else {
        return Ok(());
    };
    let w = info.id.0;
    t.prior_runs.clear();
    let at = t.at(w)?;
    if !kept_at_head(at, info) {
        if at.is_some() {
            t.stop(w)?;
        }
        return Ok(());
    }
    let Some(mut pending) = t.load_pending(w)? else {
        return t.stop(w);
    };
    match update(t, records, w, appends, &mut pending).and_then(|()| t.set_head(w, last.tick.0)) {
        Ok(()) => {
            t.inputs.pending.insert(w, pending);
            Ok(())
        }
        Err(Stop::Unkept) => {
            t.prior_runs.clear();
            t.stop(w)
        }
        Err(Stop::Db(f)) => Err(f),
    }
}

/// The position of `component` in [`INPUTS`], if it is one.
fn input_index(component: &str) -> Option<usize> {
    INPUTS.iter().position(|n| *n == component)
}

/// The main table's pointer blocks of one world read so far, each
/// decoded once, by component.
struct Blocks {
    w: u64,
    /// By component name (a handful: foldhash, not SipHash).
    cached: HashMap<String, Component, foldhash::fast::FixedState>,
}

/// One component's blocks in [`Blocks`].
struct Component {
    /// Whether the main table holds any block of it.
    any: bool,
    blocks: EntityMap<PointerBlock>,
}

impl Blocks {
    fn new(w: u64) -> Blocks {
        Blocks {
            w,
            cached: HashMap::default(),
        }
    }

    /// Notes whether the main table holds any block of `component`: one
    /// range look-up tells a component the main table holds no block of
    /// (most lifecycle components of most worlds), and then no block of
    /// it is looked up.
    fn note_component(
        &mut self,
        table: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
        component: &str,
    ) -> Result<(), Failure> {
        if !self.cached.contains_key(component) {
            let any = table
                .range((self.w, component, 0)..=(self.w, component, u64::MAX))?
                .next()
                .is_some();
            self.cached.insert(
                component.to_string(),
                Component {
                    any,
                    blocks: EntityMap::default(),
                },
            );
        }
        Ok(())
    }

    /// Whether the main table holds a value of `component` for any entity.
    fn any(
        &mut self,
        table: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
        component: &str,
    ) -> Result<bool, Failure> {
        self.note_component(table, component)?;
        Ok(self.cached.get(component).is_some_and(|c| c.any))
    }

    /// The tick that set `entity`'s `component` in the main table, if it
    /// holds one there; `None` when the stored block does not decode.
    fn tick_of(
        &mut self,
        table: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
        component: &str,
        entity: u64,
    ) -> Result<Option<Option<u64>>, Failure> {
        let (block, offset) = slot(entity);
        let w = self.w;
        self.note_component(table, component)?;
        let Some(c) = self.cached.get_mut(component) else {
            return Ok(Some(None));
        };
        if !c.any {
            return Ok(Some(None));
        }
        let b = match c.blocks.entry(block) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let stored = match table.get((w, component, block))? {
                    Some(found) => match decode_block(found.value()) {
                        Some(b) => b,
                        None => return Ok(None),
                    },
                    None => Vec::new(),
                };
                v.insert(stored)
            }
        };
        Ok(Some(
            b.binary_search_by_key(&offset, |(o, _)| *o)
                .ok()
                .map(|i| b[i].1),
        ))
    }
}

/// The pointer of `entity`'s `component` as of now: the batch's own
/// changes (`delta`), then the pending ones, then the main table. `None`
/// when a main block does not decode.
fn pointer(
    blocks: &mut Blocks,
    table: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
    overlays: [&Overlay; 2],
    component: &str,
    entity: u64,
) -> Result<Option<Option<u64>>, Failure> {
    for o in overlays {
        if let Some(p) = o.pointer(component, entity) {
            return Ok(Some(p));
        }
    }
    blocks.tick_of(table, component, entity)
}

/// Rewrites world `w`'s state row as the layout before it kept one (file
/// format 6): its head in `current_head`, its tally in `current_tally`.
/// Returns the head. For tests of files written by older builds.
#[cfg(test)]
pub(crate) fn to_previous_layout(txn: &WriteTransaction, w: u64) -> u64 {
    let mut pending = txn.open_table(PENDING).unwrap();
    let row = pending.remove((w, STATE_KEY)).unwrap().unwrap();
    let (head, tally) = decode_state(row.value()).unwrap();
    txn.open_table(HEAD).unwrap().insert(w, head).unwrap();
    txn.open_table(TALLY).unwrap().insert(w, tally).unwrap();
    head
}

/// The head tick in a state row ([`STATE_KEY`]); `None` when it does not
/// decode. For tests.
#[cfg(test)]
pub(crate) fn state_head(row: &[u8]) -> Option<u64> {
    decode_state(row).map(|(head, _)| head)
}
