//! Answering reads from the current state.

use super::codec::{BLOCK, decode_block, decode_tally};
use super::keys::{keyed_forward, keyed_newest};
use super::{AT, Blocks, INDEX, TALLY, TICKS, kept_at_head};
use crate::encoding::{self, RECORDS};
use crate::{Failure, load_world};
use autoresearch_core::current::{CurrentAnswer, CurrentRead, CurrentView, Tally};
use autoresearch_core::{EntityId, WorldId, WorldInfo};
use redb::{ReadTransaction, ReadableTable};
use std::collections::{HashMap, HashSet};
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
                        // A damaged key's block number: fall back.
                        let Some(e) = block
                            .checked_mul(BLOCK)
                            .and_then(|b| b.checked_add(u64::from(offset)))
                        else {
                            return Ok(None);
                        };
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

/// The entities whose key in `index` (one of `autoresearch_core::current`'s
/// secondary indexes, e.g. `BY_RUN_ID`) of world `world` is exactly `key`,
/// ascending, as `table` (`current_index`, read or being written) holds
/// them: the chart series joins Results to runs with it inside the
/// writer's transaction. `None` when a chunk does not decode (the caller
/// stops relying on the index). Cost: one range look-up and the decoding
/// of the chunks holding `key`.
pub(crate) fn entities_with_key(
    table: &impl ReadableTable<(u64, &'static str, &'static str, u64), &'static [u8]>,
    world: u64,
    index: &str,
    key: &str,
) -> Result<Option<Vec<u64>>, Failure> {
    Ok(keyed_forward(table, world, index, key, false, usize::MAX)?
        .map(|found| found.into_iter().map(|(_, e)| e.0).collect()))
}

/// Whether `info`'s world keeps its current state at its head, in the
/// read transaction `txn` (`false` for a file without the tables).
pub(crate) fn kept_at(txn: &ReadTransaction, info: &WorldInfo) -> Result<bool, Failure> {
    let Some(at) = open(txn.open_table(AT))? else {
        return Ok(false);
    };
    let at_tick = at.get(info.id.0)?.map(|v| v.value());
    Ok(kept_at_head(at_tick, info))
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
