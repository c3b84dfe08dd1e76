//! The chart series of each root world's experiments (core's `series`
//! module says what it holds), kept beside its log in the same write
//! transaction as each appended tick: `autoresearch plot` of a million
//! attempts then reads packed blocks of numbers instead of decoding every
//! Run and parsing every Result.
//!
//! Tables (all keyed by world first):
//!
//! - `series_head`: `world` -> version, then the postcard of [`Meta`] (per
//!   experiment: its attempts, metric names and how many Results have
//!   each, and the newest comparator);
//! - `series_points`: `(world, experiment, entity >> 8)` -> a block of up
//!   to 256 points (see [`codec::encode_block`]): what the chart reads;
//! - `series_crashed`: `(world, experiment, entity >> 8)` -> the crashed
//!   flags of the block's points (a bitmap, absent when none is set): a
//!   Run's status changes far more often than the rest of its point, and
//!   a status change that does not cross `crashed` writes nothing;
//! - `series_runs`: `(world, run entity)` -> postcard of a run record:
//!   the run's commit (as a 128-bit hash) and its Results' numeric
//!   outputs, to recompute its point when they change. Only runs with
//!   Results have one; never read by a chart;
//! - `series_results`: `(world, Result entity)` -> the run it joined.
//!
//! Results join runs by `run_id` through the current state's `run` index
//! (`crate::current`, maintained just before in the same transaction), and
//! a run's Results through its `result` index: the series keeps no copy
//! of either. So the series is kept only beside the current state: it is
//! at the tick the current state is at, and a world that stops keeping
//! its current state stops keeping its series (the head holds no tick, so
//! a tick that changes no point writes nothing here).
//!
//! A root world created by this build keeps them from tick 0. A world
//! without a head entry of this version (a fork, one of a ledger written
//! before these tables or by a build with another version) keeps none
//! from then on. So does a world whose history leaves the series not
//! provably equal to `autoresearch_core::series::series_of_state`: a
//! lifecycle value that does not decode, two Runs with one `run_id` that
//! a Result has (or set in one batch), an Outcome without a Run, a Run
//! removed or moved to another experiment, the newest comparator taken
//! back. Its entries are then deleted and its charts materialize: never a
//! stale answer. (A Result whose `run_id` no run has yet joins none; the
//! run that takes that `run_id` later finds it in the index.)

mod codec;
mod read;
mod work;

#[cfg(test)]
pub(crate) use codec::VERSION;
pub(crate) use read::{read, table_bytes};

use crate::current::{ChunkMemo, CurrentTables, EntityMap, PARALLEL_FROM, both};
use crate::stored::ReadValue;
use crate::{EncodedAppend, Failure, Stop};
use autoresearch_core::current::{BY_RUN_ID, FactsError, OUTCOME, RESULT, RESULT_OF, RUN};
use autoresearch_core::series::{RunFactsRef, outcome_facts, result_sample, run_facts_ref};
use autoresearch_core::{Change, Tick, WorldInfo};
use codec::{Meta, decode_head, encode_head};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use std::collections::HashMap;
use std::ops::Bound;
use work::{Work, commit_id};

/// `world` -> version, postcard of [`Meta`].
pub(crate) const HEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("series_head");
/// `(world, experiment, entity >> 8)` -> a block of points.
pub(crate) const POINTS: TableDefinition<(u64, u64, u64), &[u8]> =
    TableDefinition::new("series_points");
/// `(world, experiment, entity >> 8)` -> the block's crashed flags.
pub(crate) const CRASHED: TableDefinition<(u64, u64, u64), &[u8]> =
    TableDefinition::new("series_crashed");
/// `(world, run entity)` -> postcard of a run record.
pub(crate) const RUNS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("series_runs");
/// `(world, Result entity)` -> run entity.
pub(crate) const RESULTS: TableDefinition<(u64, u64), u64> = TableDefinition::new("series_results");
/// Version 2's `(world, run_id)` -> run entity, dropped when a file is
/// opened for writing: the current state's `run` index answers it.
pub(crate) const OLD_RUN_IDS: TableDefinition<(u64, &str), u64> =
    TableDefinition::new("series_run_ids");

