//! The domain's words: every status, verdict and cause that crosses a crate
//! boundary or is stored, as an enum, so that the compiler keeps the writers
//! and the readers in step.
//!
//! The stored forms are the exact strings earlier versions wrote (a ledger
//! written before these types existed reads unchanged): [`OutcomeStatus`] and
//! [`VoteVerdict`] serialize as their word, a plain string in postcard and
//! JSON alike, and keep any word they do not know as `Other` instead of
//! failing, so that a ledger written by a newer or foreign tool still reads.

use crate::components::{Outcome, Run, RunStatus};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// A string enum stored as its word, with `Other` for words it does not know.
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A word this version does not know, kept as it was stored.
            Other(String),
        }

        impl $name {
            /// Every known value, in declaration order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),*];

            /// The stored word.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $word, )*
                    $name::Other(s) => s,
                }
            }

            /// The value of a stored word (`Other` when unknown).
            pub fn from_word(word: &str) -> $name {
                match word {
                    $( $word => $name::$variant, )*
                    other => $name::Other(other.to_string()),
                }
            }

            /// The known value of `word`, `None` for any other word.
            pub fn known(word: &str) -> Option<$name> {
                Some($name::from_word(word)).filter(|v| !matches!(v, $name::Other(_)))
            }
        }

        impl Default for $name {
            /// An empty word, as a defaulted record stored it.
            fn default() -> Self {
                $name::Other(String::new())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(word: &str) -> Self {
                $name::from_word(word)
            }
        }

        impl From<String> for $name {
            fn from(word: String) -> Self {
                $name::from_word(&word)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
    };
}

word_enum! {
    /// What the loop decided for a run ([`Outcome::status`]): karpathy's
    /// `keep`, `discard` and `crash`, plus `pending` (waiting for votes) and
    /// `baseline` (an evaluation of a head the loop did not choose: the
    /// initial branch tip, or a branch moved by someone else).
    pub enum OutcomeStatus {
        /// The candidate became the head.
        Keep = "keep",
        /// The candidate was not better, or was refused before comparison.
        Discard = "discard",
        /// The proposer or the evaluator failed.
        Crash = "crash",
        /// Waiting for votes.
        Pending = "pending",
        /// A head measured, not chosen.
        Baseline = "baseline",
    }
}

word_enum! {
    /// A person's verdict on a run ([`crate::Vote::verdict`]).
    pub enum VoteVerdict {
        /// Keep the candidate.
        Keep = "keep",
        /// Discard the candidate.
        Discard = "discard",
    }
}

word_enum! {
    /// Where a held-out confirmation stands ([`crate::Confirmation::status`]).
    pub enum ConfirmStatus {
        /// The confirm command is running: the attempt's explicit
        /// "confirming" state, which recovery reads after a kill.
        Running = "running",
        /// The candidate's confirm value did not regress beyond the
        /// tolerance: it may be promoted.
        Confirmed = "confirmed",
        /// The candidate's confirm value regressed beyond the tolerance: a
        /// discard.
        Rejected = "rejected",
        /// The confirm command failed or printed no confirm metric.
        Failed = "failed",
        /// An incumbent's reference value, measured for later candidates.
        Measured = "measured",
        /// The controller stopped (or was killed) during the confirmation.
        Interrupted = "interrupted",
    }
}

impl OutcomeStatus {
    /// Whether a run with this outcome became (or was adopted as) the head.
    pub fn is_head(&self) -> bool {
        matches!(self, OutcomeStatus::Keep | OutcomeStatus::Baseline)
    }
}

/// Why the loop itself, not a comparator, decided a run: stored as the
/// `cause` of the Outcome's descriptor. Replay carries these decisions over
/// unchanged, since no comparator made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoopCause {
    /// The proposer left the tree as it was.
    NoChange,
    /// The candidate touched a protected path.
    ProtectedPath,
    /// The controller stopped (or was killed) while the run was in flight.
    Interrupted,
    /// Measured against a head that moved, and could not follow it.
    Stale,
    /// The candidate adds what the loop's limits refuse (a file over the
    /// size limit, a nested repository, a gitlink).
    Refused,
    /// The controller's own infrastructure failed (git, the disk) while the
    /// run was in flight.
    Infrastructure,
    /// The comparator would keep the candidate but its held-out
    /// confirmation ([`crate::Confirmation`]) regressed or failed.
    NotConfirmed,
    /// The experiment's `[run] cost_budget` is spent: the loop stops
    /// launching runs.
    CostBudget,
}

