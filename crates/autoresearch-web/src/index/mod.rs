//! The dashboard's data access: every read of the ledger goes through here,
//! so that faster queries (a store-side run index) can replace what is
//! built here without touching the handlers.
//!
//! A [`WorldIndex`] is a typed, paged view of one world at one tick: its
//! runs in the order they were recorded, each with its Outcome and the
//! numeric values of its Results, plus counts, the runs in flight and the
//! runs waiting for votes, all kept up to date as ticks are applied. The
//! live index of a world is built once (a materialization of its head,
//! O(state)) and then follows the ledger by applying only the records after
//! the tick it is at (O(new ticks)), so a page costs O(page), not
//! O(history). A past tick (time travel) is materialized on demand through
//! [`ledger::state_at`] (one snapshot plus at most a snapshot interval of
//! replay) and a few are kept.
//!
//! Besides the Runs, Outcomes and Results, the index keeps what the pages
//! show of the run's other components (Description, RunCost, Confirmation),
//! the experiment's NoiseModel, the scheduler jobs (ExecutorJob) by run, and
//! the summed cost, each updated as its ticks are applied. A run page reads
//! the run's history through the store's entity index for the ticks before
//! the index's window of the last [`RECENT_TICKS`] and from the window for
//! the rest, so it costs the ticks that touched the run, not the history.

