//! Answering reads from the current state.

use super::codec::{BLOCK, PointerBlock, decode_block, decode_state, decode_tally, slot};
use super::keys::{keyed_forward, keyed_newest};
use super::pending::Overlay;
use super::{Blocks, HEAD, INDEX, OLD_AT, PENDING, STATE_KEY, TALLY, TICKS, kept_at_head, pointer};
use crate::encoding;
use crate::{Failure, load_world};
use autoresearch_core::current::{CurrentAnswer, CurrentRead, CurrentView, Tally};
use autoresearch_core::{EntityId, WorldId, WorldInfo};
use redb::{ReadTransaction, ReadableTable};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

/// Values by `(component, entity)`.
type Values = HashMap<(String, u64), Vec<u8>>;

/// One entry of a `current_ticks` range.
type TicksEntry<'a> = (
    redb::AccessGuard<'a, (u64, &'static str, u64)>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// The values of `wanted` (`(component, entity)` -> the tick whose record
/// set it), each record read and decoded once. `None` when a record does
/// not hold a value it is pointed at for (the index is damaged).
fn fetch(
    records: &crate::stored::ReadValues,
    w: u64,
    wanted: &HashMap<(String, u64), u64>,
) -> Result<Option<Values>, Failure> {
    // By tick, then by component: each record is read once, and only the
    // wanted components' values in it rebuilt.
    let mut by_tick: HashMap<u64, HashMap<&str, HashSet<u64>>> = HashMap::new();
    for ((c, e), tick) in wanted {
        by_tick
            .entry(*tick)
            .or_default()
            .entry(c.as_str())
            .or_default()
            .insert(*e);
    }
    let mut ticks: Vec<u64> = by_tick.keys().copied().collect();
    ticks.sort_unstable();
    let mut out = HashMap::with_capacity(wanted.len());
    for tick in ticks {
        let Some(bytes) = records.get_or_none(w, tick)? else {
            return Ok(None);
        };
        let want: Vec<(&str, &HashSet<u64>)> =
            by_tick[&tick].iter().map(|(c, es)| (*c, es)).collect();
        let components: Vec<&str> = want.iter().map(|(c, _)| *c).collect();
        let decoded = encoding::record_sets_of(&bytes, &components, |i, e, v| {
            let (component, entities) = want[i];
            if entities.contains(&e.0) {
                out.insert((component.to_string(), e.0), v.to_vec());
            }
        });
        if decoded.is_err() {
            return Ok(None);
        }
    }
    Ok((out.len() == wanted.len()).then_some(out))
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

/// World `w`'s pending changes merged oldest first; `None` when one does
/// not decode.
fn load_overlay(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    w: u64,
) -> Result<Option<Overlay>, Failure> {
    let mut out = Overlay::default();
    for entry in table.range((w, 0)..(w, STATE_KEY))? {
        let (_, v) = entry?;
        match Overlay::decode(v.value()) {
            Some(o) => out.merge(o),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Pending changes to one pointer block: `(offset, tick or none)`.
type BlockChanges = Vec<(u8, Option<u64>)>;

/// One pointer block with the pending changes to it applied.
fn merged_block(mut b: PointerBlock, changes: &[(u8, Option<u64>)]) -> PointerBlock {
    for &(offset, tick) in changes {
        match (b.binary_search_by_key(&offset, |(o, _)| *o), tick) {
            (Ok(i), Some(t)) => b[i].1 = t,
            (Err(i), Some(t)) => b.insert(i, (offset, t)),
            (Ok(i), None) => {
                b.remove(i);
            }
            (Err(_), None) => {}
        }
    }
    b
}

/// The `(entity, tick)` of every entity holding `component` (below
/// `before`, newest first when asked, at most `limit`): the main table's
/// blocks in order with the pending changes (`changes`, by entity)
/// applied, and the blocks only pending changes fill. `None` when a block
/// does not decode.
fn values(
    ticks: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
    w: u64,
    component: &str,
    changes: Option<&BTreeMap<u64, Option<u64>>>,
    newest_first: bool,
    before: Option<EntityId>,
    limit: usize,
) -> Result<Option<Vec<(u64, u64)>>, Failure> {
    let mut out = Vec::new();
    if limit == 0 || before.is_some_and(|b| b.0 == 0) {
        return Ok(Some(out));
    }
    // Pending changes by block, in the order the blocks are read.
    let mut pending: BTreeMap<u64, BlockChanges> = BTreeMap::new();
    for (&e, &tick) in changes.into_iter().flatten() {
        if before.is_none_or(|b| e < b.0) {
            let (block, offset) = slot(e);
            pending.entry(block).or_default().push((offset, tick));
        }
    }
    let mut pending: Vec<(u64, BlockChanges)> = pending.into_iter().collect();
    if newest_first {
        pending.reverse();
    }
    let mut pending = pending.into_iter().peekable();
    let upper = match before {
        Some(b) => Bound::Included((w, component, (b.0 - 1) / BLOCK)),
        None => Bound::Included((w, component, u64::MAX)),
    };
    let range = ticks.range::<(u64, &str, u64)>((Bound::Included((w, component, 0)), upper))?;
    let mut main: Box<dyn Iterator<Item = Result<TicksEntry<'_>, redb::StorageError>>> =
        if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
    // `push` answers whether to go on.
    let push = |block: u64, b: PointerBlock, out: &mut Vec<(u64, u64)>| -> Option<bool> {
        let entries: Box<dyn Iterator<Item = (u8, u64)>> = if newest_first {
            Box::new(b.into_iter().rev())
        } else {
            Box::new(b.into_iter())
        };
        for (offset, tick) in entries {
            // A damaged key's block number: fall back.
            let e = block
                .checked_mul(BLOCK)
                .and_then(|b| b.checked_add(u64::from(offset)))?;
            if before.is_some_and(|x| e >= x.0) {
                continue;
            }
            if out.len() >= limit {
                return Some(false);
            }
            out.push((e, tick));
        }
        Some(out.len() < limit)
    };
    let ahead = |a: u64, b: u64| if newest_first { a > b } else { a < b };
    loop {
        let next = match main.next() {
            Some(entry) => {
                let (k, v) = entry?;
                let Some(b) = decode_block(v.value()) else {
                    return Ok(None);
                };
                Some((k.value().2, b))
            }
            None => None,
        };
        // Blocks only pending changes fill, before this one.
        while let Some((n, _)) = pending.peek() {
            if next.as_ref().is_some_and(|(block, _)| !ahead(*n, *block)) {
                break;
            }
            let Some((n, changes)) = pending.next() else {
                break;
            };
            match push(n, merged_block(Vec::new(), &changes), &mut out) {
                None => return Ok(None),
                Some(false) => return Ok(Some(out)),
                Some(true) => {}
            }
        }
        let Some((block, b)) = next else {
            return Ok(Some(out));
        };
        let b = match pending.peek() {
            Some((n, _)) if *n == block => {
                let changes = pending.next().map(|(_, c)| c).unwrap_or_default();
                merged_block(b, &changes)
            }
            _ => b,
        };
        match push(block, b, &mut out) {
            None => return Ok(None),
            Some(false) => return Ok(Some(out)),
            Some(true) => {}
        }
    }
}

/// The answer to a keyed read from the main table's `found` (read with
/// room for every pending removal) and the pending changes of the index.
fn merged_keys(
    found: Vec<(String, EntityId)>,
    changes: Option<&BTreeMap<(String, u64), bool>>,
    key: &str,
    prefix: bool,
    newest_first: bool,
    limit: usize,
) -> Vec<(String, EntityId)> {
    let Some(changes) = changes else {
        return found;
    };
    let mut all: BTreeSet<(String, u64)> = found.into_iter().map(|(k, e)| (k, e.0)).collect();
    let matching = changes
        .range::<(String, u64), _>((Bound::Included((key.to_string(), 0)), Bound::Unbounded));
    for ((k, e), present) in matching {
        let hit = if prefix { k.starts_with(key) } else { k == key };
        if !hit {
            break;
        }
        if *present {
            all.insert((k.clone(), *e));
        } else {
            all.remove(&(k.clone(), *e));
        }
    }
    let it = all.into_iter().map(|(k, e)| (k, EntityId(e)));
    if newest_first {
        it.rev().take(limit).collect()
    } else {
        it.take(limit).collect()
    }
}

/// The pending removals among `changes` of keys `key` (or starting with
/// it).
fn removals(changes: Option<&BTreeMap<(String, u64), bool>>, key: &str, prefix: bool) -> usize {
    let Some(changes) = changes else {
        return 0;
    };
    changes
        .range::<(String, u64), _>((Bound::Included((key.to_string(), 0)), Bound::Unbounded))
        .take_while(|((k, _), _)| if prefix { k.starts_with(key) } else { k == key })
        .filter(|(_, present)| !**present)
        .count()
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
    // A ledger of the previous layout has no `current_head` and no
    // `current_pending` (its head is in `current_at`, nothing is pending).
    let (Some(ticks), Some(index_table), Some(tally)) = (
        open(txn.open_table(TICKS))?,
        open(txn.open_table(INDEX))?,
        open(txn.open_table(TALLY))?,
    ) else {
        return Ok(None);
    };
    let w = world.0;
    if !kept_at_head(kept_tick(txn, w)?, &info) {
        return Ok(None);
    }
    let pending = open(txn.open_table(PENDING))?;
    let overlay = match &pending {
        Some(pending) => match load_overlay(pending, w)? {
            Some(o) => o,
            None => return Ok(None),
        },
        None => Overlay::default(),
    };
    // The tally as stored: in the world's state row, else (a world last
    // appended to by an older build) in `current_tally`.
    let state = match &pending {
        Some(p) => p.get((w, STATE_KEY))?,
        None => None,
    };
    let stored_tally = match &state {
        Some(v) => match decode_state(v.value()) {
            Some((_, t)) => Some(t.to_vec()),
            None => return Ok(None),
        },
        None => tally.get(w)?.map(|v| v.value().to_vec()),
    };
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
                let found = values(
                    &ticks,
                    w,
                    component,
                    overlay.pointers.get(component),
                    *newest_first,
                    *before,
                    limit.unwrap_or(usize::MAX),
                )?;
                let Some(out) = found else {
                    return Ok(None);
                };
                Plan::Values(component.clone(), out)
            }
            CurrentRead::Get {
                component,
                entities,
            } => {
                let mut out = Vec::with_capacity(entities.len());
                for e in entities {
                    let none = Overlay::default();
                    match pointer(&mut blocks, &ticks, [&none, &overlay], component, e.0)? {
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
                let changes = overlay.keys.get(index);
                let room = limit.saturating_add(removals(changes, key, *prefix));
                let found = if *newest_first && !*prefix {
                    keyed_newest(&index_table, w, index, key, room)?
                } else {
                    keyed_forward(&index_table, w, index, key, *prefix, room)?
                };
                let Some(mut out) = found else {
                    return Ok(None);
                };
                if *newest_first && *prefix {
                    out.reverse();
                }
                if changes.is_some() {
                    out = merged_keys(out, changes, key, *prefix, *newest_first, limit);
                }
                out.truncate(limit);
                Plan::Done(CurrentAnswer::Keys(out))
            }
            CurrentRead::Tally => Plan::Done(CurrentAnswer::Tally(match &stored_tally {
                Some(v) => match decode_tally(v) {
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
        let records = crate::stored::ReadValues::records(txn)?;
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

/// The entities whose key in `index` (one of `autoresearch_core::current`'s
/// secondary indexes, e.g. `BY_RUN_ID`) of world `world` is exactly `key`,
/// ascending, as `table` (`current_index`, read or being written) holds
/// them: the chart series joins Results to runs with it inside the
/// writer's transaction. `None` when a chunk does not decode (the caller
/// stops relying on the index). Cost: one range look-up and the decoding
/// of the chunks holding `key`. (The writer's series uses
/// [`super::ChunkMemo`], which decodes a chunk once per append; this one
/// is its reference in tests.)
#[cfg(test)]
pub(crate) fn entities_with_key(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    world: u64,
    index: &str,
    key: &str,
) -> Result<Option<Vec<u64>>, Failure> {
    Ok(keyed_forward(table, world, index, key, false, usize::MAX)?
        .map(|found| found.into_iter().map(|(_, e)| e.0).collect()))
}

/// The tick world `w`'s current state is the state after, as `txn` has
/// it: its state row's (`STATE_KEY`; a row that does not decode stands
/// for no tick, `u64::MAX`), else `current_head`, or `current_at` for a
/// world kept by a build before `current_pending` existed; `None` when it
/// is kept in none.
fn kept_tick(txn: &ReadTransaction, w: u64) -> Result<Option<u64>, Failure> {
    if let Some(pending) = open(txn.open_table(PENDING))?
        && let Some(v) = pending.get((w, STATE_KEY))?
    {
        return Ok(Some(
            decode_state(v.value()).map_or(u64::MAX, |(head, _)| head),
        ));
    }
    if let Some(head) = open(txn.open_table(HEAD))?
        && let Some(tick) = head.get(w)?
    {
        return Ok(Some(tick.value()));
    }
    match open(txn.open_table(OLD_AT))? {
        Some(old) => Ok(old.get(w)?.map(|v| v.value())),
        None => Ok(None),
    }
}

/// Whether `info`'s world keeps its current state at its head, in the
/// read transaction `txn` (`false` for a file without the tables).
pub(crate) fn kept_at(txn: &ReadTransaction, info: &WorldInfo) -> Result<bool, Failure> {
    Ok(kept_at_head(kept_tick(txn, info.id.0)?, info))
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
        PENDING.name(),
        open(txn.open_table(PENDING))?
            .map(|t| t.stats())
            .transpose()?,
    );
    push(
        HEAD.name(),
        open(txn.open_table(HEAD))?.map(|t| t.stats()).transpose()?,
    );
    Ok(out)
}
