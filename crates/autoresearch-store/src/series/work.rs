//! What one update of a world's series reads and changes: the blocks of
//! points, the crashed bitmaps and the run records it touches (each read
//! once, written back once at its end, only when changed, in key order),
//! and the world's metadata.

use super::SeriesTables;
use super::codec::{
    Crashed, ExperimentMeta, Meta, StoredPoint, decode_block, decode_crashed, encode_block,
    encode_crashed, set_crashed,
};
use crate::Stop;
use crate::current::EntityMap;
use autoresearch_core::series::{RunFactsRef, Sample, final_mean, task_hash};
use autoresearch_core::{RunRef, RunStatus};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A commit as the series keeps it: XXH3-128 of its text (16 bytes
/// instead of 40; two commits of one run with one hash, probability about
/// 2^-128, would be read as one).
pub(super) type CommitId = [u8; 16];

pub(super) fn commit_id(commit: &str) -> CommitId {
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

/// The inputs to the point of a run that has Results: its experiment,
/// commit and Results. A run without Results has none (its point has no
/// means); the first Result takes the run's commit from its Run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RunRecord {
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

    /// Sets the run's commit, keeping what each sample measured; whether
    /// it changed.
    fn set_commit(&mut self, commit: CommitId) -> bool {
        if self.commit == commit {
            return false;
        }
        for s in &mut self.samples {
            s.measured = match std::mem::replace(&mut s.measured, Measured::Unrecorded) {
                Measured::Run => Measured::Other(self.commit),
                Measured::Other(c) if c == commit => Measured::Run,
                other => other,
            };
        }
        self.commit = commit;
        true
    }

    /// The Result entities it holds, ascending.
    pub(super) fn results(&self) -> Vec<u64> {
        self.samples.iter().map(|s| s.entity).collect()
    }
}

/// Whether a run whose Run was `old` before a batch and has `new`'s
/// facts after it keeps its point where it was: the same experiment,
/// task, run_id and commit, so that only its crashed flag may change and
/// no Result joins or leaves it. `Some(old crashed flag)` then; `None`
/// otherwise, or when `old` does not decode (the caller takes the
/// general path, which reads the point).
pub(super) fn settled(old: &[u8], new: &RunFactsRef<'_>) -> Option<bool> {
    let old = RunRef::decode(old).ok()?;
    let same = old.experiment_name == new.experiment
        && old.run_id == new.run_id
        && old.commit_hash == new.commit
        && task_hash(old.task) == new.task;
    same.then(|| old.status.parse::<RunStatus>() == Ok(RunStatus::Crashed))
}

/// A cached value and whether it changed.
struct Cached<T> {
    value: T,
    dirty: bool,
}

/// The blocks, bitmaps, run records and metadata an update reads and
/// writes.
pub(super) struct Work<'m> {
    w: u64,
    pub(super) meta: &'m mut Meta,
    /// Whether `meta` changed.
    pub(super) meta_dirty: bool,
    blocks: BTreeMap<(u64, u64), Cached<Vec<StoredPoint>>>,
    crashed: BTreeMap<(u64, u64), Cached<Crashed>>,
    /// By entity (a map by hash: an ingest notes every new run here).
    runs: EntityMap<Cached<Option<RunRecord>>>,
    /// Runs whose means are to be recomputed.
    stale: BTreeSet<u64>,
}