impl LoopCause {
    /// The descriptor key a cause is stored under (a crash's cause, in
    /// words, is stored under it too).
    pub const KEY: &'static str = "cause";

    /// The causes replay carries over unchanged (a stale discard is not one:
    /// in another history the head may not have moved).
    pub const CARRIED_OVER: [LoopCause; 5] = [
        LoopCause::NoChange,
        LoopCause::ProtectedPath,
        LoopCause::Interrupted,
        LoopCause::Refused,
        LoopCause::Infrastructure,
    ];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopCause::NoChange => "no change",
            LoopCause::ProtectedPath => "protected path",
            LoopCause::Interrupted => "interrupted",
            LoopCause::Stale => "stale",
            LoopCause::Refused => "refused",
            LoopCause::Infrastructure => "infrastructure",
            LoopCause::NotConfirmed => "not confirmed",
            LoopCause::CostBudget => "cost budget spent",
        }
    }

    /// The cause of a stored word, `None` for any other.
    pub fn from_word(word: &str) -> Option<LoopCause> {
        [
            LoopCause::NoChange,
            LoopCause::ProtectedPath,
            LoopCause::Interrupted,
            LoopCause::Stale,
            LoopCause::Refused,
            LoopCause::Infrastructure,
            LoopCause::NotConfirmed,
            LoopCause::CostBudget,
        ]
        .into_iter()
        .find(|c| c.as_str() == word)
    }

    /// The loop cause recorded in `outcome`'s descriptor, if any.
    pub fn of(outcome: &Outcome) -> Option<LoopCause> {
        let d: Value = serde_json::from_str(&outcome.descriptor_json).ok()?;
        LoopCause::from_word(d.get(Self::KEY)?.as_str()?)
    }

    /// A descriptor recording this cause: `{"cause": word}` plus `extra`'s
    /// fields when it is an object.
    pub fn descriptor(self, extra: Value) -> Value {
        let mut d = match extra {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        d.insert(Self::KEY.into(), Value::String(self.as_str().to_string()));
        Value::Object(d)
    }
}

impl fmt::Display for LoopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt's status as a results.tsv row shows it: the one mapping used
/// by the proposer's history file and by `log --format tsv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TsvStatus {
    /// Kept, or a baseline (it was the head the next attempts were measured against).
    Keep,
    /// Discarded.
    Discard,
    /// Crashed (with an Outcome, or a crashed run without one).
    Crash,
    /// Decided as waiting for votes.
    Pending,
    /// Not decided yet.
    Running,
}

impl TsvStatus {
    /// The status of an attempt from its run and Outcome. An Outcome word
    /// this version does not know counts as `discard` (never as a keep).
    pub fn of(run: &Run, outcome: Option<&Outcome>) -> TsvStatus {
        match outcome.map(|o| &o.status) {
            Some(OutcomeStatus::Keep | OutcomeStatus::Baseline) => TsvStatus::Keep,
            Some(OutcomeStatus::Crash) => TsvStatus::Crash,
            Some(OutcomeStatus::Pending) => TsvStatus::Pending,
            Some(_) => TsvStatus::Discard,
            None if run.status() == Ok(RunStatus::Crashed) => TsvStatus::Crash,
            None => TsvStatus::Running,
        }
    }

    /// The word in the status column.
    pub fn as_str(self) -> &'static str {
        match self {
            TsvStatus::Keep => "keep",
            TsvStatus::Discard => "discard",
            TsvStatus::Crash => "crash",
            TsvStatus::Pending => "pending",
            TsvStatus::Running => "running",
        }
    }

    /// Whether karpathy's results.tsv has the word (`keep`, `discard`,
    /// `crash`): an export writes only those rows.
    pub fn is_decided(self) -> bool {
        matches!(
            self,
            TsvStatus::Keep | TsvStatus::Discard | TsvStatus::Crash
        )
    }
}

