//! The chart series of each root world's experiments (core's `series`
//! module says what it holds), kept beside its log in the same write
//! transaction as each appended tick: `autoresearch plot` of a million
//! attempts then reads packed blocks of numbers instead of decoding every
//! Run and parsing every Result.
//!
//! Tables (all keyed by world first):
//!
//! - `series_head`: `world` -> version, the tick the others are the state
//!   after (little-endian `u64`), then the postcard of [`Meta`] (per
//!   experiment: its metric names and how many Results have each, and the
//!   newest comparator). They are used only when that tick is the world's
//!   head.
//! - `series_points`: `(world, experiment, entity >> 8)` -> a block of up
//!   to 256 points (see [`encode_block`]): what the chart reads.
//! - `series_runs`: `(world, run entity)` -> postcard of [`RunRecord`]: the
//!   run's commit (as a 128-bit hash, [`commit_id`]) and its Results'
//!   numeric outputs, to recompute its point
//!   when they change. Written, never read by a chart.
//! - `series_run_ids`: `(world, run_id)` -> run entity: how a Result joins.
//! - `series_results`: `(world, Result entity)` -> run entity.
//!
//! A root world created by this build keeps them from tick 0. A world
//! whose head entry is not at its head (a fork, one of a ledger written
//! before these tables, one appended to by an older build) keeps none
//! from then on. So does a world whose history leaves the series not
//! provably equal to `autoresearch_core::series::series_of_state`: a
//! lifecycle value that does not decode, two Runs with one `run_id`, a
//! Result or Outcome before its Run, a Run removed or changed to another
//! `run_id` or experiment, the newest comparator taken back. Its entries
//! are then deleted and its charts materialize: never a stale answer.

mod codec;
mod read;

#[cfg(test)]
pub(crate) use codec::VERSION;
pub(crate) use read::{read, table_bytes};

use crate::{EncodedAppend, Failure};
use autoresearch_core::current::{FactsError, OUTCOME, RESULT, RUN};
use autoresearch_core::series::{final_mean, outcome_facts, result_sample, run_facts};
use autoresearch_core::{Change, Tick, WorldInfo};
use codec::{
    ExperimentMeta, Meta, StoredPoint, decode_block, decode_head, encode_block, encode_head,
};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// `world` -> version, tick, postcard of [`Meta`].
pub(crate) const HEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("series_head");
/// `(world, experiment, entity >> 8)` -> a block of points.
pub(crate) const POINTS: TableDefinition<(u64, u64, u64), &[u8]> =
    TableDefinition::new("series_points");
/// `(world, run entity)` -> postcard of [`RunRecord`].
pub(crate) const RUNS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("series_runs");
/// `(world, run_id)` -> run entity.
pub(crate) const RUN_IDS: TableDefinition<(u64, &str), u64> =
    TableDefinition::new("series_run_ids");
/// `(world, Result entity)` -> run entity.
pub(crate) const RESULTS: TableDefinition<(u64, u64), u64> = TableDefinition::new("series_results");

/// A commit as the series keeps it: XXH3-128 of its text (16 bytes
/// instead of 40; two commits of one run with one hash, probability about
/// 2^-128, would be read as one).
type CommitId = [u8; 16];

fn commit_id(commit: &str) -> CommitId {
    xxhash_rust::xxh3::xxh3_128(commit.as_bytes()).to_le_bytes()
}

/// The commit a Result measured, relative to its run's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Measured {
    /// None recorded: it counts for any commit.
    Unrecorded,
    /// The run's commit (kept so when the run's commit changes).
    Run,
    /// Another commit ([`commit_id`]).
    Other(CommitId),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSample {
    entity: u64,
    measured: Measured,
    /// `(metric id, value)`.
    outputs: Vec<(u16, f64)>,
}

/// A run's inputs to its point.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunRecord {
    experiment: u32,
    commit: CommitId,
    /// Its Results, in entity order.
    samples: Vec<StoredSample>,
}

