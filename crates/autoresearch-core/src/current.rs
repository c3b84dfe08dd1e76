//! A world's *current state* as a backend may keep it beside its log, so
//! that reads of the latest tick answer without materializing the world
//! (issue #19: `status`, `log --limit`, `show` at a million attempts).
//!
//! A backend that keeps it ([`crate::Storage::read_current`]) maintains,
//! in the same write transaction as each appended tick:
//!
//! - every live entity's component values, by `(component, entity)`;
//! - secondary keys derived from an entity's lifecycle components
//!   ([`facts`]): `run` (a Run's `run_id`), `experiment` (a Run's
//!   experiment), `result`, `vote` and `confirm` (the `run_id` a Result,
//!   Vote or Confirmation joins), `active` (a Run in flight, by experiment),
//!   `pending` (a Run whose Outcome waits for votes) and `voted` (a Run
//!   decided by votes);
//! - a [`Tally`]: attempts and Outcome counts per experiment, and the
//!   world's cost sum, updated by the difference of each touched entity's
//!   [`Facts`] before and after the tick.
//!
//! All of it is a function of the state at the world's head, so
//! [`answer_from_state`] computes the same answers from a materialized
//! [`State`]: it is the reference the backends are tested against, and
//! what [`crate::MemoryStorage`] answers with.
//!
//! The facts read the standard registry's names (`Run`, `Outcome`,
//! `RunCost`, `Result`, `Vote`, `Confirmation`) and decode those values
//! with postcard, as the registry stores them.

use crate::components::{EvalResult, Outcome, RunRef, Vote};
use crate::confirm::Confirmation;
use crate::cost::{JobUsage, RunCost};
use crate::ids::{EntityId, Tick};
use crate::record::State;
use crate::vocab::OutcomeStatus;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The stored name of the `Run` component.
pub const RUN: &str = "Run";
/// The stored name of the `Outcome` component.
pub const OUTCOME: &str = "Outcome";
/// The stored name of the `RunCost` component.
pub const RUN_COST: &str = "RunCost";
/// The stored name of the `Result` component ([`EvalResult`]).
pub const RESULT: &str = "Result";
/// The stored name of the `Vote` component.
pub const VOTE: &str = "Vote";
/// The stored name of the `Confirmation` component.
pub const CONFIRMATION: &str = "Confirmation";

/// The components [`facts`] reads: a change to any other component leaves
/// an entity's facts as they were.
pub const INPUTS: [&str; 6] = [RUN, OUTCOME, RUN_COST, RESULT, VOTE, CONFIRMATION];

/// Secondary key: a Run's `run_id`.
pub const BY_RUN_ID: &str = "run";
/// Secondary key: a Run's experiment name.
pub const BY_EXPERIMENT: &str = "experiment";
/// Secondary key: the `run_id` a Result belongs to.
pub const RESULT_OF: &str = "result";
/// Secondary key: the `run_id` a Vote is cast on.
pub const VOTE_ON: &str = "vote";
/// Secondary key: the `run_id` a Confirmation is of.
pub const CONFIRMATION_OF: &str = "confirm";
/// Secondary key: the experiment of a Run whose status is active
/// (booting, running, stopping).
pub const ACTIVE: &str = "active";
/// Secondary key: the experiment of a Run whose Outcome is `pending`.
pub const PENDING: &str = "pending";
/// Secondary key: the experiment of a Run decided by votes (an Outcome
/// whose comparator starts with `vote`, status keep or discard).
pub const VOTED: &str = "voted";

/// What one entity contributes to the derived state, computed from its
/// lifecycle components alone ([`facts`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Its secondary keys: `(index, key)`.
    pub keys: Vec<(&'static str, String)>,
    /// Its Run's experiment and, when decided, its Outcome's status word.
    pub attempt: Option<(String, Option<String>)>,
    /// Its RunCost, boxed: most entities have none, and a backend's bulk
    /// update holds the facts of every entity of an ingest at once.
    pub cost: Option<Box<RunCost>>,
}