/// The series tables inside a write transaction.
pub(crate) struct SeriesTables<'t> {
    head: Table<'t, u64, &'static [u8]>,
    points: Table<'t, (u64, u64, u64), &'static [u8]>,
    crashed: Table<'t, (u64, u64, u64), &'static [u8]>,
    runs: Table<'t, (u64, u64), &'static [u8]>,
    results: Table<'t, (u64, u64), u64>,
}

impl<'t> SeriesTables<'t> {
    /// Opens (creating when missing) the tables.
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<SeriesTables<'t>, Failure> {
        Ok(SeriesTables {
            head: txn.open_table(HEAD)?,
            points: txn.open_table(POINTS)?,
            crashed: txn.open_table(CRASHED)?,
            runs: txn.open_table(RUNS)?,
            results: txn.open_table(RESULTS)?,
        })
    }

    /// Deletes every entry of world `w`.
    pub(crate) fn delete(&mut self, w: u64) -> Result<(), Failure> {
        self.head.remove(w)?;
        self.points
            .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
        self.crashed
            .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
        self.runs.retain_in((w, 0)..=(w, u64::MAX), |_, _| false)?;
        self.results
            .retain_in((w, 0)..=(w, u64::MAX), |_, _| false)?;
        Ok(())
    }
}

impl From<FactsError> for Stop {
    fn from(_: FactsError) -> Self {
        Stop::Unkept
    }
}

/// Applies `appends` (already checked, about to be stored) to `info`'s
/// world's series, when it keeps one. `info` is the catalogue entry before
/// the append; `current` holds the world's current state after it (or
/// none), `records` every tick up to `info.head`.
pub(crate) fn maintain(
    t: &mut SeriesTables<'_>,
    current: &mut CurrentTables<'_>,
    records: &crate::stored::WriteValues<'_>,
    info: &WorldInfo,
    appends: &[EncodedAppend],
) -> Result<(), Failure> {
    let Some(last) = appends.last() else {
        return Ok(());
    };
    let w = info.id.0;
    let stored = t.head.get(w)?.map(|v| decode_head(v.value()));
    let (mut meta, first) = match stored {
        Some(Some(meta)) => (meta, false),
        None if info.parent.is_none() && info.head == Tick::ZERO => (Meta::default(), true),
        None => return Ok(()),
        // Another version, or damaged.
        Some(None) => return t.delete(w),
    };
    // Kept in the same transactions as the current state, so at the tick
    // it was at before this batch exactly when it is kept after it.
    if current.at(w)? != Some(last.tick.0) {
        return t.delete(w);
    }
    let prior = current.take_prior_runs();
    let inputs = Inputs {
        current,
        records,
        w,
        chunks: ChunkMemo::default(),
        prior,
    };
    match update(t, inputs, &mut meta, appends) {
        Ok(changed) => {
            if changed || first {
                match encode_head(&meta) {
                    Some(bytes) => {
                        t.head.insert(w, bytes.as_slice())?;
                    }
                    None => return t.delete(w),
                }
            }
            Ok(())
        }
        Err(Stop::Unkept) => t.delete(w),
        Err(Stop::Db(f)) => Err(f),
    }
}

/// The net change of a batch to one entity's lifecycle components:
/// `Some(None)` removed, `Some(Some(v))` set to `v`, `None` untouched.
#[derive(Default)]
struct Net<'a> {
    /// Whether the batch spawned it (it held nothing before).
    spawned: bool,
    run: Option<Option<&'a [u8]>>,
    outcome: Option<Option<&'a [u8]>>,
    result: Option<Option<&'a [u8]>>,
}

/// What the series reads of the current state (after the batch) and of
/// the log.
struct Inputs<'a, 'c, 'r> {
    current: &'a mut CurrentTables<'c>,
    records: &'a crate::stored::WriteValues<'r>,
    w: u64,
    /// Index chunks decoded by this batch's look-ups (`current_index`
    /// is not written while the series is updated).
    chunks: ChunkMemo,
    /// The Runs changed runs held before the batch, where the current
    /// state loaded them (`CurrentTables::take_prior_runs`).
    prior: EntityMap<ReadValue>,
}

