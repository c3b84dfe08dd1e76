//! Answering a chart's read from the kept series.

use super::codec::{Crashed, Meta, decode_crashed, decode_head, is_crashed, scan_block};
use super::{CRASHED, HEAD, POINTS, RESULTS, RUNS};
use crate::{Failure, load_world};
use autoresearch_core::series::{Series, SeriesPoint};
use autoresearch_core::{EntityId, Tick, WorldId};
use redb::ReadTransaction;
use std::collections::HashMap;

/// Bytes each chart-series table occupies, for the tables the file has.
/// Cost: five table opens in `txn`.
pub(crate) fn table_bytes(txn: &ReadTransaction) -> Result<Vec<crate::TableBytes>, Failure> {
    use redb::{ReadableTableMetadata, TableHandle};
    let mut out = Vec::new();
    let mut push = |name: &str, stats: Option<redb::TableStats>| {
        if let Some(s) = stats {
            out.push(crate::TableBytes {
                name: name.to_string(),
                stored: s.stored_bytes(),
                metadata: s.metadata_bytes(),
                fragmented: s.fragmented_bytes(),
            });
        }
    };
    push(
        HEAD.name(),
        open(txn.open_table(HEAD))?.map(|t| t.stats()).transpose()?,
    );
    push(
        POINTS.name(),
        open(txn.open_table(POINTS))?
            .map(|t| t.stats())
            .transpose()?,
    );
    push(
        CRASHED.name(),
        open(txn.open_table(CRASHED))?
            .map(|t| t.stats())
            .transpose()?,
    );
    push(
        RUNS.name(),
        open(txn.open_table(RUNS))?.map(|t| t.stats()).transpose()?,
    );
    push(
        RESULTS.name(),
        open(txn.open_table(RESULTS))?
            .map(|t| t.stats())
            .transpose()?,
    );
    Ok(out)
}

/// A table of a read transaction, `None` when the file has none yet.
fn open<T>(r: Result<T, redb::TableError>) -> Result<Option<T>, Failure> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(Failure::from(e)),
    }
}

/// The series of `experiment` in `world` from its kept tables, in the read
/// transaction `txn`, with the values of `metric` (points only when
/// asked): `None` when it keeps none at its head (its current state is
/// not kept there, or it has no head entry of this version).
pub(crate) fn read(
    txn: &ReadTransaction,
    world: WorldId,
    experiment: &str,
    metric: Option<&str>,
) -> Result<Option<Series>, Failure> {
    let worlds = txn.open_table(crate::encoding::WORLDS)?;
    let info = load_world(&worlds, world)?;
    // Kept in the same transactions as the current state: at its tick.
    if !crate::current::kept_at(txn, &info)? {
        return Ok(None);
    }
    let (Some(head), Some(points), Some(crashed)) = (
        open(txn.open_table(HEAD))?,
        open(txn.open_table(POINTS))?,
        open(txn.open_table(CRASHED))?,
    ) else {
        return Ok(None);
    };
    let w = world.0;
    let meta = match head.get(w)? {
        Some(v) => match decode_head(v.value()) {
            Some(meta) => meta,
            None => return Ok(None),
        },
        // A new root world keeps an empty series.
        None if info.parent.is_none() && info.head == Tick::ZERO => Meta::default(),
        None => return Ok(None),
    };
    let mut series = Series {
        tick: info.head,
        ..Series::default()
    };
    let Some((x, m)) = meta
        .experiments
        .iter()
        .enumerate()
        .find(|(_, m)| m.name == experiment)
    else {
        return Ok(Some(series));
    };
    series.metrics = m
        .metrics
        .iter()
        .zip(&m.counts)
        .filter(|(_, c)| **c > 0)
        .map(|(k, c)| (k.clone(), *c))
        .collect();
    series.attempts = m.attempts;
    series.spec = m.spec.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
    let Some(metric) = metric else {
        return Ok(Some(series));
    };
    let id = m
        .metrics
        .iter()
        .position(|k| k == metric)
        .and_then(|i| u16::try_from(i).ok());
    let x = x as u64;
    // The crashed bitmaps of the experiment's blocks (few: 32 bytes per
    // 256 entities, none where no run crashed).
    let mut flags: HashMap<u64, Crashed> = HashMap::new();
    for entry in crashed.range((w, x, 0)..=(w, x, u64::MAX))? {
        let (k, v) = entry?;
        let Some(bits) = decode_crashed(v.value()) else {
            return Ok(None);
        };
        flags.insert(k.value().2, bits);
    }
    for entry in points.range((w, x, 0)..=(w, x, u64::MAX))? {
        let (k, v) = entry?;
        let block = k.value().2;
        // A block number past what entity ids allow is a damaged key.
        let Some(base) = block.checked_mul(256) else {
            return Ok(None);
        };
        let bits = flags.remove(&block).unwrap_or_default();
        let out = std::cell::RefCell::new(&mut series.points);
        let ok = scan_block(
            v.value(),
            |low, outcome, task| {
                out.borrow_mut().push(SeriesPoint {
                    entity: EntityId(base | u64::from(low)),
                    outcome,
                    run_crashed: is_crashed(&bits, low),
                    task,
                    value: None,
                })
            },
            |m, v| {
                if Some(m) == id
                    && let Some(p) = out.borrow_mut().last_mut()
                {
                    p.value = Some(v);
                }
            },
        );
        if ok.is_none() {
            // Written by a newer build, or damaged: the chart materializes.
            return Ok(None);
        }
    }
    if !flags.is_empty() {
        // A bitmap without its block: damaged.
        return Ok(None);
    }
    Ok(Some(series))
}