/// A lifecycle component that does not decode: the derived state cannot
/// be kept for its world (the backend stops keeping it; reads then fall
/// back to the log, which reports the damage as it always did).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("component {component}: {reason}")]
pub struct FactsError {
    /// The component's stored name.
    pub component: &'static str,
    /// The decoder's message.
    pub reason: String,
}

fn decode<'a, T: Deserialize<'a>>(
    component: &'static str,
    bytes: &'a [u8],
) -> Result<T, FactsError> {
    postcard::from_bytes(bytes).map_err(|e| FactsError {
        component,
        reason: e.to_string(),
    })
}

/// The facts of an entity whose component `name` has the value
/// `get(name)`. Cost: one postcard decode per lifecycle component held.
/// ([`facts_ref`], copied into owned strings.)
pub fn facts<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Result<Facts, FactsError> {
    facts_ref(get).map(|f| f.to_facts())
}

/// [`Facts`] whose text borrows the values they were computed from where
/// it can (a Run's `run_id` and experiment): what a backend's bulk update
/// computes for every entity of an ingest without allocating a string
/// per key. [`FactsRef::to_facts`] gives the [`Facts`] of the same values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FactsRef<'a> {
    /// Its secondary keys: `(index, key)`, in the order of [`Facts::keys`].
    pub keys: Vec<(&'static str, Cow<'a, str>)>,
    /// Its Run's experiment and, when decided, its Outcome's status word.
    pub attempt: Option<(&'a str, Option<String>)>,
    /// Its RunCost, boxed as [`Facts::cost`].
    pub cost: Option<Box<RunCost>>,
}

impl FactsRef<'_> {
    /// The same facts, owned.
    pub fn to_facts(&self) -> Facts {
        Facts {
            keys: self.keys.iter().map(|(i, k)| (*i, k.to_string())).collect(),
            attempt: self
                .attempt
                .as_ref()
                .map(|(e, o)| (e.to_string(), o.clone())),
            cost: self.cost.clone(),
        }
    }
}

impl PartialEq<Facts> for FactsRef<'_> {
    fn eq(&self, other: &Facts) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|((i, k), (oi, ok))| i == oi && k.as_ref() == ok.as_str())
            && match (&self.attempt, &other.attempt) {
                (None, None) => true,
                (Some((e, o)), Some((oe, oo))) => *e == oe.as_str() && o == oo,
                _ => false,
            }
            && self.cost == other.cost
    }
}

/// [`facts`] borrowing from the values (see [`FactsRef`]). Cost: one
/// postcard decode per lifecycle component held; a string allocated only
/// for a key of a Result, Vote or Confirmation and an Outcome's word.
pub fn facts_ref<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Result<FactsRef<'a>, FactsError> {
    let mut f = FactsRef::default();
    let run = get(RUN)
        .map(RunRef::decode)
        .transpose()
        .map_err(|e| FactsError {
            component: RUN,
            reason: e.to_string(),
        })?;
    let outcome: Option<Outcome> = get(OUTCOME).map(|b| decode(OUTCOME, b)).transpose()?;
    if let Some(run) = &run {
        let exp = run.experiment_name;
        f.keys.push((BY_RUN_ID, Cow::Borrowed(run.run_id)));
        f.keys.push((BY_EXPERIMENT, Cow::Borrowed(exp)));
        if run
            .status
            .parse::<crate::RunStatus>()
            .is_ok_and(crate::RunStatus::is_active)
        {
            f.keys.push((ACTIVE, Cow::Borrowed(exp)));
        }
        if let Some(o) = &outcome {
            if o.status == OutcomeStatus::Pending {
                f.keys.push((PENDING, Cow::Borrowed(exp)));
            }
            if o.comparator.starts_with("vote")
                && matches!(o.status, OutcomeStatus::Keep | OutcomeStatus::Discard)
            {
                f.keys.push((VOTED, Cow::Borrowed(exp)));
            }
        }
        f.attempt = Some((exp, outcome.map(|o| o.status.as_str().to_string())));
    }
    if let Some(b) = get(RESULT) {
        let r: EvalResult = decode(RESULT, b)?;
        f.keys.push((RESULT_OF, Cow::Owned(r.run_id)));
    }
    if let Some(b) = get(VOTE) {
        let v: Vote = decode(VOTE, b)?;
        f.keys.push((VOTE_ON, Cow::Owned(v.run_id)));
    }
    if let Some(b) = get(CONFIRMATION) {
        let c: Confirmation = decode(CONFIRMATION, b)?;
        f.keys.push((CONFIRMATION_OF, Cow::Owned(c.run_id)));
    }
    f.cost = get(RUN_COST)
        .map(|b| decode(RUN_COST, b).map(Box::new))
        .transpose()?;
    Ok(f)
}