/// Where an attempt is in its life, read from what the ledger recorded
/// ([`AttemptState::of`]). The loop records each transition as a tick:
///
/// ```text
/// booting ─► proposing ─► evaluating ─► (deciding) ─► promoting ─► finished
///    │           │             │                           │
///    └───────────┴─────────────┴──────── crash / discard ──┴─► finished
/// ```
///
/// `booting` is the Run spawned; `proposing` the Run `running` with no
/// commit yet (the candidate, once made, is kept under its ref before the
/// ledger knows it); `evaluating` the Run `running` with its commit (its
/// first Result recorded); deciding leaves no record of its own (a
/// comparator's need for more samples adds Results); `promoting` the Run
/// `stopping` with Outcome `keep` (the promotion's intent); `finished` the
/// Run `stopped` or `crashed` with its Outcome. Recovery after a crash acts
/// on this state alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptState {
    /// Recorded, no job started.
    Booting,
    /// The proposer may be running; no candidate commit recorded.
    Proposing,
    /// A candidate commit recorded and being evaluated or compared.
    Evaluating,
    /// Kept by the comparator; its held-out confirmation is running
    /// (see [`AttemptState::with_confirmation`]).
    Confirming,
    /// Kept: the branch update may be under way.
    Promoting,
    /// Decided and over.
    Finished,
}

impl AttemptState {
    /// The state `run` (with its Outcome) was recorded in. A run status this
    /// version does not know counts as finished (nothing to recover).
    pub fn of(run: &Run, outcome: Option<&Outcome>) -> AttemptState {
        match run.status() {
            Ok(RunStatus::Booting) => AttemptState::Booting,
            Ok(RunStatus::Running) if run.commit_hash.is_empty() => AttemptState::Proposing,
            Ok(RunStatus::Running) => AttemptState::Evaluating,
            Ok(RunStatus::Stopping) => match outcome.map(|o| &o.status) {
                Some(OutcomeStatus::Keep) => AttemptState::Promoting,
                _ => AttemptState::Evaluating,
            },
            Ok(RunStatus::Stopped | RunStatus::Crashed) | Err(_) => AttemptState::Finished,
        }
    }

    /// Refines [`AttemptState::of`] with the run's [`crate::Confirmation`]:
    /// a run evaluating whose confirmation of its own commit is `running`
    /// is confirming.
    pub fn with_confirmation(self, run: &Run, c: Option<&crate::Confirmation>) -> AttemptState {
        match (self, c) {
            (AttemptState::Evaluating, Some(c))
                if c.status == ConfirmStatus::Running && c.commit == run.commit_hash =>
            {
                AttemptState::Confirming
            }
            (state, _) => state,
        }
    }

    /// Whether a run in this state was in flight (a controller owns it).
    pub fn is_in_flight(self) -> bool {
        self != AttemptState::Finished
    }