use crate::error::WebError;
use autoresearch_core::{
    AttemptState, BranchHead, ComponentRegistry, Confirmation, Description, EntityId, EvalResult,
    ExecutorJob, Experiment, NoiseModel, Outcome, OutcomeStatus, Run, RunCost, RunStatus, State,
    Storage, Tick, TickRecord, Vote, WorldId, WorldInfo, ledger, record::Change,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::RwLock;

/// Picks the metric a world's charts and tables show from the comparator
/// spec its Outcomes name: `Some((metric, minimize))`, or `None` when the
/// spec names none (the dashboard then takes the first numeric output).
/// The CLI passes one built on `autoresearch-compare`'s spec parser.
pub type MetricPicker = Arc<dyn Fn(&str) -> Option<(String, bool)> + Send + Sync>;

mod ledger_view;
mod recent;
mod rows;

pub use ledger_view::LedgerView;
pub use recent::{RECENT_TICKS, RecentTicks};
pub use rows::{Counts, RowClass, RunExtras, RunRow, Sample};

/// What one entity of the world is, as far as the index cares.
#[derive(Clone, Debug)]
enum Slot {
    /// A Run: its position in `runs`.
    Run(usize),
    /// A Result of the run with this id.
    Result(String),
    /// A Vote on the run with this id.
    Vote(String),
    /// An ExecutorJob of the run with this id.
    Job(String),
    /// A spawned entity with no component the index reads yet, or another kind.
    Other,
}

/// A typed view of one world at one tick (see the module docs).
#[derive(Debug)]
pub struct WorldIndex {
    /// The world's catalogue entry as of the last refresh.
    pub info: WorldInfo,
    /// The tick this index is at.
    pub tick: Tick,
    /// When that tick was committed (Unix ms); 0 at tick 0.
    pub at_ms: i64,
    /// The world's Experiment records.
    pub experiments: Vec<Experiment>,
    /// The world's BranchHeads, one per experiment.
    pub heads: Vec<BranchHead>,
    /// Every run, in the order it was recorded.
    pub runs: Vec<RunRow>,
    /// Counts by class.
    pub counts: Counts,
    /// Positions of runs in flight.
    pub in_flight: BTreeSet<usize>,
    /// Positions of runs waiting for votes.
    pub pending: BTreeSet<usize>,
    /// The comparator spec of the stored Outcome that names one on the
    /// newest entity (the latest run's), empty when none does.
    pub comparator: String,
    /// The comparator spec of each stored Outcome that names one.
    specs: BTreeMap<EntityId, String>,
    /// The numeric output names seen, in first-seen order (some may be
    /// of Results since removed: see `metric`).
    pub metric_names: Vec<Arc<str>>,
    /// How many stored Results have each numeric output name.
    name_uses: HashMap<Arc<str>, usize>,
    /// Every run's cost, summed (kept up to date as costs change).
    pub cost: RunCost,
    /// The NoiseModels of the world's experiments, by entity.
    noise: HashMap<EntityId, NoiseModel>,
    /// Scheduler jobs by run id, each by its entity.
    jobs: HashMap<String, BTreeMap<EntityId, ExecutorJob>>,
    /// Run extras set on an entity before its Run (or left by a removed Run).
    early_extras: HashMap<EntityId, Box<RunExtras>>,
    /// The entities changed by the last ticks up to `tick`.
    pub recent: RecentTicks,
    slots: HashMap<EntityId, Slot>,
    by_run_id: HashMap<String, usize>,
    experiment_entities: HashMap<EntityId, usize>,
    head_entities: HashMap<EntityId, usize>,
    /// Samples of run ids not seen yet (a Result recorded before its Run).
    orphans: HashMap<String, Vec<Sample>>,
    /// Votes on run ids not seen yet.
    orphan_votes: HashMap<String, usize>,
    votes: HashMap<EntityId, Vote>,
    interned: HashMap<Box<str>, Arc<str>>,
}

impl WorldIndex {
    fn empty(info: WorldInfo) -> WorldIndex {
        WorldIndex {
            info,
            tick: Tick::ZERO,
            at_ms: 0,
            experiments: Vec::new(),
            heads: Vec::new(),
            runs: Vec::new(),
            counts: Counts::default(),
            in_flight: BTreeSet::new(),
            pending: BTreeSet::new(),
            comparator: String::new(),
            specs: BTreeMap::new(),
            metric_names: Vec::new(),
            name_uses: HashMap::new(),
            cost: RunCost::default(),
            noise: HashMap::new(),
            jobs: HashMap::new(),
            early_extras: HashMap::new(),
            recent: RecentTicks::default(),
            slots: HashMap::new(),
            by_run_id: HashMap::new(),
            experiment_entities: HashMap::new(),
            head_entities: HashMap::new(),
            orphans: HashMap::new(),
            orphan_votes: HashMap::new(),
            votes: HashMap::new(),
            interned: HashMap::new(),
        }
    }

    /// The index of a materialized state. Cost: O(entities), decoding each
    /// component the index reads once.
    pub fn from_state(
        info: WorldInfo,
        state: &State,
        registry: &ComponentRegistry,
    ) -> Result<WorldIndex, WebError> {
        let mut idx = WorldIndex::empty(info);
        for (entity, comps) in &state.entities {
            idx.slots.insert(*entity, Slot::Other);
            // Runs before their Outcome, so the Outcome finds its row.
            let mut names: Vec<&String> = comps.keys().collect();
            names.sort_by_key(|n| n.as_str() != "Run");
            for name in names {
                idx.set(registry, state.tick, 0, *entity, name, &comps[name])?;
            }
        }
        idx.tick = state.tick;
        Ok(idx)
    }

    /// Applies one record (the tick after this index's).
    pub fn apply(
        &mut self,
        registry: &ComponentRegistry,
        record: &TickRecord,
    ) -> Result<(), WebError> {
        for change in &record.changes {
            match change {
                Change::Spawn { entity } => {
                    self.slots.insert(*entity, Slot::Other);
                }
                Change::Set {
                    entity,
                    component,
                    value,
                } => self.set(
                    registry,
                    record.tick,
                    record.at_ms,
                    *entity,
                    component,
                    value,
                )?,
                Change::Remove { entity, component } => {
                    self.remove(record.tick, *entity, component)
                }
                Change::Despawn { entity } => self.despawn(record.tick, *entity),
            }
        }
        self.recent.push(record);
        self.tick = record.tick;
        self.at_ms = record.at_ms;
        Ok(())
    }

    fn decode<T: autoresearch_core::registry::ComponentValue>(
        &self,
        registry: &ComponentRegistry,
        tick: Tick,
        bytes: &[u8],
    ) -> Result<T, WebError> {
        registry
            .decode::<T>(self.info.id, bytes)
            .map_err(|e| WebError::Ledger {
                doing: format!("reading world {:?} at tick {}", self.info.name, tick.0),
                message: e.to_string(),
            })
    }

    /// Runs `f` on row `pos`, keeping counts and the in-flight and pending
    /// sets in step with what it changes.
    fn with_row(&mut self, pos: usize, tick: Tick, at_ms: i64, f: impl FnOnce(&mut RunRow)) {
        let Some(row) = self.runs.get_mut(pos) else {
            return;
        };
        self.counts.add(row, -1);
        f(row);
        row.last_tick = tick;
        row.last_at_ms = row.last_at_ms.max(at_ms);
        self.counts.add(row, 1);
        self.track(pos);
    }

    /// Puts row `pos` in or out of the in-flight and pending sets.
    fn track(&mut self, pos: usize) {
        let row = &self.runs[pos];
        set_member(&mut self.in_flight, pos, row.phase().is_in_flight());
        set_member(&mut self.pending, pos, row.class() == RowClass::Pending);
    }

    fn set(
        &mut self,
        registry: &ComponentRegistry,
        tick: Tick,
        at_ms: i64,
        entity: EntityId,
        component: &str,
        value: &[u8],
    ) -> Result<(), WebError> {
        match component {
            "Run" => {
                let run: Run = self.decode(registry, tick, value)?;
                match self.slots.get(&entity) {
                    Some(Slot::Run(pos)) => {
                        let pos = *pos;
                        self.with_row(pos, tick, at_ms, |row| row.run = run);
                    }
                    _ => {
                        let pos = self.runs.len();
                        let samples = self.orphans.remove(&run.run_id).unwrap_or_default();
                        let votes = self
                            .votes
                            .values()
                            .filter(|v| v.run_id == run.run_id)
                            .count();
                        self.by_run_id.insert(run.run_id.clone(), pos);
                        self.slots.insert(entity, Slot::Run(pos));
                        self.runs.push(RunRow {
                            entity,
                            run,
                            outcome: None,
                            samples,
                            votes,
                            last_tick: tick,
                            last_at_ms: at_ms,
                            extras: self.early_extras.remove(&entity),
                        });
                        self.counts.add(&self.runs[pos], 1);
                        self.track(pos);
                    }
                }
            }
            "Outcome" => {
                let outcome: Outcome = self.decode(registry, tick, value)?;
                if outcome.comparator.is_empty() {
                    self.specs.remove(&entity);
                } else {
                    self.specs.insert(entity, outcome.comparator.clone());
                }
                self.update_comparator();
                if let Some(Slot::Run(pos)) = self.slots.get(&entity) {
                    let pos = *pos;
                    self.with_row(pos, tick, at_ms, |row| row.outcome = Some(outcome));
                }
            }
            "Result" => {
                let result: EvalResult = self.decode(registry, tick, value)?;
                let sample = self.sample(entity, &result);
                let run_id = result.run_id;
                // A Result entity set again replaces its sample.
                if let Some(Slot::Result(old)) = self.slots.get(&entity).cloned() {
                    self.drop_sample(tick, at_ms, &old, entity);
                }
                self.slots.insert(entity, Slot::Result(run_id.clone()));
                match self.by_run_id.get(&run_id) {
                    Some(pos) => {
                        let pos = *pos;
                        self.with_row(pos, tick, at_ms, |row| row.samples.push(sample));
                    }
                    None => self.orphans.entry(run_id).or_default().push(sample),
                }
            }
            "Vote" => {
                let vote: Vote = self.decode(registry, tick, value)?;
                // A Vote entity set again replaces its vote.
                if let Some(Slot::Vote(old)) = self.slots.get(&entity).cloned() {
                    self.drop_vote(tick, entity, &old);
                }
                match self.by_run_id.get(&vote.run_id).copied() {
                    Some(pos) => self.with_row(pos, tick, at_ms, |row| row.votes += 1),
                    None => *self.orphan_votes.entry(vote.run_id.clone()).or_default() += 1,
                }
                self.slots.insert(entity, Slot::Vote(vote.run_id.clone()));
                self.votes.insert(entity, vote);
            }
            "Experiment" => {
                let exp: Experiment = self.decode(registry, tick, value)?;
                match self.experiment_entities.get(&entity) {
                    Some(i) => self.experiments[*i] = exp,
                    None => {
                        self.experiment_entities
                            .insert(entity, self.experiments.len());
                        self.experiments.push(exp);
                    }
                }
            }
            "BranchHead" => {
                let head: BranchHead = self.decode(registry, tick, value)?;
                match self.head_entities.get(&entity) {
                    Some(i) => self.heads[*i] = head,
                    None => {
                        self.head_entities.insert(entity, self.heads.len());
                        self.heads.push(head);
                    }
                }
            }
            "Description" => {
                let d: Description = self.decode(registry, tick, value)?;
                self.set_extra(tick, at_ms, entity, |x| x.description = Some(d));
            }
            "RunCost" => {
                let c: RunCost = self.decode(registry, tick, value)?;
                add_cost(&mut self.cost, &c, 1.0);
                let mut old = None;
                self.set_extra(tick, at_ms, entity, |x| old = x.cost.replace(c));
                if let Some(old) = old {
                    add_cost(&mut self.cost, &old, -1.0);
                }
            }
            "Confirmation" => {
                let c: Confirmation = self.decode(registry, tick, value)?;
                self.set_extra(tick, at_ms, entity, |x| x.confirmation = Some(c));
            }
            "NoiseModel" => {
                let n: NoiseModel = self.decode(registry, tick, value)?;
                self.noise.insert(entity, n);
            }
            "ExecutorJob" => {
                let job: ExecutorJob = self.decode(registry, tick, value)?;
                if let Some(Slot::Job(old)) = self.slots.get(&entity).cloned() {
                    self.drop_job(entity, &old);
                }
                self.slots.insert(entity, Slot::Job(job.run_id.clone()));
                self.jobs
                    .entry(job.run_id.clone())
                    .or_default()
                    .insert(entity, job);
            }
            _ => {}
        }
        Ok(())
    }

    /// Changes the extras of the run on `entity` (kept aside until its Run
    /// comes when it has none yet).
    fn set_extra(
        &mut self,
        tick: Tick,
        at_ms: i64,
        entity: EntityId,
        f: impl FnOnce(&mut RunExtras),
    ) {
        let apply = |extras: &mut Option<Box<RunExtras>>| {
            let x = extras.get_or_insert_with(Box::default);
            f(x);
            if x.is_empty() {
                *extras = None;
            }
        };
        match self.slots.get(&entity) {
            Some(Slot::Run(pos)) => {
                let pos = *pos;
                self.with_row(pos, tick, at_ms, |row| apply(&mut row.extras));
            }
            _ => {
                let mut extras = self.early_extras.remove(&entity);
                apply(&mut extras);
                if let Some(x) = extras {
                    self.early_extras.insert(entity, x);
                }
            }
        }
    }

    /// Sets `comparator` from `specs`, so that a live index and one built
    /// afresh agree however the Outcomes came and went.
    fn update_comparator(&mut self) {
        let newest = self.specs.values().next_back().map_or("", |s| s.as_str());
        if self.comparator != newest {
            self.comparator = newest.to_string();
        }
    }

    fn drop_job(&mut self, entity: EntityId, run_id: &str) {
        if let Some(jobs) = self.jobs.get_mut(run_id) {
            jobs.remove(&entity);
            if jobs.is_empty() {
                self.jobs.remove(run_id);
            }
        }
    }

    fn drop_sample(&mut self, tick: Tick, at_ms: i64, run_id: &str, entity: EntityId) {
        let mut gone: Vec<Arc<str>> = Vec::new();
        let mut keep = |s: &Sample| {
            let kept = s.entity != entity;
            if !kept {
                gone.extend(s.values.iter().map(|(k, _)| k.clone()));
            }
            kept
        };
        match self.by_run_id.get(run_id) {
            Some(pos) => {
                let pos = *pos;
                self.with_row(pos, tick, at_ms, |row| row.samples.retain(|s| keep(s)));
            }
            None => {
                if let Some(v) = self.orphans.get_mut(run_id) {
                    v.retain(|s| keep(s));
                }
            }
        }
        for name in gone {
            if let Some(n) = self.name_uses.get_mut(&name) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn remove(&mut self, tick: Tick, entity: EntityId, component: &str) {
        match (component, self.slots.get(&entity).cloned()) {
            ("Outcome", slot) => {
                self.specs.remove(&entity);
                self.update_comparator();
                if let Some(Slot::Run(pos)) = slot {
                    self.with_row(pos, tick, 0, |row| row.outcome = None)
                }
            }
            ("Result", Some(Slot::Result(run_id))) => {
                self.drop_sample(tick, 0, &run_id, entity);
                self.slots.insert(entity, Slot::Other);
            }
            ("Vote", Some(Slot::Vote(run_id))) => self.drop_vote(tick, entity, &run_id),
            ("Run", Some(Slot::Run(pos))) => {
                self.remove_row(pos);
                self.slots.insert(entity, Slot::Other);
            }
            ("ExecutorJob", Some(Slot::Job(run_id))) => {
                self.drop_job(entity, &run_id);
                self.slots.insert(entity, Slot::Other);
            }
            ("NoiseModel", _) => {
                self.noise.remove(&entity);
            }
            ("Description", _) => self.set_extra(tick, 0, entity, |x| x.description = None),
            ("Confirmation", _) => self.set_extra(tick, 0, entity, |x| x.confirmation = None),
            ("RunCost", _) => {
                let mut old = None;
                self.set_extra(tick, 0, entity, |x| old = x.cost.take());
                if let Some(old) = old {
                    add_cost(&mut self.cost, &old, -1.0);
                }
            }
            _ => {}
        }
    }

    /// Takes row `pos` out (its Run was removed or despawned), so that the
    /// index is the one a fresh materialization builds: the rows after it
    /// move up, and its Results and Votes wait for a Run of that id again.
    /// Cost: O(entities); the loop never removes a Run, so this is rare.
    fn remove_row(&mut self, pos: usize) {
        if pos >= self.runs.len() {
            return;
        }
        self.counts.add(&self.runs[pos], -1);
        let mut row = self.runs.remove(pos);
        self.by_run_id.remove(&row.run.run_id);
        if let Some(extras) = row.extras.take() {
            self.early_extras.insert(row.entity, extras);
        }
        for p in self.by_run_id.values_mut() {
            if *p > pos {
                *p -= 1;
            }
        }
        for slot in self.slots.values_mut() {
            if let Slot::Run(p) = slot
                && *p > pos
            {
                *p -= 1;
            }
        }
        let shift = |set: &BTreeSet<usize>| -> BTreeSet<usize> {
            set.iter()
                .filter(|p| **p != pos)
                .map(|p| if *p > pos { p - 1 } else { *p })
                .collect()
        };
        self.in_flight = shift(&self.in_flight);
        self.pending = shift(&self.pending);
        if !row.samples.is_empty() {
            self.orphans
                .entry(row.run.run_id.clone())
                .or_default()
                .extend(row.samples);
        }
        if row.votes > 0 {
            *self.orphan_votes.entry(row.run.run_id).or_default() += row.votes;
        }
    }

    fn drop_vote(&mut self, tick: Tick, entity: EntityId, run_id: &str) {
        if self.votes.remove(&entity).is_some() {
            match self.by_run_id.get(run_id).copied() {
                Some(pos) => {
                    self.with_row(pos, tick, 0, |row| row.votes = row.votes.saturating_sub(1))
                }
                None => {
                    if let Some(n) = self.orphan_votes.get_mut(run_id) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
        }
        self.slots.insert(entity, Slot::Other);
    }

    fn despawn(&mut self, tick: Tick, entity: EntityId) {
        match self.slots.remove(&entity) {
            Some(Slot::Run(pos)) => self.remove_row(pos),
            Some(Slot::Result(run_id)) => self.drop_sample(tick, 0, &run_id, entity),
            Some(Slot::Vote(run_id)) => self.drop_vote(tick, entity, &run_id),
            Some(Slot::Job(run_id)) => self.drop_job(entity, &run_id),
            _ => {}
        }
        self.noise.remove(&entity);
        if self.specs.remove(&entity).is_some() {
            self.update_comparator();
        }
        if let Some(cost) = self.early_extras.remove(&entity).and_then(|x| x.cost) {
            add_cost(&mut self.cost, &cost, -1.0);
        }
    }

    fn sample(&mut self, entity: EntityId, result: &EvalResult) -> Sample {
        let outputs = result.outputs().unwrap_or_default();
        let mut values = Vec::new();
        if let Some(map) = outputs.as_object() {
            for (k, v) in map {
                if k == EvalResult::META {
                    continue;
                }
                if let Some(x) = v.as_f64() {
                    let name = self.intern(k);
                    *self.name_uses.entry(name.clone()).or_default() += 1;
                    values.push((name, x));
                }
            }
        }
        Sample {
            entity,
            commit: result.measured_commit(),
            values,
        }
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(name) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(name);
        self.interned.insert(Box::from(name), a.clone());
        self.metric_names.push(a.clone());
        a
    }

    /// The run with id `run_id` (exactly), and its position.
    pub fn run(&self, run_id: &str) -> Option<(usize, &RunRow)> {
        if let Some(pos) = self.by_run_id.get(run_id) {
            return Some((*pos, &self.runs[*pos]));
        }
        None
    }

    /// The scheduler jobs recorded for `run_id`, by entity (submission order).
    pub fn jobs_of(&self, run_id: &str) -> Vec<&ExecutorJob> {
        self.jobs
            .get(run_id)
            .map(|j| j.values().collect())
            .unwrap_or_default()
    }

    /// The noise model of the world's experiment, if the loop recorded one.
    pub fn noise(&self) -> Option<&NoiseModel> {
        let exp = self.experiment_name();
        self.noise
            .values()
            .find(|n| n.experiment_name == exp)
            .or_else(|| (self.noise.len() == 1).then(|| self.noise.values().next())?)
    }

    /// Votes cast on `run_id`, in no particular order.
    pub fn votes_on(&self, run_id: &str) -> Vec<&Vote> {
        let mut v: Vec<&Vote> = self.votes.values().filter(|v| v.run_id == run_id).collect();
        v.sort_by_key(|v| v.at_ms);
        v
    }

    /// The experiment this world holds: its single Experiment's name, or the
    /// name its world name carries.
    pub fn experiment_name(&self) -> String {
        match self.experiments.as_slice() {
            [one] => one.name.clone(),
            _ => autoresearch_core::lifecycle::world_short_name(&self.info.name).to_string(),
        }
    }

    /// The metric shown, and whether lower is better: the comparator's
    /// (through `picker`), else the first numeric output seen that a stored Result still has (lower better).
    pub fn metric(&self, picker: &MetricPicker) -> Option<(String, bool)> {
        if !self.comparator.is_empty()
            && let Some(m) = picker(&self.comparator)
        {
            return Some(m);
        }
        self.metric_names
            .iter()
            .find(|m| self.name_uses.get(*m).is_some_and(|n| *n > 0))
            .map(|m| (m.to_string(), true))
    }

    /// The numeric output names that a stored Result still has, in
    /// first-seen order.
    pub fn metric_names_in_use(&self) -> impl Iterator<Item = &str> {
        self.metric_names
            .iter()
            .filter(|m| self.name_uses.get(*m).is_some_and(|n| *n > 0))
            .map(|m| &**m)
    }

    /// The head of the world's experiment.
    pub fn head(&self) -> Option<&BranchHead> {
        let exp = self.experiment_name();
        self.heads
            .iter()
            .find(|h| h.experiment_name == exp)
            .or(self.heads.first())
    }
}

/// Adds `sign` times `c` into `sum` (a cost replaced or removed is taken
/// back out with `-1`); counts saturate at 0.
fn add_cost(sum: &mut RunCost, c: &RunCost, sign: f64) {
    if sign >= 0.0 {
        sum.add(c);
        return;
    }
    for (total, part) in [
        (&mut sum.propose, c.propose),
        (&mut sum.evaluate, c.evaluate),
        (&mut sum.confirm, c.confirm),
    ] {
        total.wall_ms = total.wall_ms.saturating_sub(part.wall_ms);
        total.cpu_ms = total.cpu_ms.saturating_sub(part.cpu_ms);
    }
    sum.jobs = sum.jobs.saturating_sub(c.jobs);
    for (k, v) in &c.metrics {
        if let Some(t) = sum.metrics.get_mut(k) {
            *t -= v;
            // A metric no stored cost has any more leaves the sum, as in
            // a sum built afresh (a rounding residue counts as nothing).
            if t.abs() <= 1e-9 * v.abs().max(1.0) {
                sum.metrics.remove(k);
            }
        }
    }
}

fn set_member(set: &mut BTreeSet<usize>, pos: usize, member: bool) {
    if member {
        set.insert(pos);
    } else {
        set.remove(&pos);
    }
}