/// An exact sum of `f64`s that also subtracts: Shewchuk's non-overlapping
/// partials ("Adaptive Precision Floating-Point Arithmetic", 1997), as
/// Python's `math.fsum` keeps them. [`ExactSum::value`] is the correctly
/// rounded sum, whatever the order of additions and subtractions, so a sum
/// kept incrementally equals one recounted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExactSum {
    /// Non-overlapping partials, increasing in magnitude.
    partials: Vec<f64>,
    /// Infinite and NaN terms, counted apart: (`+inf`, `-inf`, NaN).
    special: (i64, i64, i64),
}

impl ExactSum {
    /// Adds `x`.
    pub fn add(&mut self, x: f64) {
        self.add_signed(x, 1);
    }

    /// Subtracts `x` (a term added before).
    pub fn sub(&mut self, x: f64) {
        self.add_signed(x, -1);
    }

    fn add_signed(&mut self, x: f64, sign: i64) {
        if x.is_nan() {
            self.special.2 += sign;
            return;
        }
        if x.is_infinite() {
            if x > 0.0 {
                self.special.0 += sign;
            } else {
                self.special.1 += sign;
            }
            return;
        }
        let mut x = if sign < 0 { -x } else { x };
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// The correctly rounded sum (`0.0` for none, never `-0.0`).
    pub fn value(&self) -> f64 {
        let (pos, neg, nan) = self.special;
        if nan > 0 || (pos > 0 && neg > 0) {
            return f64::NAN;
        }
        if pos > 0 {
            return f64::INFINITY;
        }
        if neg > 0 {
            return f64::NEG_INFINITY;
        }
        let p = &self.partials;
        let Some(&last) = p.last() else {
            return 0.0;
        };
        // Python's math.fsum final step, with its round-half-even fix.
        let mut n = p.len() - 1;
        let mut hi = last;
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            let y = p[n - 1];
            n -= 1;
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi + 0.0
    }
}

/// One experiment's counts in a [`Tally`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExperimentTally {
    /// Live entities holding a Run of this experiment.
    pub attempts: u64,
    /// Of those, how many hold an Outcome of each status word.
    pub outcomes: BTreeMap<String, u64>,
}

impl ExperimentTally {
    /// Counts an attempt (`sign` 1) or takes one away (-1), with its
    /// Outcome's status word; whether the tally is then empty.
    fn count(&mut self, outcome: Option<&str>, sign: i64) -> bool {
        self.attempts = (self.attempts as i64 + sign) as u64;
        if let Some(o) = outcome {
            match self.outcomes.get_mut(o) {
                Some(n) => {
                    *n = (*n as i64 + sign) as u64;
                    if *n == 0 {
                        self.outcomes.remove(o);
                    }
                }
                None => {
                    let n = sign as u64;
                    if n != 0 {
                        self.outcomes.insert(o.to_string(), n);
                    }
                }
            }
        }
        self.attempts == 0 && self.outcomes.is_empty()
    }
}

