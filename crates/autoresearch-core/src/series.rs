//! An experiment's *chart series*: per attempt, exactly the facts the
//! progress chart (`autoresearch plot`) needs, as a backend may keep them
//! beside its log so that charting a million attempts reads packed
//! numbers instead of decoding every Run and parsing every Result's
//! outputs (issue #19).
//!
//! A backend that keeps it ([`crate::Storage::read_series`]) maintains, in
//! the same write transaction as each appended tick, per experiment:
//!
//! - per attempt (a live entity holding a `Run` of the experiment, in
//!   entity order): its Outcome's status, whether the Run's status is
//!   `crashed`, a hash of its task ([`task_hash`]) and, per numeric output,
//!   the mean of that output over its Results on the run's final commit
//!   ([`final_mean`]);
//! - how many of its attempts' Results have each numeric output (to choose
//!   the metric as the chart does);
//! - the comparator of the newest attempt that records one.
//!
//! All of it is a function of the state at the world's head, so
//! [`series_of_state`] computes it from a materialized [`State`] with the
//! grouping of [`crate::lifecycle::attempts`]: it is the reference the
//! backends are tested against, and what [`crate::MemoryStorage`]
//! answers with. A backend stops keeping the series of a world (reads
//! then give `None` and the chart materializes) rather than keep one it
//! cannot prove equal to this reference.

use crate::components::RunStatus;
use crate::components::{EvalResult, Outcome, RunRef};
use crate::current::{FactsError, OUTCOME, RESULT, RUN};
use crate::ids::{EntityId, Tick};
use crate::record::State;
use crate::vocab::OutcomeStatus;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// One attempt of a [`Series`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesPoint {
    /// The run's entity.
    pub entity: EntityId,
    /// Its Outcome's status, `None` when it has no Outcome.
    pub outcome: Option<OutcomeKind>,
    /// Whether its Run's status is `crashed`.
    pub run_crashed: bool,
    /// [`task_hash`] of its Run's task.
    pub task: u64,
    /// The mean of the asked metric over its Results on the run's final
    /// commit ([`final_mean`]); `None` when it has no finite sample (or no
    /// metric was asked).
    pub value: Option<f64>,
}

/// An Outcome's status as the series keeps it: the known words, and any
/// other (which the chart draws as undecided) without its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// `keep`.
    Keep,
    /// `discard`.
    Discard,
    /// `crash`.
    Crash,
    /// `pending`.
    Pending,
    /// `baseline`.
    Baseline,
    /// A word this version does not know.
    Other,
}

impl OutcomeKind {
    /// The kind of a status.
    pub fn of(status: &OutcomeStatus) -> OutcomeKind {
        match status {
            OutcomeStatus::Keep => OutcomeKind::Keep,
            OutcomeStatus::Discard => OutcomeKind::Discard,
            OutcomeStatus::Crash => OutcomeKind::Crash,
            OutcomeStatus::Pending => OutcomeKind::Pending,
            OutcomeStatus::Baseline => OutcomeKind::Baseline,
            _ => OutcomeKind::Other,
        }
    }
}

/// What [`crate::Storage::read_series`] answers: an experiment's chart
/// series at the world's head.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// The tick read (the world's head).
    pub tick: Tick,
    /// How many attempts the experiment has.
    pub attempts: u64,
    /// Each numeric output of the experiment's attempts' Results (every
    /// Result joined to one of its runs, not only final ones), with how
    /// many Results have it.
    pub metrics: BTreeMap<String, u64>,
    /// The comparator spec of the newest attempt (highest entity) whose
    /// Outcome records a non-empty one; empty when none does.
    pub spec: String,
    /// Every attempt in entity order, with its value of the metric asked;
    /// empty when none was asked (a read of the header alone).
    pub points: Vec<SeriesPoint>,
}

/// A stable 64-bit hash of a run's task (XXH3-64, whose output is fixed by
/// its specification): the chart only asks whether the tasks of attempts
/// are all the same, so a point keeps 8 bytes instead of the text. Two
/// different tasks with one hash (probability about 2^-64 per pair) would
/// be read as the same.
pub fn task_hash(task: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(task.as_bytes())
}

/// What a Run contributes to the series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFacts {
    /// Its experiment's name.
    pub experiment: String,
    /// Its `run_id`, which Results join by.
    pub run_id: String,
    /// Its final commit (empty when none was recorded).
    pub commit: String,
    /// Whether its status is `crashed`.
    pub crashed: bool,
    /// [`task_hash`] of its task.
    pub task: u64,
}

