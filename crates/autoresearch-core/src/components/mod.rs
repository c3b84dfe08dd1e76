//! The four lifecycle components, field for field as the Python `archetype`
//! engine stores them (see `shared/reference/compatibility.md`).
//!
//! Every JSON-bearing field is JSON *text*, so a record is plain scalars. The
//! library never interprets `outputs_json` or `descriptor_json`; constructors
//! take a `serde_json::Value` and accessors parse the text back.

use crate::exec::ExitStatus;
use crate::vocab::{OutcomeStatus, VoteVerdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

mod run_ref;
pub use run_ref::RunRef;

fn empty_object() -> String {
    "{}".to_string()
}

fn parse_object(text: &str) -> Result<Value, serde_json::Error> {
    if text.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text)
}

/// The setup for a family of runs: repository, branch, free-form metadata.
/// No scoring fields: what "better" means is decided by comparators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Experiment {
    /// The experiment's unique name; runs, branch heads and the loop's world refer to it by this
    /// name.
    pub name: String,
    /// The repository the runs work on (a URL or a local path), as given when the experiment was
    /// created.
    pub repo_url: String,
    /// The git branch the experiment advances; `main` by default.
    pub branch: String,
    /// Creation time, in Unix milliseconds.
    pub created_at_ms: i64,
    /// Free-form metadata, JSON object text (`{}` when empty). Read it with
    /// [`Experiment::metadata`].
    pub metadata_json: String,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            name: String::new(),
            repo_url: String::new(),
            branch: "main".to_string(),
            created_at_ms: 0,
            metadata_json: empty_object(),
        }
    }
}

impl Experiment {
    /// An experiment with the given fields; `metadata` is stored as its JSON text.
    pub fn new(
        name: impl Into<String>,
        repo_url: impl Into<String>,
        branch: impl Into<String>,
        created_at_ms: i64,
        metadata: &Value,
    ) -> Self {
        Experiment {
            name: name.into(),
            repo_url: repo_url.into(),
            branch: branch.into(),
            created_at_ms,
            metadata_json: metadata.to_string(),
        }
    }

    /// The metadata parsed back from its JSON text.
    pub fn metadata(&self) -> Result<Value, serde_json::Error> {
        parse_object(&self.metadata_json)
    }

    /// The metadata key naming the tool that runs the experiment.
    pub const CONTROLLER_KEY: &'static str = "controller";
    /// Its value for an experiment the autoresearch loop runs.
    pub const LOOP_CONTROLLER: &'static str = "autoresearch";

    /// Whether the autoresearch loop runs this experiment (its world is then
    /// written by one `run` at a time; importers stay out of it).
    pub fn is_run_by_loop(&self) -> bool {
        self.metadata().is_ok_and(|m| {
            m.get(Self::CONTROLLER_KEY).and_then(Value::as_str) == Some(Self::LOOP_CONTROLLER)
        })
    }
}

/// The status of a run: exactly the runner's own values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// The runner is preparing the run's machine or workspace.
    Booting,
    /// The agent is working.
    Running,
    /// The run was asked to stop and is winding down.
    Stopping,
    /// The run ended normally.
    Stopped,
    /// The run ended abnormally (agent or machine failure).
    Crashed,
}

impl RunStatus {
    /// The five statuses, in lifecycle order.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Booting,
        RunStatus::Running,
        RunStatus::Stopping,
        RunStatus::Stopped,
        RunStatus::Crashed,
    ];

    /// The stored word of this status (`booting`, `running`, ...), as the runner writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Booting => "booting",
            RunStatus::Running => "running",
            RunStatus::Stopping => "stopping",
            RunStatus::Stopped => "stopped",
            RunStatus::Crashed => "crashed",
        }
    }

    /// `booting`, `running` and `stopping`: the run may still change.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Booting | RunStatus::Running | RunStatus::Stopping
        )
    }

    /// `stopped` and `crashed`: the run is over.
    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string that is not one of the five run statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run status {0:?} (expected booting, running, stopping, stopped or crashed)")]