/// The world's cost: every RunCost summed exactly (integers without
/// overflow, metrics with [`ExactSum`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostTally {
    /// Entities holding a RunCost.
    pub runs: u64,
    /// Sums of `propose`, `evaluate`, `confirm` as (wall ms, CPU ms).
    pub usage: [(u128, u128); 3],
    /// Sum of `jobs`.
    pub jobs: u128,
    /// Each metric: how many RunCosts hold it, and its sum.
    pub metrics: BTreeMap<String, (u64, ExactSum)>,
}

impl CostTally {
    /// Adds one run's cost.
    pub fn add(&mut self, c: &RunCost) {
        self.apply(c, 1);
    }

    fn apply(&mut self, c: &RunCost, sign: i128) {
        let step = |x: &mut u128, v: u64| {
            *x = (*x as i128 + sign * v as i128) as u128;
        };
        self.runs = (self.runs as i128 + sign) as u64;
        for (slot, u) in self
            .usage
            .iter_mut()
            .zip([c.propose, c.evaluate, c.confirm])
        {
            step(&mut slot.0, u.wall_ms);
            step(&mut slot.1, u.cpu_ms);
        }
        step(&mut self.jobs, u64::from(c.jobs));
        for (k, v) in &c.metrics {
            let entry = self.metrics.entry(k.clone()).or_default();
            if sign > 0 {
                entry.0 += 1;
                entry.1.add(*v);
            } else {
                entry.0 = entry.0.saturating_sub(1);
                entry.1.sub(*v);
            }
            if entry.0 == 0 {
                self.metrics.remove(k);
            }
        }
    }

    /// The sum as a [`RunCost`] (empty `run_id`), saturating as
    /// [`RunCost::add`] does; metrics are the correctly rounded sums.
    pub fn to_cost(&self) -> RunCost {
        let sat = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
        let usage = |i: usize| JobUsage {
            wall_ms: sat(self.usage[i].0),
            cpu_ms: sat(self.usage[i].1),
        };
        RunCost {
            run_id: String::new(),
            propose: usage(0),
            evaluate: usage(1),
            confirm: usage(2),
            jobs: u32::try_from(self.jobs).unwrap_or(u32::MAX),
            metrics: self
                .metrics
                .iter()
                .map(|(k, (_, s))| (k.clone(), s.value()))
                .collect(),
        }
    }
}

/// The aggregates a backend keeps for a world's head: attempts and
/// Outcome counts per experiment, and the cost of every run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// By experiment name.
    pub experiments: BTreeMap<String, ExperimentTally>,
    /// The world's cost.
    pub cost: CostTally,
}

impl Tally {
    /// Adds an entity's facts.
    pub fn add(&mut self, f: &Facts) {
        let attempt = f.attempt.as_ref().map(|(e, o)| (e.as_str(), o.as_deref()));
        self.apply(attempt, f.cost.as_deref(), 1);
    }

    /// Takes an entity's facts (added before) away.
    pub fn sub(&mut self, f: &Facts) {
        let attempt = f.attempt.as_ref().map(|(e, o)| (e.as_str(), o.as_deref()));
        self.apply(attempt, f.cost.as_deref(), -1);
    }

    /// Adds an entity's facts, borrowed ([`Tally::add`]).
    pub fn add_ref(&mut self, f: &FactsRef<'_>) {
        let attempt = f.attempt.as_ref().map(|(e, o)| (*e, o.as_deref()));
        self.apply(attempt, f.cost.as_deref(), 1);
    }

    /// Takes an entity's facts, borrowed, away ([`Tally::sub`]).
    pub fn sub_ref(&mut self, f: &FactsRef<'_>) {
        let attempt = f.attempt.as_ref().map(|(e, o)| (*e, o.as_deref()));
        self.apply(attempt, f.cost.as_deref(), -1);
    }

