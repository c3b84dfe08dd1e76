//! The current state of each root world, kept beside its log in the same
//! write transaction as each appended tick (core's `current` module says
//! what it holds): reads of a world's latest tick (`status`, `log
//! --limit`, `show`) then cost O(log n + answer), not a materialization.
//!
//! Tables (all keyed by world first, so a world's entries are one range):
//!
//! - `current_values`: `(world, component, entity)` -> encoded value, for
//!   every live entity's every component;
//! - `current_keys`: `(world, index, key, entity)` -> `()`, the secondary
//!   keys of `autoresearch_core::current::facts`;
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
//! none and falls back the same way.

use crate::{EncodedAppend, Failure, load_world};
use autoresearch_core::current::{
    self, CurrentAnswer, CurrentRead, CurrentView, Facts, INPUTS, Tally,
};
use autoresearch_core::{Change, EntityId, Tick, WorldId, WorldInfo};
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

/// `(world, component, entity)` -> the component's encoded value.
pub(crate) const VALUES: TableDefinition<(u64, &str, u64), &[u8]> =
    TableDefinition::new("current_values");
/// `(world, index, key, entity)` -> nothing: secondary keys.
pub(crate) const KEYS: TableDefinition<(u64, &str, &str, u64), ()> =
    TableDefinition::new("current_keys");
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

/// The current-state tables inside a write transaction.
pub(crate) struct CurrentTables<'t> {
    values: Table<'t, (u64, &'static str, u64), &'static [u8]>,
    keys: Table<'t, (u64, &'static str, &'static str, u64), ()>,
    tally: Table<'t, u64, &'static [u8]>,
    at: Table<'t, u64, u64>,
}

impl<'t> CurrentTables<'t> {
    /// Opens (creating when missing) the tables.
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<CurrentTables<'t>, Failure> {
        Ok(CurrentTables {
            values: txn.open_table(VALUES)?,
            keys: txn.open_table(KEYS)?,
            tally: txn.open_table(TALLY)?,
            at: txn.open_table(AT)?,
        })
    }

    /// Deletes every entry of world `w`.
    pub(crate) fn delete(&mut self, w: u64) -> Result<(), Failure> {
        self.values
            .retain_in((w, "", 0)..(w + 1, "", 0), |_, _| false)?;
        self.keys
            .retain_in((w, "", "", 0)..(w + 1, "", "", 0), |_, _| false)?;
        self.tally.remove(w)?;
        self.at.remove(w)?;
        Ok(())
    }
}

/// Why an update stopped.
enum Stop {
    /// A lifecycle component did not decode: stop keeping this world's state.
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
/// before the append.
pub(crate) fn maintain(
    t: &mut CurrentTables<'_>,
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
    match update(t, w, appends) {
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

/// Loads `e`'s lifecycle components and facts, once per batch.
fn load<'m>(
    values: &Table<'_, (u64, &'static str, u64), &'static [u8]>,
    w: u64,
    e: u64,
    touched: &'m mut HashMap<u64, Touched>,
) -> Result<&'m mut Touched, Stop> {
    match touched.entry(e) {
        std::collections::hash_map::Entry::Occupied(slot) => Ok(slot.into_mut()),
        std::collections::hash_map::Entry::Vacant(slot) => {
            let mut inputs = HashMap::new();
            for name in INPUTS {
                let v = values.get((w, name, e))?.map(|g| g.value().to_vec());
                inputs.insert(name, v);
            }
            let before = current::facts(|n| inputs.get(n).and_then(|v| v.as_deref()))
                .map_err(|_| Stop::Facts)?;
            Ok(slot.insert(Touched { before, inputs }))
        }
    }
}

/// The component names world `w` holds any value of (a skip scan: one
/// range look-up per name).
fn component_names(
    values: &Table<'_, (u64, &'static str, u64), &'static [u8]>,
    w: u64,
) -> Result<Vec<String>, Failure> {
    let mut names: Vec<String> = Vec::new();
    loop {
        let next = match names.last() {
            None => values.range((w, "", 0)..(w + 1, "", 0))?.next(),
            Some(last) => values
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

fn update(t: &mut CurrentTables<'_>, w: u64, appends: &[EncodedAppend]) -> Result<(), Stop> {
    let mut touched: HashMap<u64, Touched> = HashMap::new();
    for a in appends {
        for change in &a.changes_full {
            match change {
                Change::Spawn { entity } => {
                    touched.insert(
                        entity.0,
                        Touched {
                            before: Facts::default(),
                            inputs: HashMap::new(),
                        },
                    );
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } => {
                    if let Some(name) = input_name(component) {
                        let e = load(&t.values, w, entity.0, &mut touched)?;
                        e.inputs.insert(name, Some(value.clone()));
                    }
                    t.values
                        .insert((w, component.as_str(), entity.0), value.as_slice())?;
                }
                Change::Remove { entity, component } => {
                    if let Some(name) = input_name(component) {
                        let e = load(&t.values, w, entity.0, &mut touched)?;
                        e.inputs.insert(name, None);
                    }
                    t.values.remove((w, component.as_str(), entity.0))?;
                }
                Change::Despawn { entity } => {
                    let e = load(&t.values, w, entity.0, &mut touched)?;
                    e.inputs.clear();
                    for name in component_names(&t.values, w)? {
                        t.values.remove((w, name.as_str(), entity.0))?;
                    }
                }
            }
        }
    }
    if touched.is_empty() {
        return Ok(());
    }
    let mut tally: Tally = match t.tally.get(w)? {
        Some(v) => decode_tally(v.value()).ok_or(Stop::Facts)?,
        None => Tally::default(),
    };
    for (e, touch) in touched {
        let after = current::facts(|n| touch.inputs.get(n).and_then(|v| v.as_deref()))
            .map_err(|_| Stop::Facts)?;
        if after == touch.before {
            continue;
        }
        let old: BTreeSet<(&str, &str)> = touch
            .before
            .keys
            .iter()
            .map(|(i, k)| (*i, k.as_str()))
            .collect();
        let new: BTreeSet<(&str, &str)> =
            after.keys.iter().map(|(i, k)| (*i, k.as_str())).collect();
        for (i, k) in old.difference(&new) {
            t.keys.remove((w, *i, *k, e))?;
        }
        for (i, k) in new.difference(&old) {
            t.keys.insert((w, *i, *k, e), ())?;
        }
        tally.sub(&touch.before);
        tally.add(&after);
    }
    let bytes = encode_tally(&tally).ok_or(Stop::Facts)?;
    t.tally.insert(w, bytes.as_slice())?;
    Ok(())
}

/// One entry of a `current_values` range.
type ValueEntry<'a> = (
    redb::AccessGuard<'a, (u64, &'static str, u64)>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// One entry of a `current_keys` range.
type KeyEntry<'a> = (
    redb::AccessGuard<'a, (u64, &'static str, &'static str, u64)>,
    redb::AccessGuard<'a, ()>,
);

/// A table of a read transaction, `None` when the file has none yet.
fn open<T>(r: Result<T, redb::TableError>) -> Result<Option<T>, Failure> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(Failure::from(e)),
    }
}