impl RunRecord {
    /// `(metric id, mean over final samples)` for every metric with one,
    /// by metric id.
    fn means(&self) -> Vec<(u16, f64)> {
        let finals: Vec<&StoredSample> = self
            .samples
            .iter()
            .filter(|s| match &s.measured {
                Measured::Unrecorded | Measured::Run => true,
                // Never the run's own (that is `Run`).
                Measured::Other(_) => self.commit == commit_id(""),
            })
            .collect();
        let mut ids: Vec<u16> = finals
            .iter()
            .flat_map(|s| s.outputs.iter().map(|(m, _)| *m))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|m| {
                let values = finals
                    .iter()
                    .filter_map(|s| s.outputs.iter().find(|(k, _)| *k == m).map(|(_, v)| *v));
                final_mean(values).map(|v| (m, v))
            })
            .collect()
    }

    /// Sets the run's commit, keeping what each sample measured.
    fn set_commit(&mut self, commit: CommitId) {
        if self.commit == commit {
            return;
        }
        for s in &mut self.samples {
            s.measured = match std::mem::replace(&mut s.measured, Measured::Unrecorded) {
                Measured::Run => Measured::Other(self.commit),
                Measured::Other(c) if c == commit => Measured::Run,
                other => other,
            };
        }
        self.commit = commit;
    }
}

/// The series tables inside a write transaction.
pub(crate) struct SeriesTables<'t> {
    head: Table<'t, u64, &'static [u8]>,
    points: Table<'t, (u64, u64, u64), &'static [u8]>,
    runs: Table<'t, (u64, u64), &'static [u8]>,
    run_ids: Table<'t, (u64, &'static str), u64>,
    results: Table<'t, (u64, u64), u64>,
}

impl<'t> SeriesTables<'t> {
    /// Opens (creating when missing) the tables.
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<SeriesTables<'t>, Failure> {
        Ok(SeriesTables {
            head: txn.open_table(HEAD)?,
            points: txn.open_table(POINTS)?,
            runs: txn.open_table(RUNS)?,
            run_ids: txn.open_table(RUN_IDS)?,
            results: txn.open_table(RESULTS)?,
        })
    }

    /// Deletes every entry of world `w`.
    pub(crate) fn delete(&mut self, w: u64) -> Result<(), Failure> {
        self.head.remove(w)?;
        self.points
            .retain_in((w, 0, 0)..=(w, u64::MAX, u64::MAX), |_, _| false)?;
        self.runs.retain_in((w, 0)..=(w, u64::MAX), |_, _| false)?;
        self.run_ids.retain_in((w, "")..(w + 1, ""), |_, _| false)?;
        self.results
            .retain_in((w, 0)..=(w, u64::MAX), |_, _| false)?;
        Ok(())
    }
}

/// Why an update stopped.
enum Stop {
    /// The series cannot be kept provably equal to the reference: stop
    /// keeping it for this world.
    Unkept,
    /// redb failed: the whole transaction aborts.
    Db(Failure),
}

impl<E: Into<Failure>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Db(e.into())
    }
}

impl From<FactsError> for Stop {
    fn from(_: FactsError) -> Self {
        Stop::Unkept
    }
}

/// Applies `appends` (already checked, about to be stored) to `info`'s
/// world's series, when it keeps one. `info` is the catalogue entry before
/// the append.
pub(crate) fn maintain(
    t: &mut SeriesTables<'_>,
    info: &WorldInfo,
    appends: &[EncodedAppend],
) -> Result<(), Failure> {
    let Some(last) = appends.last() else {
        return Ok(());
    };
    let w = info.id.0;
    let entry = t.head.get(w)?.map(|v| decode_head(v.value()));
    let meta = match entry {
        Some(Some((tick, meta))) if tick == info.head => meta,
        None if info.parent.is_none() && info.head == Tick::ZERO => Meta::default(),
        None => return Ok(()),
        // Stale (appended to by an older build) or unreadable.
        Some(_) => return t.delete(w),
    };
    let mut meta = meta;
    match update(t, w, &mut meta, appends) {
        Ok(()) => match encode_head(last.tick, &meta) {
            Some(bytes) => {
                t.head.insert(w, bytes.as_slice())?;
                Ok(())
            }
            None => t.delete(w),
        },
        Err(Stop::Unkept) => t.delete(w),
        Err(Stop::Db(f)) => Err(f),
    }
}

/// The net change of a batch to one entity's lifecycle components:
/// `Some(None)` removed, `Some(Some(v))` set to `v`, `None` untouched.
#[derive(Default)]
struct Net<'a> {
    run: Option<Option<&'a [u8]>>,
    outcome: Option<Option<&'a [u8]>>,
    result: Option<Option<&'a [u8]>>,
}

/// The blocks, run records and metadata an update reads and writes,
/// written back once at its end.
struct Work<'m> {
    w: u64,
    meta: &'m mut Meta,
    blocks: HashMap<(u64, u64), Vec<StoredPoint>>,
    runs: HashMap<u64, RunRecord>,
    dirty_runs: Vec<u64>,
}