/// [`RunFacts`] borrowing the text of the `Run` value they come from
/// ([`run_facts_ref`]): a backend's series update of an ingest decodes
/// every run without a string allocated per field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunFactsRef<'a> {
    /// Its experiment's name.
    pub experiment: &'a str,
    /// Its `run_id`, which Results join by.
    pub run_id: &'a str,
    /// Its final commit (empty when none was recorded).
    pub commit: &'a str,
    /// Whether its status is `crashed`.
    pub crashed: bool,
    /// [`task_hash`] of its task.
    pub task: u64,
}

impl RunFactsRef<'_> {
    /// The same facts, owned.
    pub fn to_facts(&self) -> RunFacts {
        RunFacts {
            experiment: self.experiment.to_string(),
            run_id: self.run_id.to_string(),
            commit: self.commit.to_string(),
            crashed: self.crashed,
            task: self.task,
        }
    }
}

/// Decodes a stored `Run` value into its [`RunFacts`].
pub fn run_facts(bytes: &[u8]) -> Result<RunFacts, FactsError> {
    run_facts_ref(bytes).map(|f| f.to_facts())
}

/// Decodes a stored `Run` value into its [`RunFactsRef`], borrowing `bytes`.
pub fn run_facts_ref(bytes: &[u8]) -> Result<RunFactsRef<'_>, FactsError> {
    let run = RunRef::decode(bytes).map_err(|e| FactsError {
        component: RUN,
        reason: e.to_string(),
    })?;
    Ok(RunFactsRef {
        experiment: run.experiment_name,
        run_id: run.run_id,
        commit: run.commit_hash,
        crashed: run.status.parse::<RunStatus>() == Ok(RunStatus::Crashed),
        task: task_hash(run.task),
    })
}

/// Decodes a stored `Outcome` value into its status and comparator spec.
pub fn outcome_facts(bytes: &[u8]) -> Result<(OutcomeKind, String), FactsError> {
    let o: Outcome = postcard::from_bytes(bytes).map_err(|e| FactsError {
        component: OUTCOME,
        reason: e.to_string(),
    })?;
    Ok((OutcomeKind::of(&o.status), o.comparator))
}

/// What one Result contributes: its run, the commit it measured and its
/// numeric outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The `run_id` it joins.
    pub run_id: String,
    /// Its `_meta.commit` ([`EvalResult::measured_commit`]), when recorded.
    pub measured: Option<String>,
    /// Its top-level numeric outputs (as `f64`), in key order; empty when
    /// the outputs do not parse.
    pub outputs: Vec<(String, f64)>,
}

/// Decodes a stored `Result` value and parses its outputs once.
pub fn result_sample(bytes: &[u8]) -> Result<Sample, FactsError> {
    let r: EvalResult = postcard::from_bytes(bytes).map_err(|e| FactsError {
        component: RESULT,
        reason: e.to_string(),
    })?;
    let outputs = r.outputs().ok();
    let measured = outputs
        .as_ref()
        .and_then(|o| o.get(EvalResult::META)?.get("commit")?.as_str())
        .map(str::to_string);
    let mut numeric: Vec<(String, f64)> = match outputs {
        Some(Value::Object(map)) => map
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_f64()?)))
            .collect(),
        _ => Vec::new(),
    };
    numeric.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Sample {
        run_id: r.run_id,
        measured,
        outputs: numeric,
    })
}

/// Whether a Result that measured `measured` is a sample of a run whose
/// final commit is `commit` ([`crate::Attempt::final_results`]).
pub fn counts_for(commit: &str, measured: Option<&str>) -> bool {
    commit.is_empty() || measured.is_none_or(|c| c == commit)
}

/// The chart's value of an attempt: the mean of its finite `values` (the
/// metric in each final Result, in entity order), `None` when there is
/// none. Computed exactly as the chart computes it, so equal inputs give
/// the same bits.
pub fn final_mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let samples: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if samples.is_empty() {
        None
    } else {
        Some(samples.iter().sum::<f64>() / samples.len() as f64)
    }
}