pub struct UnknownStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// A single attempt: one agent, one task, one commit. Mirrors
/// archetype-runner's record shape, so runner rows need no translation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    /// The run's unique id; Results, Outcomes and Votes join their run by it.
    pub run_id: String,
    /// The experiment this run belongs to (`adhoc` by default).
    pub experiment_name: String,
    /// Where the run ran: the runner's VM, or the loop's executor (`local`).
    pub vm_name: String,
    /// One of the [`RunStatus`] strings; kept as text so that a record written
    /// by another tool round-trips unchanged. Read it with [`Run::status`].
    pub status: String,
    /// The agent harness that did the work (e.g. `claude-code`; the loop records
    /// its config's `harness`, `shell` by default).
    pub harness: String,
    /// The repository the run worked on.
    pub repo_url: String,
    /// The branch the run started from; `main` by default.
    pub branch: String,
    /// The task the agent was given, as free text.
    pub task: String,
    /// Start time, in Unix milliseconds.
    pub started_at_ms: i64,
    /// End time, in Unix milliseconds; 0 while the run is not over.
    pub finished_at_ms: i64,
    /// The agent's name, conventionally `{experiment_name}-{harness}` (see
    /// [`Run::conventional_agent_name`]).
    pub agent_name: String,
    /// Where the run's working copy lives on its machine.
    pub workspace_path: String,
    /// The commit the run produced (full hash); empty until it has one.
    pub commit_hash: String,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            run_id: String::new(),
            experiment_name: "adhoc".to_string(),
            vm_name: String::new(),
            status: RunStatus::Booting.as_str().to_string(),
            harness: String::new(),
            repo_url: String::new(),
            branch: "main".to_string(),
            task: String::new(),
            started_at_ms: 0,
            finished_at_ms: 0,
            agent_name: String::new(),
            workspace_path: String::new(),
            commit_hash: String::new(),
        }
    }
}

impl Run {
    /// A run in `booting` with the given id and experiment, other fields at their defaults.
    pub fn new(run_id: impl Into<String>, experiment_name: impl Into<String>) -> Self {
        Run {
            run_id: run_id.into(),
            experiment_name: experiment_name.into(),
            ..Run::default()
        }
    }

    /// The parsed status. Errors on a string that is not a run status.
    pub fn status(&self) -> Result<RunStatus, UnknownStatus> {
        self.status.parse()
    }

    /// Sets [`Run::status`] to the stored word of `status`.
    /// Reuses the string's buffer (no allocation once it is long enough).
    pub fn set_status(&mut self, status: RunStatus) {
        self.status.clear();
        self.status.push_str(status.as_str());
    }

    /// The conventional agent name `{experiment_name}-{harness}`.
    pub fn conventional_agent_name(experiment_name: &str, harness: &str) -> String {
        format!("{experiment_name}-{harness}")
    }
}

/// An opaque evaluation envelope attached to a run by `run_id`. A run may
/// have several (one per evaluator, or one per sample of a noisy evaluator),
/// so each Result lives on an entity of its own and joins its run by `run_id`
/// (see `World::results_for`), as in the Python engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalResult {
    /// The run this Result belongs to.
    pub run_id: String,
    /// The name of the evaluator that produced it (`evaluate` for the loop's,
    /// `results.tsv` for imports).
    pub evaluator: String,
    /// The evaluator's outputs, JSON object text: metric names to values, plus the loop's
    /// [`EvalResult::META`] record. Read it with [`EvalResult::outputs`].
    pub outputs_json: String,
    /// When the evaluation finished, in Unix milliseconds.
    pub evaluated_at_ms: i64,
}

impl Default for EvalResult {
    fn default() -> Self {
        EvalResult {
            run_id: String::new(),
            evaluator: String::new(),
            outputs_json: empty_object(),
            evaluated_at_ms: 0,
        }
    }
}

impl EvalResult {
    /// A Result with the given fields; `outputs` is stored as its JSON text.
    pub fn new(
        run_id: impl Into<String>,
        evaluator: impl Into<String>,
        outputs: &Value,
        evaluated_at_ms: i64,
    ) -> Self {
        EvalResult {
            run_id: run_id.into(),
            evaluator: evaluator.into(),
            outputs_json: outputs.to_string(),
            evaluated_at_ms,
        }
    }

    /// The outputs parsed back from their JSON text.
    pub fn outputs(&self) -> Result<Value, serde_json::Error> {
        parse_object(&self.outputs_json)
    }

    /// The key of the loop's own record in the outputs (`_meta`: the commit
    /// measured, the sample number, exit status, duration, log paths). Keys
    /// starting with `_` are never metrics.
    pub const META: &'static str = "_meta";