impl Inputs<'_, '_, '_> {
    /// The entities whose key in `index` is `key`.
    fn keyed(&mut self, index: &str, key: &str) -> Result<Vec<u64>, Stop> {
        self.chunks
            .entities_with_key(self.current.index(), self.w, index, key)?
            .ok_or(Stop::Unkept)
    }

    /// Whether any Result joins a run by `run_id` (the `result` index has
    /// an entry).
    fn any_result(&self) -> Result<bool, Stop> {
        let first = self
            .current
            .index()
            .range::<(u64, &str, &str, u64)>((
                Bound::Included((self.w, RESULT_OF, "", 0)),
                Bound::Unbounded,
            ))?
            .next();
        Ok(match first {
            Some(entry) => {
                let (k, _) = entry?;
                let (kw, ki, _, _) = k.value();
                kw == self.w && ki == RESULT_OF
            }
            None => false,
        })
    }

    /// The current value of `component` of `entity`, set before the batch.
    fn value(&mut self, component: &str, entity: u64) -> Result<ReadValue, Stop> {
        self.current
            .value(self.records, self.w, component, entity)?
            .flatten()
            .ok_or(Stop::Unkept)
    }
}

fn net_changes(appends: &[EncodedAppend]) -> Vec<(u64, Net<'_>)> {
    // A vector in first-touch order and each entity's place in it, sorted
    // at the end: cheaper than a tree of ten thousand spawns.
    // Sized once for the most entities the changes can touch.
    let changes: usize = appends.iter().map(|a| a.changes_full.len()).sum();
    let mut net: Vec<(u64, Net<'_>)> = Vec::with_capacity(changes);
    let mut position: EntityMap<usize> = EntityMap::default();
    position.reserve(changes);
    for a in appends {
        for change in a.changes_full.iter() {
            let e = change.entity().0;
            let i = *position.entry(e).or_insert_with(|| {
                net.push((
                    e,
                    Net {
                        spawned: matches!(change, Change::Spawn { .. }),
                        ..Net::default()
                    },
                ));
                net.len() - 1
            });
            let n = &mut net[i].1;
            match change {
                Change::Spawn { .. } => {}
                Change::Set {
                    component, value, ..
                } => match component.as_str() {
                    RUN => n.run = Some(Some(value)),
                    OUTCOME => n.outcome = Some(Some(value)),
                    RESULT => n.result = Some(Some(value)),
                    _ => {}
                },
                Change::Remove { component, .. } => match component.as_str() {
                    RUN => n.run = Some(None),
                    OUTCOME => n.outcome = Some(None),
                    RESULT => n.result = Some(None),
                    _ => {}
                },
                Change::Despawn { .. } => {
                    n.run = Some(None);
                    n.outcome = Some(None);
                    n.result = Some(None);
                }
            }
        }
    }
    net.sort_unstable_by_key(|(e, _)| *e);
    net
}

/// The runs of a batch by `run_id`.
type RunIds<'a> = HashMap<&'a str, u64, foldhash::fast::RandomState>;

/// The runs a batch set: entity -> (experiment id, facts).
/// Kept in a vector by entity (the runs are found in entity order, so
/// each is pushed at its end): cheaper than a tree for an ingest's runs.
#[derive(Default)]
struct Touched<'a>(Vec<(u64, (u64, RunFactsRef<'a>))>, Vec<bool>);

