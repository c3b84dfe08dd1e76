//! What a candidate cost: wall-clock and CPU time of its proposer and of
//! the evaluations charged to it, and the cost metrics its proposer
//! printed (`cost`, `tokens`, ...). Stored as component `RunCost` on the
//! run's entity and summed by `status` and by the loop's `[run]
//! cost_budget`.
//!
//! CPU time is user + system time of the job's process tree: the job's
//! process and every descendant that was waited for (a daemon that escaped
//! its parent and was reaped by the controller is not counted), as the
//! kernel accounts it for a child (`getrusage(2)`'s `RUSAGE_CHILDREN`
//! semantics, read per job from `/proc/PID/stat` before the job's process
//! is reaped; in the bubblewrap sandbox, reported by a shell that waits for
//! the job's command, see the controller's `usage`). A job whose CPU time
//! could not be measured (killed in the sandbox, or an executor that does
//! not measure it) records 0.
//!
//! The shape is postcard-encoded under the name `RunCost`: changing it
//! means registering a new name, never editing this one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The time one job took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUsage {
    /// Wall-clock time, in milliseconds.
    pub wall_ms: u64,
    /// CPU time (user + system) of the job's process tree, in milliseconds;
    /// 0 when the executor could not measure it (see the module doc).
    pub cpu_ms: u64,
}

impl JobUsage {
    /// The usage of a job that took `wall` and `cpu` (unknown: `None`).
    pub fn new(wall: Duration, cpu: Option<Duration>) -> JobUsage {
        JobUsage {
            wall_ms: wall.as_millis() as u64,
            cpu_ms: cpu.map_or(0, |c| c.as_millis() as u64),
        }
    }

    fn add(&mut self, other: JobUsage) {
        self.wall_ms = self.wall_ms.saturating_add(other.wall_ms);
        self.cpu_ms = self.cpu_ms.saturating_add(other.cpu_ms);
    }
}

/// The children's user + system time in what the POSIX shell builtin
/// `times` printed (a line for the shell, then one for its children, each
/// `XmY.YYYs XmY.YYYs`): the CPU time of the commands the shell waited
/// for, as executors that run a job's command under a shell of their own
/// measure it (the local sandbox's wrapper, a Slurm batch script). `None`
/// when `text` holds no such line.
pub fn shell_times_children(text: &str) -> Option<Duration> {
    let children = text.lines().nth(1)?;
    let mut total = 0.0;
    let mut fields = 0;
    for field in children.split_whitespace() {
        let (m, rest) = field.split_once('m')?;
        let s = rest.strip_suffix('s')?;
        total += m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?;
        fields += 1;
    }
    (fields == 2 && total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

/// Which kind of job a cost is charged as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostKind {
    /// The proposer.
    Propose,
    /// An evaluation (every sample).
    Evaluate,
    /// A held-out confirmation.
    Confirm,
}

/// What one run cost. Evaluations of the incumbent are charged to the
/// incumbent's run, a candidate's to its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCost {
    /// The run charged.
    pub run_id: String,
    /// Its proposer's job.
    pub propose: JobUsage,
    /// Every evaluation charged to it, summed.
    pub evaluate: JobUsage,
    /// Its held-out confirmations, summed.
    pub confirm: JobUsage,
    /// Jobs charged (proposer, evaluations, confirmations).
    pub jobs: u32,
    /// The cost metrics its proposer printed ([`is_cost_metric`] names),
    /// summed over its jobs, e.g. `tokens`, `cost`.
    pub metrics: BTreeMap<String, f64>,
}

/// Whether a metric the proposer prints is a cost to record: `cost`,
/// `tokens`, and names ending in `_cost` or `_tokens` (`usd_cost`,
/// `input_tokens`).
pub fn is_cost_metric(name: &str) -> bool {
    name == "cost" || name == "tokens" || name.ends_with("_cost") || name.ends_with("_tokens")
}

impl RunCost {
    /// An empty cost of `run_id`.
    pub fn new(run_id: impl Into<String>) -> RunCost {
        RunCost {
            run_id: run_id.into(),
            ..RunCost::default()
        }
    }

    /// Adds one job of `kind`, and its cost metrics.
    pub fn charge(&mut self, kind: CostKind, usage: JobUsage, metrics: &[(String, f64)]) {
        match kind {
            CostKind::Propose => self.propose.add(usage),
            CostKind::Evaluate => self.evaluate.add(usage),
            CostKind::Confirm => self.confirm.add(usage),
        }
        self.jobs = self.jobs.saturating_add(1);
        for (k, v) in metrics {
            if v.is_finite() {
                *self.metrics.entry(k.clone()).or_default() += v;
            }
        }
    }

    /// Every job's usage together.
    pub fn total(&self) -> JobUsage {
        let mut t = self.propose;
        t.add(self.evaluate);
        t.add(self.confirm);
        t
    }

    /// Adds `other` (another run's cost) into this sum.
    pub fn add(&mut self, other: &RunCost) {
        self.propose.add(other.propose);
        self.evaluate.add(other.evaluate);
        self.confirm.add(other.confirm);
        self.jobs = self.jobs.saturating_add(other.jobs);
        for (k, v) in &other.metrics {
            *self.metrics.entry(k.clone()).or_default() += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_by_kind_and_metric() {
        let mut c = RunCost::new("r");
        let u = |w, cpu| JobUsage {
            wall_ms: w,
            cpu_ms: cpu,
        };
        c.charge(CostKind::Propose, u(100, 40), &[("tokens".into(), 1000.0)]);
        c.charge(CostKind::Evaluate, u(50, 45), &[]);
        c.charge(CostKind::Evaluate, u(50, 45), &[]);
        c.charge(
            CostKind::Propose,
            u(1, 1),
            &[("tokens".into(), 5.0), ("cost".into(), f64::NAN)],
        );
        assert_eq!(c.propose, u(101, 41));
        assert_eq!(c.evaluate, u(100, 90));
        assert_eq!(c.total(), u(201, 131));
        assert_eq!(c.jobs, 4);
        assert_eq!(c.metrics.get("tokens"), Some(&1005.0));
        assert!(!c.metrics.contains_key("cost"));
        let mut sum = RunCost::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.total(), u(402, 262));
        assert_eq!(sum.metrics["tokens"], 2010.0);
        let back: RunCost = postcard::from_bytes(&postcard::to_allocvec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(is_cost_metric("input_tokens") && is_cost_metric("cost"));
        assert!(!is_cost_metric("val_bpb") && !is_cost_metric("costly"));
    }
}