    /// The loop's record of how this Result was measured (`_meta`), when
    /// present and readable. Cost: parses the outputs.
    pub fn meta(&self) -> Option<ResultMeta> {
        let mut outputs = self.outputs().ok()?;
        serde_json::from_value(outputs.get_mut(Self::META)?.take()).ok()
    }

    /// The commit this Result was measured on (`_meta.commit`), when
    /// recorded. Cost: parses the outputs.
    pub fn measured_commit(&self) -> Option<String> {
        // Read on its own: a `_meta` whose other fields do not parse still
        // says which commit it measured.
        let outputs = self.outputs().ok()?;
        let commit = outputs.get(Self::META)?.get("commit")?.as_str()?;
        Some(commit.to_string())
    }

    /// Whether this Result counts for `commit`: it was measured on it, or
    /// records no commit (older Results, imported ones).
    pub fn counts_for(&self, commit: &str) -> bool {
        self.measured_commit().is_none_or(|c| c == commit)
    }
}

/// The loop's own record of one evaluation, stored under
/// [`EvalResult::META`] in the Result's outputs beside the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResultMeta {
    /// The commit measured (full hash).
    pub commit: String,
    /// The sample number of this commit under its run, from 0.
    pub sample: u32,
    /// The evaluator's exit code, when it exited on its own.
    pub exit_code: Option<i32>,
    /// How the evaluator ended.
    pub status: Option<ExitStatus>,
    /// Time spent in the evaluator, in milliseconds.
    pub duration_ms: u64,
    /// The file its full standard output was captured to.
    pub stdout_log: String,
    /// The file its full standard error was captured to.
    pub stderr_log: String,
    /// On a candidate's first sample: what the proposer left in its
    /// checkout that is not part of the candidate (ignored files), never
    /// evaluated. Absent from the stored JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// Why the loop took this sample: [`ResultMeta::CANDIDATE`] while the
    /// commit was a candidate being decided (such samples selected it, so a
    /// comparator may leave them out once it is the incumbent); empty for a
    /// baseline, a calibration or a sample of the incumbent. Absent from the
    /// stored JSON when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role: String,
}

impl ResultMeta {
    /// The [`ResultMeta::role`] of a sample taken of a candidate.
    pub const CANDIDATE: &'static str = "candidate";
}

/// What the loop decided for a run, stored as component `Outcome` on the run's
/// entity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The run decided.
    pub run_id: String,
    /// The decision, stored as its word (`keep`, `discard`, ...).
    pub status: OutcomeStatus,
    /// One line for people: the comparator's reason, or the crash cause.
    pub reason: String,
    /// The comparator's descriptor, JSON text.
    pub descriptor_json: String,
    /// The incumbent commit the candidate was measured against.
    pub base_commit: String,
    /// The comparator spec that decided, empty for crashes and baselines;
    /// [`Outcome::PROMOTED_BY_FORK`] for a run a fork made its head by hand.
    pub comparator: String,
    /// When the decision was made, in Unix milliseconds.
    pub decided_at_ms: i64,
}

impl Outcome {
    /// [`Outcome::comparator`] of a run promoted by hand in a fork
    /// (`autoresearch fork --promote`): a person's decision, no comparator.
    pub const PROMOTED_BY_FORK: &'static str = "fork --promote";

    /// The stored word of [`OutcomeStatus::Keep`].
    pub const KEEP: &'static str = "keep";
    /// The stored word of [`OutcomeStatus::Discard`].
    pub const DISCARD: &'static str = "discard";
    /// The stored word of [`OutcomeStatus::Crash`].
    pub const CRASH: &'static str = "crash";
    /// The stored word of [`OutcomeStatus::Pending`].
    pub const PENDING: &'static str = "pending";
    /// The stored word of [`OutcomeStatus::Baseline`].
    pub const BASELINE: &'static str = "baseline";

    /// The descriptor parsed back from its JSON text.
    pub fn descriptor(&self) -> Result<Value, serde_json::Error> {
        parse_object(&self.descriptor_json)
    }
}

/// The exclusive right of one loop process to run a world, stored as
/// component `Lease` on an entity of that world (one per world name: a fork
/// inherits its parent's record, which names the parent, and takes a lease
/// of its own). A lease is held while `released_at_ms` is 0 and its holder
/// is alive: on the holder's host, its process exists; elsewhere, its
/// heartbeat is younger than the taker's limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The world the lease is for.
    pub world: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id on `host`.
    pub pid: u32,
    /// When the holder took the lease, in Unix milliseconds.
    pub started_at_ms: i64,
    /// Renewed by the holder while it runs.
    pub heartbeat_at_ms: i64,
    /// When the holder gave it back; 0 while held.
    pub released_at_ms: i64,
}