impl<'a> Touched<'a> {
    /// Adds run `e` (above every run added before); `settled`: its Run
    /// kept its experiment, run_id, commit and task (only its point's
    /// crashed flag may have changed), so no Result joins or leaves it.
    fn push(&mut self, e: u64, run: (u64, RunFactsRef<'a>), settled: bool) -> Result<(), Stop> {
        if self.0.last().is_some_and(|(last, _)| *last >= e) {
            // Never: the batch's entities are visited in order.
            return Err(Stop::Unkept);
        }
        self.0.push((e, run));
        self.1.push(settled);
        Ok(())
    }

    /// The runs whose Results may have changed (not settled).
    fn unsettled(&self) -> impl Iterator<Item = (&u64, &(u64, RunFactsRef<'a>))> {
        self.0
            .iter()
            .zip(&self.1)
            .filter(|(_, settled)| !**settled)
            .map(|((e, run), _)| (e, run))
    }

    fn get(&self, e: &u64) -> Option<&(u64, RunFactsRef<'a>)> {
        let i = self.0.binary_search_by_key(e, |(k, _)| *k).ok()?;
        Some(&self.0[i].1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&u64, &(u64, RunFactsRef<'a>))> {
        self.0.iter().map(|(e, run)| (e, run))
    }
}

/// Applies the batch; whether the metadata changed.
fn update(
    t: &mut SeriesTables<'_>,
    mut inputs: Inputs<'_, '_, '_>,
    meta: &mut Meta,
    appends: &[EncodedAppend],
) -> Result<bool, Stop> {
    let net = net_changes(appends);
    let runs_before: u64 = meta.experiments.iter().map(|m| m.attempts).sum();
    let mut work = Work::new(inputs.w, meta);
    // Runs first, so that an Outcome or Result of the same batch finds its
    // run.
    let touched = apply_runs(t, &mut work, &net, &inputs.prior)?;
    // Two runs with one run_id matter only where Results join: which one
    // they join. Those of this batch are not kept; those of a run set by
    // the batch and another are checked where a Result joins.
    // foldhash, randomly seeded: SipHash took about 8% of the series' update of an ingest.
    let mut by_run_id: RunIds<'_> =
        HashMap::with_capacity_and_hasher(touched.len(), Default::default());
    for (&e, (_, f)) in touched.iter() {
        if by_run_id.insert(f.run_id, e).is_some() {
            return Err(Stop::Unkept);
        }
    }
    // When every run is in this batch, a Result's run is found in it (an
    // ingest of runs and Results then asks the index nothing).
    let batch_has_all = runs_before == 0;
    apply_outcomes(t, &mut work, &net, &touched)?;
    apply_results(
        t,
        &mut work,
        &mut inputs,
        &net,
        &touched,
        batch_has_all.then_some(&by_run_id),
    )?;
    join_results(t, &mut work, &mut inputs, &touched, batch_has_all)?;
    let changed = work.meta_dirty;
    work.write(t)?;
    Ok(changed)
}

/// The facts of each Run `net` sets, by position in `net` (`None` where
/// it sets none), borrowing the values' text: each Run decoded once, on
/// two threads for a large batch (the same result).
type Decoded<'a> = Vec<Option<Result<RunFactsRef<'a>, FactsError>>>;

fn decode_runs<'a>(net: &[(u64, Net<'a>)]) -> Result<Decoded<'a>, Failure> {
    fn part<'a>(net: &[(u64, Net<'a>)]) -> Decoded<'a> {
        net.iter()
            .map(|(_, n)| match n.run {
                Some(Some(bytes)) => Some(run_facts_ref(bytes)),
                _ => None,
            })
            .collect()
    }
    if net.len() < PARALLEL_FROM {
        return Ok(part(net));
    }
    let (first, second) = net.split_at(net.len() / 2);
    let (mut a, b) = both(
        || part(first),
        || part(second),
        "decoding the runs of the chart series",
    )?;
    a.extend(b);
    Ok(a)
}