impl Work<'_> {
    fn run<'r>(
        &'r mut self,
        t: &SeriesTables<'_>,
        e: u64,
    ) -> Result<Option<&'r mut RunRecord>, Stop> {
        if !self.runs.contains_key(&e) {
            let Some(v) = t.runs.get((self.w, e))? else {
                return Ok(None);
            };
            let rec: RunRecord = postcard::from_bytes(v.value()).map_err(|_| Stop::Unkept)?;
            self.runs.insert(e, rec);
        }
        Ok(self.runs.get_mut(&e))
    }

    fn point<'p>(
        &'p mut self,
        t: &SeriesTables<'_>,
        x: u64,
        e: u64,
    ) -> Result<&'p mut StoredPoint, Stop> {
        let key = (x, e >> 8);
        if !self.blocks.contains_key(&key) {
            let points = match t.points.get((self.w, x, e >> 8))? {
                Some(v) => decode_block(v.value()).ok_or(Stop::Unkept)?,
                None => Vec::new(),
            };
            self.blocks.insert(key, points);
        }
        let block = self.blocks.get_mut(&key).ok_or(Stop::Unkept)?;
        let low = (e & 0xff) as u8;
        let i = match block.binary_search_by_key(&low, |p| p.low) {
            Ok(i) => i,
            Err(i) => {
                block.insert(
                    i,
                    StoredPoint {
                        low,
                        outcome: None,
                        crashed: false,
                        task: 0,
                        means: Vec::new(),
                    },
                );
                i
            }
        };
        Ok(&mut block[i])
    }
}

