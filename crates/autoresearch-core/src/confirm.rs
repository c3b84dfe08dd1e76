//! Held-out confirmation: a second, independent measurement of a candidate
//! the comparator would keep, by a command the proposer never sees
//! (`[confirm]` in `autoresearch.toml`), on data the search never sees.
//! Promotion requires the confirm metric not to regress beyond a tolerance
//! against the incumbent's confirm value.
//!
//! One [`Confirmation`] is stored as component `Confirmation` on the run's
//! entity: the candidate's (with the incumbent's value it was held against)
//! and the incumbent's own reference measurement alike. Its
//! [`ConfirmStatus`] `running` is the attempt's explicit "confirming" state
//! (see [`crate::AttemptState::with_confirmation`]): a controller killed
//! during a confirmation leaves it, and recovery reads it.
//!
//! The shape is postcard-encoded under the name `Confirmation`: changing it
//! means registering a new name (`ConfirmationV2`), never editing this one
//! (see [`crate::registry`]).

use crate::compare::Direction;
use crate::vocab::ConfirmStatus;
use serde::{Deserialize, Serialize};

/// One held-out measurement of a run's commit, and what it decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The run measured (a candidate, or the incumbent's run).
    pub run_id: String,
    /// The commit measured (full hash).
    pub commit: String,
    /// Where the measurement stands and what it decided.
    pub status: ConfirmStatus,
    /// The confirm command that measured it (a stored value counts as an
    /// incumbent's reference only for the same command).
    pub command: String,
    /// The confirm metric's name.
    pub metric: String,
    /// Which way the confirm metric improves.
    pub direction: Direction,
    /// The confirm metric of `commit`; `None` while running, or when the
    /// confirm command failed or printed no such metric.
    pub value: Option<f64>,
    /// The incumbent commit the candidate was held against; empty for an
    /// incumbent's own reference measurement.
    pub incumbent_commit: String,
    /// The incumbent's confirm value it was held against.
    pub incumbent_value: Option<f64>,
    /// How far the candidate may fall behind the incumbent, in the metric's
    /// own units, and still be confirmed.
    pub tolerance: f64,
    /// One line for people: the verdict and why.
    pub reason: String,
    /// Wall-clock time of the confirm command, in milliseconds.
    pub duration_ms: u64,
    /// The files the confirm command's output was captured to.
    pub stdout_log: String,
    /// See `stdout_log`.
    pub stderr_log: String,
    /// When this record was written, in Unix milliseconds.
    pub at_ms: i64,
}

impl Confirmation {
    /// Whether `candidate` is confirmed against `incumbent`: not worse by
    /// more than `tolerance` in `direction` (`tolerance` in the metric's
    /// units, at least 0). A NaN on either side is never confirmed.
    pub fn passes(direction: Direction, incumbent: f64, candidate: f64, tolerance: f64) -> bool {
        let loss = -direction.improvement(incumbent, candidate);
        loss.is_finite() && loss <= tolerance.max(0.0)
    }

    /// Whether this is a usable reference value of `commit` for later
    /// candidates: measured (or confirmed) on exactly that commit, by the
    /// same command and metric, with a value.
    pub fn is_reference_for(&self, commit: &str, command: &str, metric: &str) -> bool {
        self.commit == commit
            && self.command == command
            && self.metric == metric
            && self.value.is_some()
            && matches!(
                self.status,
                ConfirmStatus::Measured | ConfirmStatus::Confirmed
            )
    }

    /// What a decision's descriptor records of it (the whole record stays
    /// on the run): status, metric, direction, both values, tolerance.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "status": self.status,
            "metric": self.metric,
            "direction": self.direction,
            "value": self.value,
            "incumbent_value": self.incumbent_value,
            "tolerance": self.tolerance,
        })
    }

    /// A short cell for tables: `ok 0.91`, `REJECTED 0.97 vs 0.93`,
    /// `failed`, `running`, `ref 0.93`.
    pub fn cell(&self) -> String {
        let num = |v: Option<f64>| v.map_or("-".to_string(), crate::num::fmt_f64);
        match &self.status {
            ConfirmStatus::Confirmed => format!("ok {}", num(self.value)),
            ConfirmStatus::Rejected => format!(
                "rejected {} vs {}",
                num(self.value),
                num(self.incumbent_value)
            ),
            ConfirmStatus::Measured => format!("ref {}", num(self.value)),
            other => other.as_str().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_within_the_tolerance_in_either_direction() {
        let min = Direction::Minimize;
        let max = Direction::Maximize;
        let cases = [
            (min, 1.0, 0.9, 0.0, true),
            (min, 1.0, 1.0, 0.0, true),
            (min, 1.0, 1.05, 0.0, false),
            (min, 1.0, 1.05, 0.1, true),
            (max, 1.0, 0.95, 0.1, true),
            (max, 1.0, 0.85, 0.1, false),
            (max, 1.0, f64::NAN, 10.0, false),
            (min, 1.0, 1.05, -1.0, false),
        ];
        for (dir, inc, cand, tol, want) in cases {
            assert_eq!(
                Confirmation::passes(dir, inc, cand, tol),
                want,
                "{dir:?} {inc} {cand} {tol}"
            );
        }
    }

    #[test]
    fn postcard_round_trip_and_reference_check() {
        let c = Confirmation {
            run_id: "r1".into(),
            commit: "abc".into(),
            command: "./confirm.sh".into(),
            status: ConfirmStatus::Measured,
            metric: "acc".into(),
            direction: Direction::Maximize,
            value: Some(0.75),
            ..Confirmation::default()
        };
        let bytes = postcard::to_allocvec(&c).unwrap();
        let back: Confirmation = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, c);
        assert!(c.is_reference_for("abc", "./confirm.sh", "acc"));
        assert!(!c.is_reference_for("abd", "./confirm.sh", "acc"));
        assert!(!c.is_reference_for("abc", "./confirm.sh", "loss"));
        assert!(!c.is_reference_for("abc", "./other.sh", "acc"));
        let failed = Confirmation {
            status: ConfirmStatus::Failed,
            value: None,
            ..c
        };
        assert!(!failed.is_reference_for("abc", "./confirm.sh", "acc"));
        assert_eq!(failed.cell(), "failed");
    }
}