    /// The state's name, as progress lines show it.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Booting => "booting",
            AttemptState::Proposing => "proposing",
            AttemptState::Evaluating => "evaluating",
            AttemptState::Confirming => "confirming",
            AttemptState::Promoting => "promoting",
            AttemptState::Finished => "finished",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_postcard_as_plain_strings() {
        for st in OutcomeStatus::KNOWN
            .iter()
            .cloned()
            .chain([OutcomeStatus::Other("weird".into())])
        {
            let as_enum = postcard::to_allocvec(&st).unwrap();
            let as_string = postcard::to_allocvec(&st.as_str().to_string()).unwrap();
            assert_eq!(as_enum, as_string, "{st}");
            let back: OutcomeStatus = postcard::from_bytes(&as_string).unwrap();
            assert_eq!(back, st);
        }
        for v in VoteVerdict::KNOWN {
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<VoteVerdict>(&json).unwrap(), *v);
        }
    }

    #[test]
    fn stored_words_are_the_ones_earlier_versions_wrote() {
        let words: Vec<&str> = OutcomeStatus::KNOWN.iter().map(|s| s.as_str()).collect();
        assert_eq!(words, ["keep", "discard", "crash", "pending", "baseline"]);
        assert_eq!(VoteVerdict::known("keep"), Some(VoteVerdict::Keep));
        assert_eq!(VoteVerdict::known("maybe"), None);
        assert_eq!(LoopCause::from_word("no change"), Some(LoopCause::NoChange));
        assert_eq!(LoopCause::from_word("stale"), Some(LoopCause::Stale));
        assert_eq!(LoopCause::from_word("oops"), None);
    }

    #[test]
    fn commit_hashes_shorten_as_git_abbreviates_and_serialize_as_text() {
        let c = crate::CommitHash::from("50a799f29c052988e1130d588e0930d5b503b991");
        assert_eq!(c.short(), "50a799f");
        assert_eq!(crate::CommitHash::from("abc").short(), "abc");
        assert_eq!(crate::short_commit(""), "");
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            format!("\"{}\"", c.as_str())
        );
        let id = crate::RunId::from("19ab-3c4d");
        assert_eq!(
            postcard::to_allocvec(&id).unwrap(),
            postcard::to_allocvec("19ab-3c4d").unwrap()
        );
    }

    #[test]
    fn tsv_status_is_one_mapping() {
        let mut run = Run::default();
        let with = |s: &str| Outcome {
            status: s.into(),
            ..Outcome::default()
        };
        assert_eq!(
            TsvStatus::of(&run, Some(&with("baseline"))),
            TsvStatus::Keep
        );
        assert_eq!(TsvStatus::of(&run, Some(&with("keep"))), TsvStatus::Keep);
        assert_eq!(TsvStatus::of(&run, Some(&with("crash"))), TsvStatus::Crash);
        assert_eq!(
            TsvStatus::of(&run, Some(&with("pending"))),
            TsvStatus::Pending
        );
        assert_eq!(TsvStatus::of(&run, Some(&with("huh"))), TsvStatus::Discard);
        assert_eq!(TsvStatus::of(&run, None), TsvStatus::Running);
        run.set_status(RunStatus::Crashed);
        assert_eq!(TsvStatus::of(&run, None), TsvStatus::Crash);
    }

    #[test]
    fn attempt_state_reads_the_recorded_transition() {
        let mut run = Run::default();
        assert_eq!(AttemptState::of(&run, None), AttemptState::Booting);
        run.set_status(RunStatus::Running);
        assert_eq!(AttemptState::of(&run, None), AttemptState::Proposing);
        run.commit_hash = "abc".into();
        assert_eq!(AttemptState::of(&run, None), AttemptState::Evaluating);
        run.set_status(RunStatus::Stopping);
        let keep = Outcome {
            status: OutcomeStatus::Keep,
            ..Outcome::default()
        };
        assert_eq!(AttemptState::of(&run, Some(&keep)), AttemptState::Promoting);
        run.set_status(RunStatus::Stopped);
        assert_eq!(AttemptState::of(&run, Some(&keep)), AttemptState::Finished);
        assert!(!AttemptState::Finished.is_in_flight());
    }

    #[test]
    fn a_running_confirmation_of_the_runs_commit_is_confirming() {
        let mut run = Run::default();
        run.set_status(RunStatus::Running);
        run.commit_hash = "abc".into();
        let mut c = crate::Confirmation {
            commit: "abc".into(),
            status: ConfirmStatus::Running,
            ..Default::default()
        };
        let state = AttemptState::of(&run, None);
        assert_eq!(
            state.with_confirmation(&run, Some(&c)),
            AttemptState::Confirming
        );
        assert!(AttemptState::Confirming.is_in_flight());
        c.commit = "old".into();
        assert_eq!(
            state.with_confirmation(&run, Some(&c)),
            AttemptState::Evaluating
        );
        c.commit = "abc".into();
        c.status = ConfirmStatus::Confirmed;
        assert_eq!(
            state.with_confirmation(&run, Some(&c)),
            AttemptState::Evaluating
        );
        assert_eq!(
            LoopCause::from_word("cost budget spent"),
            Some(LoopCause::CostBudget)
        );
        assert_eq!(
            LoopCause::from_word("not confirmed"),
            Some(LoopCause::NotConfirmed)
        );
    }
}

word_enum! {
    /// Where a job handed to a scheduler is ([`crate::jobs::ExecutorJob::state`]),
    /// in Slurm's terms (`squeue`'s and `sacct`'s states, lower case).
    pub enum JobState {
        /// Submitted, waiting for resources.
        Pending = "pending",
        /// Running on a node.
        Running = "running",
        /// Exited on its own (any exit code).
        Completed = "completed",
        /// Exited with a non-zero code, or its node failed.
        Failed = "failed",
        /// Cancelled (`scancel`, by the loop or from outside).
        Cancelled = "cancelled",
        /// Stopped by the scheduler at its time limit.
        Timeout = "timeout",
        /// Killed for using more memory than it asked for.
        OutOfMemory = "out_of_memory",
        /// The scheduler no longer knows it (finished long ago, purged).
        Unknown = "unknown",
    }
}

impl JobState {
    /// Whether the job will not change state again.
    pub fn is_final(&self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }
}