fn update(
    t: &mut SeriesTables<'_>,
    w: u64,
    meta: &mut Meta,
    appends: &[EncodedAppend],
) -> Result<(), Stop> {
    let mut net: BTreeMap<u64, Net<'_>> = BTreeMap::new();
    for a in appends {
        for change in &a.changes_full {
            match change {
                Change::Spawn { .. } => {}
                Change::Set {
                    entity,
                    component,
                    value,
                } => {
                    let n = net.entry(entity.0).or_default();
                    match component.as_str() {
                        RUN => n.run = Some(Some(value)),
                        OUTCOME => n.outcome = Some(Some(value)),
                        RESULT => n.result = Some(Some(value)),
                        _ => {}
                    }
                }
                Change::Remove { entity, component } => {
                    let n = net.entry(entity.0).or_default();
                    match component.as_str() {
                        RUN => n.run = Some(None),
                        OUTCOME => n.outcome = Some(None),
                        RESULT => n.result = Some(None),
                        _ => {}
                    }
                }
                Change::Despawn { entity } => {
                    let n = net.entry(entity.0).or_default();
                    n.run = Some(None);
                    n.outcome = Some(None);
                    n.result = Some(None);
                }
            }
        }
    }
    if net.is_empty() {
        return Ok(());
    }
    let mut work = Work {
        w,
        meta,
        blocks: HashMap::new(),
        runs: HashMap::new(),
        dirty_runs: Vec::new(),
    };
    // Runs first, so that an Outcome or Result of the same batch finds its run.
    for (&e, n) in &net {
        let Some(change) = n.run else { continue };
        let existing = work.run(t, e)?.is_some();
        let Some(bytes) = change else {
            if existing {
                return Err(Stop::Unkept);
            }
            continue;
        };
        let facts = run_facts(bytes)?;
        let owner = t
            .run_ids
            .get((w, facts.run_id.as_str()))?
            .map(|v| v.value());
        let x = if existing {
            let rec = work.run(t, e)?.ok_or(Stop::Unkept)?;
            let x = rec.experiment;
            let same_experiment = work
                .meta
                .experiments
                .get(x as usize)
                .is_some_and(|m| m.name == facts.experiment);
            if owner != Some(e) || !same_experiment {
                return Err(Stop::Unkept);
            }
            if let Some(rec) = work.run(t, e)? {
                rec.set_commit(commit_id(&facts.commit));
            }
            x
        } else {
            if owner.is_some() {
                return Err(Stop::Unkept);
            }
            let x = match work
                .meta
                .experiments
                .iter()
                .position(|m| m.name == facts.experiment)
            {
                Some(x) => x,
                None => {
                    work.meta.experiments.push(ExperimentMeta {
                        name: facts.experiment.clone(),
                        ..ExperimentMeta::default()
                    });
                    work.meta.experiments.len() - 1
                }
            } as u32;
            if let Some(m) = work.meta.experiments.get_mut(x as usize) {
                m.attempts += 1;
            }
            t.run_ids.insert((w, facts.run_id.as_str()), e)?;
            work.runs.insert(
                e,
                RunRecord {
                    experiment: x,
                    commit: commit_id(&facts.commit),
                    samples: Vec::new(),
                },
            );
            x
        };
        let p = work.point(t, u64::from(x), e)?;
        p.crashed = facts.crashed;
        p.task = facts.task;
        work.dirty_runs.push(e);
    }
    for (&e, n) in &net {
        let Some(change) = n.outcome else { continue };
        let Some(x) = work.run(t, e)?.map(|r| r.experiment) else {
            if change.is_some() {
                // An Outcome without a Run: were a Run set later, its
                // point would miss it.
                return Err(Stop::Unkept);
            }
            continue;
        };
        let facts = change.map(outcome_facts).transpose()?;
        let comparator = facts.as_ref().map_or("", |(_, c)| c.as_str());
        let m = work
            .meta
            .experiments
            .get_mut(x as usize)
            .ok_or(Stop::Unkept)?;
        if !comparator.is_empty() {
            if m.spec.as_ref().is_none_or(|(last, _)| e >= *last) {
                m.spec = Some((e, comparator.to_string()));
            }
        } else if m.spec.as_ref().is_some_and(|(last, _)| *last == e) {
            // The newest comparator taken back: the one before it is not kept.
            return Err(Stop::Unkept);
        }
        work.point(t, u64::from(x), e)?.outcome = facts.map(|(k, _)| k);
    }
    for (&e, n) in &net {
        let Some(change) = n.result else { continue };
        let old = t.results.remove((w, e))?.map(|v| v.value());
        if let Some(old) = old {
            let rec = work.run(t, old)?.ok_or(Stop::Unkept)?;
            let x = rec.experiment as usize;
            let Some(i) = rec.samples.iter().position(|s| s.entity == e) else {
                return Err(Stop::Unkept);
            };
            let sample = rec.samples.remove(i);
            let m = work.meta.experiments.get_mut(x).ok_or(Stop::Unkept)?;
            for (id, _) in sample.outputs {
                let c = m.counts.get_mut(id as usize).ok_or(Stop::Unkept)?;
                *c = c.saturating_sub(1);
            }
            work.dirty_runs.push(old);
        }
        let Some(bytes) = change else { continue };
        let s = result_sample(bytes)?;
        let Some(owner) = t.run_ids.get((w, s.run_id.as_str()))?.map(|v| v.value()) else {
            // A Result before its Run.
            return Err(Stop::Unkept);
        };
        let rec = work.run(t, owner)?.ok_or(Stop::Unkept)?;
        let x = rec.experiment as usize;
        let measured = match s.measured {
            None => Measured::Unrecorded,
            Some(c) if commit_id(&c) == rec.commit => Measured::Run,
            Some(c) => Measured::Other(commit_id(&c)),
        };
        let m = work.meta.experiments.get_mut(x).ok_or(Stop::Unkept)?;
        let mut outputs = Vec::with_capacity(s.outputs.len());
        for (k, v) in &s.outputs {
            let id = m.metric_id(k).ok_or(Stop::Unkept)?;
            m.counts[id as usize] += 1;
            outputs.push((id, *v));
        }
        let rec = work.run(t, owner)?.ok_or(Stop::Unkept)?;
        let at = rec.samples.partition_point(|x| x.entity < e);
        rec.samples.insert(
            at,
            StoredSample {
                entity: e,
                measured,
                outputs,
            },
        );
        t.results.insert((w, e), owner)?;
        work.dirty_runs.push(owner);
    }
    let mut dirty = std::mem::take(&mut work.dirty_runs);
    dirty.sort_unstable();
    dirty.dedup();
    for e in dirty {
        let rec = work.run(t, e)?.ok_or(Stop::Unkept)?;
        let (x, means) = (u64::from(rec.experiment), rec.means());
        work.point(t, x, e)?.means = means;
    }
    for (e, rec) in &work.runs {
        let bytes = postcard::to_allocvec(rec).map_err(|_| Stop::Unkept)?;
        t.runs.insert((w, *e), bytes.as_slice())?;
    }
    for ((x, b), points) in &work.blocks {
        t.points
            .insert((w, *x, *b), encode_block(points).as_slice())?;
    }
    Ok(())
}