/// The series of `experiment` in a materialized state, with values of
/// `metric` (no points when `None`): the reference every backend keeping
/// one must agree with. Results join runs as
/// [`crate::lifecycle::attempts`] joins them (by `run_id`, all to the
/// experiment's first run with it). `tick` is left at the state's.
/// Errors: a Run, Outcome or Result that does not decode.
/// Cost: O(state).
pub fn series_of_state(
    state: &State,
    experiment: &str,
    metric: Option<&str>,
) -> Result<Series, FactsError> {
    let mut results: HashMap<String, Vec<Sample>> = HashMap::new();
    let mut runs = Vec::new();
    for (e, comps) in &state.entities {
        if let Some(b) = comps.get(RESULT) {
            let s = result_sample(b)?;
            results.entry(s.run_id.clone()).or_default().push(s);
        }
        if let Some(b) = comps.get(RUN) {
            let run = run_facts(b)?;
            if run.experiment == experiment {
                let outcome = comps.get(OUTCOME).map(|b| outcome_facts(b)).transpose()?;
                runs.push((*e, run, outcome));
            }
        }
    }
    let mut series = Series {
        tick: state.tick,
        ..Series::default()
    };
    series.attempts = runs.len() as u64;
    for (entity, run, outcome) in runs {
        let samples = results.remove(&run.run_id).unwrap_or_default();
        for s in &samples {
            for (k, _) in &s.outputs {
                *series.metrics.entry(k.clone()).or_default() += 1;
            }
        }
        if let Some((_, spec)) = outcome.as_ref().filter(|(_, c)| !c.is_empty()) {
            series.spec = spec.clone();
        }
        if let Some(m) = metric {
            let value = final_mean(
                samples
                    .iter()
                    .filter(|s| counts_for(&run.commit, s.measured.as_deref()))
                    .filter_map(|s| s.outputs.iter().find(|(k, _)| k == m).map(|(_, v)| *v)),
            );
            series.points.push(SeriesPoint {
                entity,
                outcome: outcome.map(|(s, _)| s),
                run_crashed: run.crashed,
                task: run.task,
                value,
            });
        }
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::Run;
    use serde_json::json;

    fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
        postcard::to_allocvec(v).unwrap()
    }

    #[test]
    fn the_reference_joins_results_as_attempts_do_and_means_final_samples() {
        let mut state = State::empty();
        let mut put = |e: u64, name: &str, bytes: Vec<u8>| {
            state
                .entities
                .entry(EntityId(e))
                .or_default()
                .insert(name.to_string(), bytes);
        };
        let mut run = Run::new("r1", "x");
        run.commit_hash = "c2".into();
        run.task = "t".into();
        put(1, RUN, enc(&run));
        // A sample of an earlier candidate, two of the final commit, one
        // without a commit, and one of another run.
        for (e, out) in [
            (2, json!({"loss": 9.0, "_meta": {"commit": "c1"}})),
            (3, json!({"loss": 1.0, "_meta": {"commit": "c2"}})),
            (4, json!({"loss": 2.0, "acc": 0.5})),
            (5, json!({"loss": "n/a"})),
        ] {
            put(e, RESULT, enc(&EvalResult::new("r1", "eval", &out, 0)));
        }
        put(
            6,
            RESULT,
            enc(&EvalResult::new("r2", "eval", &json!({"loss": 7.0}), 0)),
        );
        let outcome = Outcome {
            run_id: "r1".into(),
            status: OutcomeStatus::Keep,
            comparator: "scalar:loss:min".into(),
            ..Outcome::default()
        };
        put(1, OUTCOME, enc(&outcome));
        let mut other = Run::new("r3", "y");
        other.set_status(RunStatus::Crashed);
        put(7, RUN, enc(&other));

        let header = series_of_state(&state, "x", None).unwrap();
        assert!(header.points.is_empty());
        assert_eq!(header.attempts, 1);
        assert_eq!(header.spec, "scalar:loss:min");
        let want: BTreeMap<String, u64> = [("acc".to_string(), 1), ("loss".to_string(), 3)].into();
        assert_eq!(header.metrics, want);
        let s = series_of_state(&state, "x", Some("loss")).unwrap();
        assert_eq!(
            s.points,
            vec![SeriesPoint {
                entity: EntityId(1),
                outcome: Some(OutcomeKind::Keep),
                run_crashed: false,
                task: task_hash("t"),
                value: Some(1.5),
            }]
        );
        let y = series_of_state(&state, "y", Some("loss")).unwrap();
        assert!(y.points[0].run_crashed && y.points[0].value.is_none());
        assert_eq!(y.spec, "");
    }

    #[test]
    fn undecodable_values_are_errors_naming_the_component() {
        let mut state = State::empty();
        state
            .entities
            .entry(EntityId(1))
            .or_default()
            .insert(RESULT.to_string(), vec![0xff, 0xff]);
        let err = series_of_state(&state, "x", None).unwrap_err();
        assert_eq!(err.component, RESULT);
    }
}