/// Answers `reads` for `world` from its current state, in the read
/// transaction `txn`: `None` when it keeps none at its head.
pub(crate) fn read(
    txn: &ReadTransaction,
    world: WorldId,
    reads: &[CurrentRead],
) -> Result<Option<CurrentView>, Failure> {
    let worlds = txn.open_table(crate::encoding::WORLDS)?;
    let info = load_world(&worlds, world)?;
    let (Some(at), Some(values), Some(keys), Some(tally)) = (
        open(txn.open_table(AT))?,
        open(txn.open_table(VALUES))?,
        open(txn.open_table(KEYS))?,
        open(txn.open_table(TALLY))?,
    ) else {
        return Ok(None);
    };
    let w = world.0;
    let at_tick = at.get(w)?.map(|v| v.value());
    if !kept_at_head(at_tick, &info) {
        return Ok(None);
    }
    let mut answers = Vec::with_capacity(reads.len());
    for read in reads {
        answers.push(match read {
            CurrentRead::Values {
                component,
                newest_first,
                before,
                limit,
            } => {
                let c = component.as_str();
                let upper = match before {
                    Some(b) => Bound::Excluded((w, c, b.0)),
                    None => Bound::Included((w, c, u64::MAX)),
                };
                let range =
                    values.range::<(u64, &str, u64)>((Bound::Included((w, c, 0)), upper))?;
                let limit = limit.unwrap_or(usize::MAX);
                let mut out = Vec::new();
                let mut push = |entry: Result<_, redb::StorageError>| -> Result<bool, Failure> {
                    let (k, v): ValueEntry<'_> = entry?;
                    out.push((EntityId(k.value().2), v.value().to_vec()));
                    Ok(out.len() < limit)
                };
                if limit > 0 {
                    if *newest_first {
                        for entry in range.rev() {
                            if !push(entry)? {
                                break;
                            }
                        }
                    } else {
                        for entry in range {
                            if !push(entry)? {
                                break;
                            }
                        }
                    }
                }
                CurrentAnswer::Values(out)
            }
            CurrentRead::Get {
                component,
                entities,
            } => {
                let mut out = Vec::with_capacity(entities.len());
                for e in entities {
                    if let Some(v) = values.get((w, component.as_str(), e.0))? {
                        out.push((*e, v.value().to_vec()));
                    }
                }
                CurrentAnswer::Values(out)
            }
            CurrentRead::Keyed {
                index,
                key,
                prefix,
                newest_first,
                limit,
            } => {
                let (i, k) = (index.as_str(), key.as_str());
                let limit = limit.unwrap_or(usize::MAX);
                let mut out = Vec::new();
                if *prefix {
                    let range = keys.range::<(u64, &str, &str, u64)>((
                        Bound::Included((w, i, k, 0)),
                        Bound::Excluded((w + 1, "", "", 0)),
                    ))?;
                    for entry in range {
                        let (kk, _) = entry?;
                        let (kw, ki, kk2, e) = kk.value();
                        if kw != w || ki != i || !kk2.starts_with(k) {
                            break;
                        }
                        out.push((kk2.to_string(), EntityId(e)));
                    }
                    if *newest_first {
                        out.reverse();
                    }
                    out.truncate(limit);
                } else {
                    let range = keys.range((w, i, k, 0)..=(w, i, k, u64::MAX))?;
                    let mut take = |entry: Result<_, redb::StorageError>| -> Result<bool, Failure> {
                        let (kk, _): KeyEntry<'_> = entry?;
                        out.push((key.clone(), EntityId(kk.value().3)));
                        Ok(out.len() < limit)
                    };
                    if limit > 0 {
                        if *newest_first {
                            for entry in range.rev() {
                                if !take(entry)? {
                                    break;
                                }
                            }
                        } else {
                            for entry in range {
                                if !take(entry)? {
                                    break;
                                }
                            }
                        }
                    }
                }
                CurrentAnswer::Keys(out)
            }
            CurrentRead::Tally => CurrentAnswer::Tally(match tally.get(w)? {
                Some(v) => match decode_tally(v.value()) {
                    Some(t) => t,
                    // Written by a newer build, or damaged: the caller
                    // materializes instead (which reports any damage).
                    None => return Ok(None),
                },
                None => Tally::default(),
            }),
        });
    }
    Ok(Some(CurrentView {
        tick: info.head,
        answers,
    }))
}
