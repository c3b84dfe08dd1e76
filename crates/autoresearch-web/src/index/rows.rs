//! The rows the index keeps: a run with its samples, outcome and extras,
//! its row class, and the counts of a world.

use super::*;

/// One numeric sample of a run: a Result's numeric outputs.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The Result's entity (its full record is read through the entity index).
    pub entity: EntityId,
    /// The commit the Result measured (`_meta.commit`), if it says.
    pub commit: Option<String>,
    /// Its numeric outputs (top-level numbers of `outputs_json`, `_meta` left out).
    pub values: Vec<(Arc<str>, f64)>,
}

/// One attempt of the world as the index keeps it.
#[derive(Clone, Debug)]
pub struct RunRow {
    /// The run's entity.
    pub entity: EntityId,
    /// The run record.
    pub run: Run,
    /// The decision, once recorded.
    pub outcome: Option<Outcome>,
    /// Its Results in the order they were recorded.
    pub samples: Vec<Sample>,
    /// Votes cast on it.
    pub votes: usize,
    /// The tick that last changed the run, its Outcome or its Results, as
    /// far as this index saw (an index built from a materialized state
    /// gives every row the tick it was built at).
    pub last_tick: Tick,
    /// When that tick was committed (Unix ms).
    pub last_at_ms: i64,
    /// What else the run's entity holds (its idea, cost, confirmation);
    /// boxed, and `None` when it holds none of them, so that a row of a
    /// large import costs one pointer for them.
    pub extras: Option<Box<RunExtras>>,
}

/// The components on a run's entity that the dashboard shows besides the
/// Run and its Outcome.
#[derive(Clone, Debug, Default)]
pub struct RunExtras {
    /// What the proposer tried, in its own words (component `Description`).
    pub description: Option<Description>,
    /// What the run cost (component `RunCost`).
    pub cost: Option<RunCost>,
    /// Its held-out confirmation (component `Confirmation`).
    pub confirmation: Option<Confirmation>,
}

impl RunExtras {
    pub(super) fn is_empty(&self) -> bool {
        self.description.is_none() && self.cost.is_none() && self.confirmation.is_none()
    }
}

/// What a row counts as on the dashboard: its decision, or what its run
/// status says while it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowClass {
    /// Outcome keep.
    Keep,
    /// Outcome discard.
    Discard,
    /// Outcome crash, or the run crashed without an Outcome.
    Crash,
    /// Outcome pending: waiting for votes.
    Pending,
    /// Outcome baseline: a head measured.
    Baseline,
    /// In flight, undecided.
    Running,
    /// Anything else (an import's stopped run without an Outcome, an unknown word).
    Other,
}

impl RowClass {
    /// Every class, in the order filters list them.
    pub const ALL: [RowClass; 7] = [
        RowClass::Keep,
        RowClass::Discard,
        RowClass::Crash,
        RowClass::Pending,
        RowClass::Baseline,
        RowClass::Running,
        RowClass::Other,
    ];

    /// The class's word (as URLs and JSON carry it).
    pub fn as_str(self) -> &'static str {
        match self {
            RowClass::Keep => "keep",
            RowClass::Discard => "discard",
            RowClass::Crash => "crash",
            RowClass::Pending => "pending",
            RowClass::Baseline => "baseline",
            RowClass::Running => "running",
            RowClass::Other => "other",
        }
    }

    /// The class named `word`, if any.
    pub fn parse(word: &str) -> Option<RowClass> {
        RowClass::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

impl RunRow {
    /// What the row counts as.
    pub fn class(&self) -> RowClass {
        match self.outcome.as_ref().map(|o| &o.status) {
            Some(OutcomeStatus::Keep) => RowClass::Keep,
            Some(OutcomeStatus::Discard) => RowClass::Discard,
            Some(OutcomeStatus::Crash) => RowClass::Crash,
            Some(OutcomeStatus::Pending) => RowClass::Pending,
            Some(OutcomeStatus::Baseline) => RowClass::Baseline,
            _ => match self.run.status() {
                Ok(s) if s.is_active() => RowClass::Running,
                Ok(RunStatus::Crashed) => RowClass::Crash,
                _ => RowClass::Other,
            },
        }
    }

    /// The attempt's phase ([`AttemptState::of`]).
    pub fn phase(&self) -> AttemptState {
        AttemptState::of(&self.run, self.outcome.as_ref())
    }

    /// The samples that measured the run's final commit (all of them when
    /// no commit is recorded), as [`autoresearch_core::Attempt::final_results`].
    pub fn final_samples(&self) -> impl Iterator<Item = &Sample> {
        let commit = self.run.commit_hash.as_str();
        self.samples
            .iter()
            .filter(move |s| commit.is_empty() || s.commit.as_deref().is_none_or(|c| c == commit))
    }

    /// The run's idea: the subject of its Description, else its task.
    pub fn idea(&self) -> &str {
        self.description()
            .map(Description::subject)
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.run.task)
    }

    /// The run's Description, if the loop recorded one.
    pub fn description(&self) -> Option<&Description> {
        self.extras.as_ref()?.description.as_ref()
    }

    /// The run's cost, if charged.
    pub fn cost(&self) -> Option<&RunCost> {
        self.extras.as_ref()?.cost.as_ref()
    }

    /// The run's held-out confirmation, if any.
    pub fn confirmation(&self) -> Option<&Confirmation> {
        self.extras.as_ref()?.confirmation.as_ref()
    }

    /// The mean of `metric` over the final samples that have it.
    pub fn metric(&self, metric: &str) -> Option<f64> {
        let (mut sum, mut n) = (0.0, 0u32);
        for s in self.final_samples() {
            if let Some((_, v)) = s.values.iter().find(|(k, _)| &**k == metric) {
                sum += v;
                n += 1;
            }
        }
        (n > 0).then(|| sum / f64::from(n))
    }
}

/// Counts of a world's attempts by class.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Every run recorded (and not despawned).
    pub attempts: usize,
    /// Kept.
    pub keeps: usize,
    /// Discarded.
    pub discards: usize,
    /// Crashed.
    pub crashes: usize,
    /// Waiting for votes.
    pub pending: usize,
    /// Baselines.
    pub baselines: usize,
    /// In flight (booting, running or stopping).
    pub in_flight: usize,
}

impl Counts {
    pub(super) fn add(&mut self, row: &RunRow, sign: isize) {
        let bump = |n: &mut usize| *n = n.saturating_add_signed(sign);
        bump(&mut self.attempts);
        match row.class() {
            RowClass::Keep => bump(&mut self.keeps),
            RowClass::Discard => bump(&mut self.discards),
            RowClass::Crash => bump(&mut self.crashes),
            RowClass::Pending => bump(&mut self.pending),
            RowClass::Baseline => bump(&mut self.baselines),
            RowClass::Running | RowClass::Other => {}
        }
        if row.phase().is_in_flight() {
            bump(&mut self.in_flight);
        }
    }
}