impl<'m> Work<'m> {
    pub(super) fn new(w: u64, meta: &'m mut Meta) -> Work<'m> {
        Work {
            w,
            meta,
            meta_dirty: false,
            blocks: BTreeMap::new(),
            crashed: BTreeMap::new(),
            runs: EntityMap::default(),
            stale: BTreeSet::new(),
        }
    }

    /// The id of experiment `name`, added when new.
    pub(super) fn experiment(&mut self, name: &str) -> u64 {
        let list = &mut self.meta.experiments;
        let x = match list.iter().position(|m| m.name == name) {
            Some(x) => x,
            None => {
                list.push(ExperimentMeta {
                    name: name.to_string(),
                    ..ExperimentMeta::default()
                });
                self.meta_dirty = true;
                list.len() - 1
            }
        };
        x as u64
    }

    /// The experiment `x`'s metadata, to read.
    pub(super) fn meta_of_ref(&self, x: u64) -> Result<&ExperimentMeta, Stop> {
        let i = usize::try_from(x).map_err(|_| Stop::Unkept)?;
        self.meta.experiments.get(i).ok_or(Stop::Unkept)
    }

    /// The experiment `x`'s metadata, to change.
    pub(super) fn meta_of(&mut self, x: u64) -> Result<&mut ExperimentMeta, Stop> {
        self.meta_dirty = true;
        let i = usize::try_from(x).map_err(|_| Stop::Unkept)?;
        self.meta.experiments.get_mut(i).ok_or(Stop::Unkept)
    }

    fn block(
        &mut self,
        t: &SeriesTables<'_>,
        x: u64,
        e: u64,
    ) -> Result<&mut Cached<Vec<StoredPoint>>, Stop> {
        let key = (x, e >> 8);
        if !self.blocks.contains_key(&key) {
            let points = match t.points.get((self.w, x, e >> 8))? {
                Some(v) => decode_block(v.value()).ok_or(Stop::Unkept)?,
                None => Vec::new(),
            };
            self.blocks.insert(
                key,
                Cached {
                    value: points,
                    dirty: false,
                },
            );
        }
        self.blocks.get_mut(&key).ok_or(Stop::Unkept)
    }

    /// Whether experiment `x` has a point for entity `e`.
    pub(super) fn has_point(&mut self, t: &SeriesTables<'_>, x: u64, e: u64) -> Result<bool, Stop> {
        let low = (e & 0xff) as u8;
        let block = self.block(t, x, e)?;
        Ok(block.value.binary_search_by_key(&low, |p| p.low).is_ok())
    }

    /// The experiment whose point entity `e` is, if any. Cost: a block
    /// per experiment, at most.
    pub(super) fn experiment_of(
        &mut self,
        t: &SeriesTables<'_>,
        e: u64,
    ) -> Result<Option<u64>, Stop> {
        for x in 0..self.meta.experiments.len() as u64 {
            if self.has_point(t, x, e)? {
                return Ok(Some(x));
            }
        }
        Ok(None)
    }

    /// Changes `e`'s point in experiment `x` (which must exist) with
    /// `change`, which says whether it changed anything.
    pub(super) fn change_point(
        &mut self,
        t: &SeriesTables<'_>,
        x: u64,
        e: u64,
        change: impl FnOnce(&mut StoredPoint) -> bool,
    ) -> Result<(), Stop> {
        let low = (e & 0xff) as u8;
        let block = self.block(t, x, e)?;
        let i = block
            .value
            .binary_search_by_key(&low, |p| p.low)
            .map_err(|_| Stop::Unkept)?;
        if change(&mut block.value[i]) {
            block.dirty = true;
        }
        Ok(())
    }

    /// Adds a point for `e` to experiment `x` (it has none).
    pub(super) fn add_point(
        &mut self,
        t: &SeriesTables<'_>,
        x: u64,
        e: u64,
        task: u64,
    ) -> Result<(), Stop> {
        let low = (e & 0xff) as u8;
        let block = self.block(t, x, e)?;
        // Spawns come in entity order: usually a push.
        let at = match block.value.last() {
            Some(p) if p.low < low => block.value.len(),
            _ => match block.value.binary_search_by_key(&low, |p| p.low) {
                Ok(_) => return Err(Stop::Unkept),
                Err(at) => at,
            },
        };
        block.value.insert(
            at,
            StoredPoint {
                low,
                outcome: None,
                task,
                means: Vec::new(),
            },
        );
        block.dirty = true;
        self.meta_of(x)?.attempts += 1;
        Ok(())
    }

    /// Sets the crashed flag of `e`'s point in experiment `x`.
    pub(super) fn set_crashed(
        &mut self,
        t: &SeriesTables<'_>,
        x: u64,
        e: u64,
        crashed: bool,
    ) -> Result<(), Stop> {
        let key = (x, e >> 8);
        if !self.crashed.contains_key(&key) {
            let bits = match t.crashed.get((self.w, x, e >> 8))? {
                Some(v) => decode_crashed(v.value()).ok_or(Stop::Unkept)?,
                None => [0; 32],
            };
            self.crashed.insert(
                key,
                Cached {
                    value: bits,
                    dirty: false,
                },
            );
        }
        let bits = self.crashed.get_mut(&key).ok_or(Stop::Unkept)?;
        if set_crashed(&mut bits.value, (e & 0xff) as u8, crashed) {
            bits.dirty = true;
        }
        Ok(())
    }

    /// Run `e`'s record, `None` when it has none (no Results).
    pub(super) fn record(
        &mut self,
        t: &SeriesTables<'_>,
        e: u64,
    ) -> Result<Option<&mut RunRecord>, Stop> {
        if !self.runs.contains_key(&e) {
            let rec = match t.runs.get((self.w, e))? {
                Some(v) => Some(postcard::from_bytes(v.value()).map_err(|_| Stop::Unkept)?),
                None => None,
            };
            self.runs.insert(
                e,
                Cached {
                    value: rec,
                    dirty: false,
                },
            );
        }
        Ok(self.runs.get_mut(&e).and_then(|r| r.value.as_mut()))
    }

    /// Room for `n` more runs' records (an ingest notes every new run).
    pub(super) fn reserve_runs(&mut self, n: usize) {
        self.runs.reserve(n);
    }

    /// Notes that run `e` has no record yet (it is new).
    pub(super) fn no_record(&mut self, e: u64) {
        self.runs.entry(e).or_insert(Cached {
            value: None,
            dirty: false,
        });
    }

    /// Sets run `e`'s commit in its record, when it has one.
    pub(super) fn set_commit(
        &mut self,
        t: &SeriesTables<'_>,
        e: u64,
        commit: CommitId,
    ) -> Result<(), Stop> {
        if let Some(rec) = self.record(t, e)?
            && rec.set_commit(commit)
        {
            self.touch_run(e);
        }
        Ok(())
    }

    fn touch_run(&mut self, e: u64) {
        if let Some(r) = self.runs.get_mut(&e) {
            r.dirty = true;
        }
        self.stale.insert(e);
    }

    /// Adds Result `r`'s sample `s` to run `e`; `run` gives the run's
    /// experiment name and commit when it has no record yet.
    pub(super) fn add_sample(
        &mut self,
        t: &SeriesTables<'_>,
        e: u64,
        r: u64,
        s: &Sample,
        run: impl FnOnce() -> Result<(String, CommitId), Stop>,
    ) -> Result<(), Stop> {
        if self.record(t, e)?.is_none() {
            let (name, commit) = run()?;
            let x = self
                .meta
                .experiments
                .iter()
                .position(|m| m.name == name)
                .ok_or(Stop::Unkept)?;
            let experiment = u32::try_from(x).map_err(|_| Stop::Unkept)?;
            if let Some(slot) = self.runs.get_mut(&e) {
                slot.value = Some(RunRecord {
                    experiment,
                    commit,
                    samples: Vec::new(),
                });
            }
        }
        let rec = self.record(t, e)?.ok_or(Stop::Unkept)?;
        let (x, commit) = (u64::from(rec.experiment), rec.commit);
        let measured = match &s.measured {
            None => Measured::Unrecorded,
            Some(c) if commit_id(c) == commit => Measured::Run,
            Some(c) => Measured::Other(commit_id(c)),
        };
        let m = self.meta_of(x)?;
        let mut outputs = Vec::with_capacity(s.outputs.len());
        for (k, v) in &s.outputs {
            let id = m.metric_id(k).ok_or(Stop::Unkept)?;
            m.counts[usize::from(id)] += 1;
            outputs.push((id, *v));
        }
        let rec = self.record(t, e)?.ok_or(Stop::Unkept)?;
        let at = match rec.samples.binary_search_by_key(&r, |s| s.entity) {
            Ok(_) => return Err(Stop::Unkept),
            Err(at) => at,
        };
        rec.samples.insert(
            at,
            StoredSample {
                entity: r,
                measured,
                outputs,
            },
        );
        self.touch_run(e);
        Ok(())
    }

    /// Removes Result `r`'s sample from run `e` (which must hold it).
    pub(super) fn remove_sample(
        &mut self,
        t: &SeriesTables<'_>,
        e: u64,
        r: u64,
    ) -> Result<(), Stop> {
        let rec = self.record(t, e)?.ok_or(Stop::Unkept)?;
        let i = rec
            .samples
            .binary_search_by_key(&r, |s| s.entity)
            .map_err(|_| Stop::Unkept)?;
        let sample = rec.samples.remove(i);
        let x = u64::from(rec.experiment);
        let m = self.meta_of(x)?;
        for (id, _) in sample.outputs {
            let c = m.counts.get_mut(usize::from(id)).ok_or(Stop::Unkept)?;
            *c = c.saturating_sub(1);
        }
        self.touch_run(e);
        Ok(())
    }

    /// Recomputes the means of the runs whose samples or commit changed
    /// and stores every changed block, bitmap and record, in key order.
    pub(super) fn write(mut self, t: &mut SeriesTables<'_>) -> Result<(), Stop> {
        for e in std::mem::take(&mut self.stale) {
            let (x, means) = match self.runs.get(&e).and_then(|r| r.value.as_ref()) {
                Some(rec) => (u64::from(rec.experiment), rec.means()),
                None => continue,
            };
            self.change_point(t, x, e, |p| {
                let changed = p.means != means;
                p.means = means;
                changed
            })?;
        }
        let w = self.w;
        for ((x, b), block) in &self.blocks {
            if !block.dirty {
                continue;
            }
            if block.value.is_empty() {
                t.points.remove((w, *x, *b))?;
            } else {
                t.points
                    .insert((w, *x, *b), encode_block(&block.value).as_slice())?;
            }
        }
        for ((x, b), bits) in &self.crashed {
            if !bits.dirty {
                continue;
            }
            if bits.value == [0; 32] {
                t.crashed.remove((w, *x, *b))?;
            } else {
                t.crashed
                    .insert((w, *x, *b), encode_crashed(&bits.value).as_slice())?;
            }
        }
        // Written in key order.
        let mut dirty: Vec<(&u64, &Cached<Option<RunRecord>>)> =
            self.runs.iter().filter(|(_, rec)| rec.dirty).collect();
        dirty.sort_unstable_by_key(|(e, _)| **e);
        for (e, rec) in dirty {
            match &rec.value {
                Some(r) if !r.samples.is_empty() => {
                    let bytes = postcard::to_allocvec(r).map_err(|_| Stop::Unkept)?;
                    t.runs.insert((w, *e), bytes.as_slice())?;
                }
                // No Results left: the run needs no record.
                _ => {
                    t.runs.remove((w, *e))?;
                }
            }
        }
        Ok(())
    }
}