impl Lease {
    /// Whether the lease was given back.
    pub fn is_released(&self) -> bool {
        self.released_at_ms != 0
    }

    /// Milliseconds since the last heartbeat, at `now_ms`.
    pub fn heartbeat_age_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.heartbeat_at_ms)
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} on host {}", self.pid, self.host)
    }
}

/// A human's vote on a run, stored as component `Vote` on an entity of its own
/// (several votes per run make a quorum).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The run voted on.
    pub run_id: String,
    /// `keep` or `discard`.
    pub verdict: VoteVerdict,
    /// Who voted (a free-form name).
    pub voter: String,
    /// Why, in one line for people; may be empty.
    pub reason: String,
    /// When the vote was cast, in Unix milliseconds.
    pub at_ms: i64,
}

/// The persisted "current best commit" of an experiment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BranchHead {
    /// The experiment whose best commit this is.
    pub experiment_name: String,
    /// The best commit (full hash): the branch tip the next candidate builds on.
    pub commit_hash: String,
    /// Empty for the initial seed (the branch tip before any run).
    pub run_id: String,
    /// Why it became head, JSON object text: the deciding comparator's
    /// descriptor, or a note for a baseline; `{}` when nothing was recorded.
    pub descriptor_json: String,
    /// When the head was last moved, in Unix milliseconds.
    pub updated_at_ms: i64,
}

impl Default for BranchHead {
    fn default() -> Self {
        BranchHead {
            experiment_name: String::new(),
            commit_hash: String::new(),
            run_id: String::new(),
            descriptor_json: empty_object(),
            updated_at_ms: 0,
        }
    }
}

impl BranchHead {
    /// A head with the given fields; `descriptor` is stored as its JSON text.
    pub fn new(
        experiment_name: impl Into<String>,
        commit_hash: impl Into<String>,
        run_id: impl Into<String>,
        descriptor: &Value,
        updated_at_ms: i64,
    ) -> Self {
        BranchHead {
            experiment_name: experiment_name.into(),
            commit_hash: commit_hash.into(),
            run_id: run_id.into(),
            descriptor_json: descriptor.to_string(),
            updated_at_ms,
        }
    }

    /// The descriptor parsed back from its JSON text.
    pub fn descriptor(&self) -> Result<Value, serde_json::Error> {
        parse_object(&self.descriptor_json)
    }

    /// The descriptor of a head adopted as a baseline (measured, not
    /// chosen by a comparator): `{"baseline": why}`.
    pub fn baseline_descriptor(why: &str) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(
            OutcomeStatus::Baseline.as_str().to_string(),
            Value::String(why.to_string()),
        );
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_the_reference_engine() {
        let run = Run::default();
        assert_eq!(run.experiment_name, "adhoc");
        assert_eq!(run.status, "booting");
        assert_eq!(run.branch, "main");
        assert_eq!(Experiment::default().branch, "main");
        assert_eq!(Experiment::default().metadata_json, "{}");
        assert_eq!(EvalResult::default().outputs_json, "{}");
        assert_eq!(BranchHead::default().descriptor_json, "{}");
    }

    #[test]
    fn status_strings_round_trip_and_classify() {
        for st in RunStatus::ALL {
            assert_eq!(st.as_str().parse::<RunStatus>(), Ok(st));
        }
        let active: Vec<_> = RunStatus::ALL.iter().filter(|s| s.is_active()).collect();
        assert_eq!(active.len(), 3);
        assert!(RunStatus::Crashed.is_terminal());
        assert!("done".parse::<RunStatus>().is_err());
    }

    #[test]
    fn json_fields_are_text_and_parse_back() {
        let r = EvalResult::new("r1", "pytest", &json!({"val_bpb": 0.99}), 5);
        assert_eq!(r.outputs_json, r#"{"val_bpb":0.99}"#);
        assert_eq!(r.outputs().unwrap()["val_bpb"], json!(0.99));
        let bad = EvalResult {
            outputs_json: "{".into(),
            ..r
        };
        assert!(bad.outputs().is_err());
    }
}
