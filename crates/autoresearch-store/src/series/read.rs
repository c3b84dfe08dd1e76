//! Answering a chart's read from the kept series.

use super::codec::{Meta, decode_head, scan_block};
use super::{HEAD, POINTS, RESULTS, RUN_IDS, RUNS};
use crate::{Failure, load_world};
use autoresearch_core::series::{Series, SeriesPoint};
use autoresearch_core::{EntityId, Tick, WorldId};
use redb::ReadTransaction;

/// Bytes each chart-series table occupies, for the tables the file has.
/// Cost: five table opens in `txn`.
pub(crate) fn table_bytes(txn: &ReadTransaction) -> Result<Vec<crate::TableBytes>, Failure> {
    use redb::{ReadableTableMetadata, TableHandle};
    fn entry(name: &str, stats: Option<redb::TableStats>) -> Option<crate::TableBytes> {
        stats.map(|s| crate::TableBytes {
            name: name.to_string(),
            stored: s.stored_bytes(),
            metadata: s.metadata_bytes(),
            fragmented: s.fragmented_bytes(),
        })
    }
    let stats = [
        (
            HEAD.name(),
            open(txn.open_table(HEAD))?.map(|t| t.stats()).transpose()?,
        ),
        (
            POINTS.name(),
            open(txn.open_table(POINTS))?
                .map(|t| t.stats())
                .transpose()?,
        ),
        (
            RUNS.name(),
            open(txn.open_table(RUNS))?.map(|t| t.stats()).transpose()?,
        ),
        (
            RUN_IDS.name(),
            open(txn.open_table(RUN_IDS))?
                .map(|t| t.stats())
                .transpose()?,
        ),
        (
            RESULTS.name(),
            open(txn.open_table(RESULTS))?
                .map(|t| t.stats())
                .transpose()?,
        ),
    ];
    Ok(stats
        .into_iter()
        .filter_map(|(name, s)| entry(name, s))
        .collect())
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
/// asked): `None` when it keeps none at its head.
pub(crate) fn read(
    txn: &ReadTransaction,
    world: WorldId,
    experiment: &str,
    metric: Option<&str>,
) -> Result<Option<Series>, Failure> {
    let worlds = txn.open_table(crate::encoding::WORLDS)?;
    let info = load_world(&worlds, world)?;
    let (Some(head), Some(points)) = (open(txn.open_table(HEAD))?, open(txn.open_table(POINTS))?)
    else {
        return Ok(None);
    };
    let w = world.0;
    let (tick, meta) = match head.get(w)? {
        Some(v) => match decode_head(v.value()) {
            Some(entry) => entry,
            None => return Ok(None),
        },
        // A new root world keeps an empty series.
        None if info.parent.is_none() && info.head == Tick::ZERO => (Tick::ZERO, Meta::default()),
        None => return Ok(None),
    };
    if tick != info.head {
        return Ok(None);
    }
    let mut series = Series {
        tick,
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
    for entry in points.range((w, x, 0)..=(w, x, u64::MAX))? {
        let (k, v) = entry?;
        // A block number past what entity ids allow is a damaged key.
        let Some(base) = k.value().2.checked_mul(256) else {
            return Ok(None);
        };
        let out = std::cell::RefCell::new(&mut series.points);
        let ok = scan_block(
            v.value(),
            |low, outcome, crashed, task| {
                out.borrow_mut().push(SeriesPoint {
                    entity: EntityId(base | u64::from(low)),
                    outcome,
                    run_crashed: crashed,
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
    Ok(Some(series))
}