    fn apply(&mut self, attempt: Option<(&str, Option<&str>)>, cost: Option<&RunCost>, sign: i64) {
        if let Some((exp, outcome)) = attempt {
            // A known experiment is looked up once (an ingest adds
            // thousands of runs to a handful of experiments); the name is
            // copied only for one new to the tally.
            match self.experiments.get_mut(exp) {
                Some(t) => {
                    if t.count(outcome, sign) {
                        self.experiments.remove(exp);
                    }
                }
                None => {
                    let mut t = ExperimentTally::default();
                    if !t.count(outcome, sign) {
                        self.experiments.insert(exp.to_string(), t);
                    }
                }
            }
        }
        if let Some(c) = cost {
            self.cost.apply(c, i128::from(sign));
        }
    }

    /// The tally recounted from a materialized state (the reference).
    /// Errors as [`facts`].
    pub fn of_state(state: &State) -> Result<Tally, FactsError> {
        let mut t = Tally::default();
        for comps in state.entities.values() {
            t.add(&facts(|n| comps.get(n).map(Vec::as_slice))?);
        }
        Ok(t)
    }

    /// The counts of `experiment` (zeros when it has no run).
    pub fn experiment(&self, experiment: &str) -> ExperimentTally {
        self.experiments
            .get(experiment)
            .cloned()
            .unwrap_or_default()
    }
}

/// One question to a world's current state ([`crate::Storage::read_current`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CurrentRead {
    /// The entities holding `component` with their values, in entity
    /// order (newest first when `newest_first`), only entities below
    /// `before` when given, at most `limit`.
    Values {
        /// The component's stored name.
        component: String,
        /// Descending entity order.
        newest_first: bool,
        /// Only entities with a smaller id.
        before: Option<EntityId>,
        /// At most this many.
        limit: Option<usize>,
    },
    /// The values of `component` of these entities, those that hold it,
    /// in the order asked.
    Get {
        /// The component's stored name.
        component: String,
        /// The entities.
        entities: Vec<EntityId>,
    },
    /// The entities whose secondary key `index` is `key` (or starts with
    /// it, when `prefix`), as `(key, entity)` in key then entity order
    /// (reversed when `newest_first`), at most `limit`.
    Keyed {
        /// The index ([`BY_RUN_ID`], [`RESULT_OF`], ...).
        index: String,
        /// The key, or its prefix.
        key: String,
        /// Whether `key` is a prefix.
        prefix: bool,
        /// Descending order.
        newest_first: bool,
        /// At most this many.
        limit: Option<usize>,
    },
    /// The world's [`Tally`].
    Tally,
}

/// The answer to one [`CurrentRead`].
#[derive(Clone, Debug, PartialEq)]
pub enum CurrentAnswer {
    /// For `Values` and `Get`: `(entity, encoded value)`.
    Values(Vec<(EntityId, Vec<u8>)>),
    /// For `Keyed`: `(key, entity)`.
    Keys(Vec<(String, EntityId)>),
    /// For `Tally`.
    Tally(Tally),
}

/// The answers to a batch of reads, all of one tick: the world's head.
#[derive(Clone, Debug, PartialEq)]
pub struct CurrentView {
    /// The tick the answers are of (the world's head when read).
    pub tick: Tick,
    /// One answer per read, in order.
    pub answers: Vec<CurrentAnswer>,
}