/// Each Run the batch set or removed: its point (added for a new run),
/// crashed flag and task.
fn apply_runs<'a>(
    t: &SeriesTables<'_>,
    work: &mut Work<'_>,
    net: &[(u64, Net<'a>)],
    prior: &EntityMap<ReadValue>,
) -> Result<Touched<'a>, Stop> {
    // Sized once: an ingest's runs would double it a dozen times.
    let runs = net
        .iter()
        .filter(|(_, n)| matches!(n.run, Some(Some(_))))
        .count();
    let mut touched = Touched(Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut decoded = decode_runs(net)?;
    work.reserve_runs(net.len());
    for (i, &(e, ref n)) in net.iter().enumerate() {
        let Some(change) = n.run else { continue };
        let Some(bytes) = change else {
            if !n.spawned && work.experiment_of(t, e)?.is_some() {
                // A run removed.
                return Err(Stop::Unkept);
            }
            continue;
        };
        // Errors are met in the order a sequential decode meets them.
        let facts = match decoded.get_mut(i).and_then(Option::take) {
            Some(facts) => facts?,
            None => run_facts_ref(bytes)?,
        };
        let x = work.experiment(facts.experiment);
        // A Run changed in place (a status): its point is where it was,
        // and no block of points is read.
        if !n.spawned
            && let Some(crashed) = prior.get(&e).and_then(|old| work::settled(old, &facts))
        {
            if crashed != facts.crashed {
                work.set_crashed(t, x, e, facts.crashed)?;
            }
            touched.push(e, (x, facts), true)?;
            continue;
        }
        if !n.spawned && work.has_point(t, x, e)? {
            work.change_point(t, x, e, |p| {
                let changed = p.task != facts.task;
                p.task = facts.task;
                changed
            })?;
        } else if !n.spawned && work.experiment_of(t, e)?.is_some() {
            // Moved to another experiment.
            return Err(Stop::Unkept);
        } else {
            work.add_point(t, x, e, facts.task)?;
            if n.spawned {
                // A new entity has no record: not looked up.
                work.no_record(e);
            }
        }
        work.set_crashed(t, x, e, facts.crashed)?;
        touched.push(e, (x, facts), false)?;
    }
    Ok(touched)
}

/// Each Outcome the batch set or removed: its point, then the newest
/// comparator of each experiment (after every Outcome of the batch, so
/// that the order of its entities does not matter).
fn apply_outcomes(
    t: &SeriesTables<'_>,
    work: &mut Work<'_>,
    net: &[(u64, Net<'_>)],
    touched: &Touched<'_>,
) -> Result<(), Stop> {
    let mut comparators = Vec::new();
    for &(e, ref n) in net {
        let Some(change) = n.outcome else { continue };
        let x = match touched.get(&e) {
            Some((x, _)) => Some(*x),
            None if n.spawned => None,
            None => work.experiment_of(t, e)?,
        };
        let Some(x) = x else {
            if change.is_some() {
                // An Outcome without a Run: were a Run set later, its
                // point would miss it.
                return Err(Stop::Unkept);
            }
            continue;
        };
        let (kind, comparator) = match change.map(outcome_facts).transpose()? {
            Some((kind, comparator)) => (Some(kind), comparator),
            None => (None, String::new()),
        };
        work.change_point(t, x, e, |p| {
            let changed = p.outcome != kind;
            p.outcome = kind;
            changed
        })?;
        comparators.push((x, e, comparator));
    }
    for (x, e, comparator) in &comparators {
        let spec = &work.meta_of_ref(*x)?.spec;
        let newer = spec.as_ref().is_none_or(|(last, _)| e >= last);
        if !comparator.is_empty() && newer && spec.as_ref() != Some(&(*e, comparator.clone())) {
            work.meta_of(*x)?.spec = Some((*e, comparator.clone()));
        }
    }
    for (x, e, comparator) in &comparators {
        let spec = &work.meta_of_ref(*x)?.spec;
        if comparator.is_empty() && spec.as_ref().is_some_and(|(last, _)| last == e) {
            // The newest comparator taken back: the one before it is not kept.
            return Err(Stop::Unkept);
        }
    }
    Ok(())
}

/// Each Result the batch set or removed leaves the run it joined and
/// joins the run that has its run_id now, if any: looked up in the `run`
/// index, or in `by_run_id` when the batch holds every run. Two runs with
/// its run_id are not kept.
fn apply_results(
    t: &mut SeriesTables<'_>,
    work: &mut Work<'_>,
    inputs: &mut Inputs<'_, '_, '_>,
    net: &[(u64, Net<'_>)],
    touched: &Touched<'_>,
    by_run_id: Option<&RunIds<'_>>,
) -> Result<(), Stop> {
    let w = inputs.w;
    for &(r, ref n) in net {
        let Some(change) = n.result else { continue };
        let old = t.results.get((w, r))?.map(|v| v.value());
        if let Some(old) = old {
            t.results.remove((w, r))?;
            work.remove_sample(t, old, r)?;
        }
        let Some(bytes) = change else { continue };
        let s = result_sample(bytes)?;
        let owner = match by_run_id {
            Some(batch) => match batch.get(s.run_id.as_str()) {
                Some(&o) => o,
                None => continue,
            },
            None => match inputs.keyed(BY_RUN_ID, &s.run_id)?.as_slice() {
                [] => continue,
                [o] => *o,
                _ => return Err(Stop::Unkept),
            },
        };
        work.add_sample(t, owner, r, &s, || run_of(inputs, touched, owner))?;
        t.results.insert((w, r), owner)?;
    }
    Ok(())
}

/// The runs the batch set: their commit, and the Results that join them
/// now (a run_id taken by a Run after its Results, or changed). A run
/// that Results join must be the only one with its run_id (`alone`: the
/// batch holds every run, and no two of them share one).
fn join_results(
    t: &mut SeriesTables<'_>,
    work: &mut Work<'_>,
    inputs: &mut Inputs<'_, '_, '_>,
    touched: &Touched<'_>,
    alone: bool,
) -> Result<(), Stop> {
    let w = inputs.w;
    let mut any_result = None;
    for (&e, (_, f)) in touched.unsettled() {
        // A run without a record (every new run of an ingest) has no
        // commit to change: its commit is hashed only when a Result joins.
        let have = match work.record(t, e)? {
            Some(_) => {
                work.set_commit(t, e, commit_id(f.commit))?;
                work.record(t, e)?.map(|r| r.results()).unwrap_or_default()
            }
            None => Vec::new(),
        };
        if have.is_empty() {
            // Asked once a batch (not once a run: `get_or_insert` would
            // evaluate its argument every time).
            let any = match any_result {
                Some(any) => any,
                None => *any_result.insert(inputs.any_result()?),
            };
            if !any {
                continue;
            }
        }
        let joined = inputs.keyed(RESULT_OF, f.run_id)?;
        if !joined.is_empty() && !alone && inputs.keyed(BY_RUN_ID, f.run_id)? != [e] {
            return Err(Stop::Unkept);
        }
        if joined == have {
            continue;
        }
        for r in have.iter().filter(|r| !joined.contains(r)) {
            work.remove_sample(t, e, *r)?;
            t.results.remove((w, *r))?;
        }
        for r in joined.iter().filter(|r| !have.contains(r)) {
            let prev = t.results.get((w, *r))?.map(|v| v.value());
            if let Some(prev) = prev {
                // It joined a run whose run_id this batch changed.
                work.remove_sample(t, prev, *r)?;
            }
            let s = result_sample(&inputs.value(RESULT, *r)?)?;
            work.add_sample(t, e, *r, &s, || run_of(inputs, touched, e))?;
            t.results.insert((w, *r), e)?;
        }
    }
    Ok(())
}

/// The experiment and commit of run `e`: from the batch when it set the
/// Run, else from the current state.
fn run_of(
    inputs: &mut Inputs<'_, '_, '_>,
    touched: &Touched<'_>,
    e: u64,
) -> Result<(String, work::CommitId), Stop> {
    if let Some((_, f)) = touched.get(&e) {
        return Ok((f.experiment.to_string(), commit_id(f.commit)));
    }
    let bytes = inputs.value(RUN, e)?;
    let f = run_facts_ref(&bytes)?;
    Ok((f.experiment.to_string(), commit_id(f.commit)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::registry;
    use autoresearch_core::{Run, RunStatus};

    /// The Runs of a large batch decoded on two threads give what one
    /// decode each gives, by position, a Run that does not decode included.
    #[test]
    fn runs_decoded_on_two_threads_equal_one_decode_each() {
        let registry = registry();
        let runs: Vec<Vec<u8>> = (0..PARALLEL_FROM as u64 + 501)
            .map(|i| {
                let mut run = Run::new(format!("r{i}"), ["a", "b"][i as usize % 2]);
                if i % 7 == 0 {
                    run.set_status(RunStatus::Crashed);
                }
                registry.encode(&run).unwrap().1
            })
            .collect();
        let net: Vec<(u64, Net<'_>)> = runs
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let run = match i % 4 {
                    0 => None,
                    1 => Some(None),
                    2 if i == 1_002 => Some(Some(&bytes[..2])),
                    _ => Some(Some(bytes.as_slice())),
                };
                let n = Net {
                    spawned: true,
                    run,
                    ..Net::default()
                };
                (i as u64, n)
            })
            .collect();
        assert!(net.len() >= PARALLEL_FROM);
        let decoded = decode_runs(&net).ok().unwrap();
        assert_eq!(decoded.len(), net.len());
        for ((_, n), got) in net.iter().zip(decoded) {
            let want = match n.run {
                Some(Some(bytes)) => Some(autoresearch_core::series::run_facts(bytes)),
                _ => None,
            };
            assert_eq!(got.map(|g| g.map(|f| f.to_facts())), want);
        }
    }
}