/// Answers `reads` from a materialized state: the reference every backend
/// keeping a current state must agree with. Errors as [`facts`].
/// Cost: O(state) for secondary keys and the tally.
pub fn answer_from_state(
    state: &State,
    reads: &[CurrentRead],
) -> Result<Vec<CurrentAnswer>, FactsError> {
    let mut keys: Option<Vec<(&'static str, String, EntityId)>> = None;
    let mut out = Vec::with_capacity(reads.len());
    for read in reads {
        out.push(match read {
            CurrentRead::Values {
                component,
                newest_first,
                before,
                limit,
            } => {
                let it = state
                    .entities
                    .iter()
                    .filter(|(e, _)| before.is_none_or(|b| **e < b))
                    .filter_map(|(e, cs)| Some((*e, cs.get(component)?.clone())));
                let v: Vec<_> = if *newest_first {
                    let mut v: Vec<_> = it.collect();
                    v.reverse();
                    v
                } else {
                    it.collect()
                };
                CurrentAnswer::Values(v.into_iter().take(limit.unwrap_or(usize::MAX)).collect())
            }
            CurrentRead::Get {
                component,
                entities,
            } => CurrentAnswer::Values(
                entities
                    .iter()
                    .filter_map(|e| Some((*e, state.entities.get(e)?.get(component)?.clone())))
                    .collect(),
            ),
            CurrentRead::Keyed {
                index,
                key,
                prefix,
                newest_first,
                limit,
            } => {
                if keys.is_none() {
                    let mut all = Vec::new();
                    for (e, comps) in &state.entities {
                        let f = facts(|n| comps.get(n).map(Vec::as_slice))?;
                        all.extend(f.keys.into_iter().map(|(i, k)| (i, k, *e)));
                    }
                    all.sort();
                    keys = Some(all);
                }
                let all = keys.as_ref().map_or(&[][..], Vec::as_slice);
                let mut v: Vec<(String, EntityId)> = all
                    .iter()
                    .filter(|(i, k, _)| {
                        i == index
                            && if *prefix {
                                k.starts_with(key.as_str())
                            } else {
                                k == key
                            }
                    })
                    .map(|(_, k, e)| (k.clone(), *e))
                    .collect();
                if *newest_first {
                    v.reverse();
                }
                v.truncate(limit.unwrap_or(usize::MAX));
                CurrentAnswer::Keys(v)
            }
            CurrentRead::Tally => CurrentAnswer::Tally(Tally::of_state(state)?),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The borrowed facts of an entity give the keys the module doc
    /// lists, owned (`to_facts`) equal `facts`, compare equal to exactly
    /// the owned facts that are theirs, and move a tally as the owned
    /// ones do.
    #[test]
    fn borrowed_facts_equal_the_owned_ones_and_tally_alike() {
        use crate::components::Run;
        use crate::{RunStatus, Vote};
        fn enc<T: Serialize>(v: &T) -> Vec<u8> {
            postcard::to_allocvec(v).unwrap()
        }
        let mut running = Run::new("r-1".to_string(), "exp-a");
        running.set_status(RunStatus::Running);
        let mut crashed = Run::new("r-2".to_string(), "exp-b");
        crashed.set_status(RunStatus::Crashed);
        let pending = Outcome {
            status: OutcomeStatus::Pending,
            ..Outcome::default()
        };
        let voted = Outcome {
            status: OutcomeStatus::Keep,
            comparator: "vote:2".to_string(),
            ..Outcome::default()
        };
        let result = EvalResult {
            run_id: "r-9".to_string(),
            ..EvalResult::default()
        };
        let vote = Vote {
            run_id: "r-8".to_string(),
            ..Vote::default()
        };
        let confirmation = Confirmation {
            run_id: "r-7".to_string(),
            ..Confirmation::default()
        };
        let cost = RunCost {
            run_id: "r-1".to_string(),
            jobs: 3,
            metrics: [("tokens".to_string(), 12.5)].into(),
            ..RunCost::default()
        };
        let entities: Vec<Vec<(&str, Vec<u8>)>> = vec![
            vec![],
            vec![(RUN, enc(&running))],
            vec![(RUN, enc(&running)), (OUTCOME, enc(&pending))],
            vec![
                (RUN, enc(&crashed)),
                (OUTCOME, enc(&voted)),
                (RUN_COST, enc(&cost)),
            ],
            vec![(RESULT, enc(&result))],
            vec![(VOTE, enc(&vote)), (CONFIRMATION, enc(&confirmation))],
        ];
        let expected_keys: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![
                (BY_RUN_ID, "r-1"),
                (BY_EXPERIMENT, "exp-a"),
                (ACTIVE, "exp-a"),
            ],
            vec![
                (BY_RUN_ID, "r-1"),
                (BY_EXPERIMENT, "exp-a"),
                (ACTIVE, "exp-a"),
                (PENDING, "exp-a"),
            ],
            vec![
                (BY_RUN_ID, "r-2"),
                (BY_EXPERIMENT, "exp-b"),
                (VOTED, "exp-b"),
            ],
            vec![(RESULT_OF, "r-9")],
            vec![(VOTE_ON, "r-8"), (CONFIRMATION_OF, "r-7")],
        ];
        let mut all_owned = Vec::new();
        let mut all_borrowed = Vec::new();
        for (comps, keys) in entities.iter().zip(&expected_keys) {
            let get = |n: &str| {
                comps
                    .iter()
                    .find(|(c, _)| *c == n)
                    .map(|(_, v)| v.as_slice())
            };
            let owned = facts(get).unwrap();
            let borrowed = facts_ref(get).unwrap();
            let got: Vec<(&str, &str)> = borrowed
                .keys
                .iter()
                .map(|(i, k)| (*i, k.as_ref()))
                .collect();
            assert_eq!(&got, keys);
            assert_eq!(borrowed.to_facts(), owned);
            assert!(borrowed == owned);
            all_owned.push(owned);
            all_borrowed.push(borrowed);
        }
        // Each borrowed facts equals its own owned facts and no other's.
        for (i, b) in all_borrowed.iter().enumerate() {
            for (j, o) in all_owned.iter().enumerate() {
                assert_eq!(b == o, i == j, "{i} against {j}");
            }
        }
        // A tally moved by borrowed facts equals one moved by owned ones.
        let (mut by_owned, mut by_borrowed) = (Tally::default(), Tally::default());
        for (o, b) in all_owned.iter().zip(&all_borrowed) {
            by_owned.add(o);
            by_borrowed.add_ref(b);
        }
        assert_eq!(by_owned, by_borrowed);
        assert_eq!(by_owned.experiment("exp-a").attempts, 2);
        assert_eq!(by_owned.experiment("exp-b").outcomes.get("keep"), Some(&1));
        for (o, b) in all_owned.iter().zip(&all_borrowed).take(3) {
            by_owned.sub(o);
            by_borrowed.sub_ref(b);
        }
        assert_eq!(by_owned, by_borrowed);
        assert_eq!(by_owned.experiment("exp-a"), ExperimentTally::default());
        assert!(!by_owned.experiments.contains_key("exp-a"));
        assert_eq!(by_owned.cost.runs, 1);
    }

    #[test]
    fn exact_sums_do_not_depend_on_order_or_subtractions() {
        let xs = [0.1, 0.2, 0.3, 1e16, -1e16, 1.0 / 3.0, 2.5e-10];
        let mut a = ExactSum::default();
        for x in xs {
            a.add(x);
        }
        let mut b = ExactSum::default();
        b.add(7.0);
        for x in xs.iter().rev() {
            b.add(*x);
        }
        b.sub(7.0);
        assert_eq!(a.value(), b.value());
        // 0.1 + 0.2 + 0.3 rounded once, not three times.
        let mut c = ExactSum::default();
        for x in [0.1, 0.2, 0.3] {
            c.add(x);
        }
        assert_eq!(c.value(), 0.6);
        assert_ne!(0.1 + 0.2 + 0.3, 0.6);
        let mut d = ExactSum::default();
        d.add(-0.0);
        assert!(d.value().is_sign_positive());
        d.add(f64::INFINITY);
        assert_eq!(d.value(), f64::INFINITY);
        d.sub(f64::INFINITY);
        assert_eq!(d.value(), 0.0);
    }
}
