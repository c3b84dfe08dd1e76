//! The loop's public vocabulary: its configuration, errors, progress
//! events, shutdown levels and summary.

use super::*;

/// Errors that stop the loop (a failing job does not: it is a crashed run).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopError {
    /// Reading or writing the experiment's world failed.
    #[error("{doing} in world {world}: {source}")]
    Ledger {
        /// What the loop was recording or reading.
        doing: String,
        /// The world.
        world: String,
        /// The ledger's error.
        #[source]
        source: autoresearch_core::Error,
    },
    /// A git command on the user's repository failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The executor could not run a job at all (not a job that failed).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Neither the branch nor a recorded head exists, and there is no
    /// commit to create it from.
    #[error("branch {branch:?} does not exist in {} and HEAD has no commit to create it from; make a first commit", repo.display())]
    NoBranch {
        /// The branch looked for.
        branch: String,
        /// The repository looked in.
        repo: PathBuf,
    },
    /// The config names another branch than the experiment recorded.
    #[error(
        "experiment {experiment} advances branch {recorded:?}, but the config says {configured:?}: set `branch = \"{recorded}\"`, or name a new experiment for the new branch"
    )]
    BranchMismatch {
        /// The experiment.
        experiment: String,
        /// The branch its `Experiment` record names.
        recorded: String,
        /// The branch the config names.
        configured: String,
    },
    /// A branch update that would not be a fast-forward (the loop never
    /// moves its branch any other way).
    #[error("refusing to move branch {branch} from {old} to {new}: not a fast-forward")]
    NotFastForward {
        /// The branch.
        branch: String,
        /// Its commit now.
        old: String,
        /// The commit it would have moved to.
        new: String,
    },
    /// The proposer's history file could not be written.
    #[error("writing {}: {source}", path.display())]
    History {
        /// The history file (`results.tsv` under the state directory).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A task of the loop's own (a blocking call, a parallel attempt) panicked
    /// or was cancelled.
    #[error("internal task failed while {doing}: {source}")]
    Task {
        /// What the task was for.
        doing: &'static str,
        /// The join error: a panic or a cancellation.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Another live process holds the world's lease: a second loop on one
    /// world would interleave its ticks with the first one's.
    #[error(
        "world {world} is being run by {holder}; stop that loop first, or run a fork (`autoresearch fork`) or another experiment"
    )]
    LeaseHeld {
        /// The world asked for.
        world: String,
        /// Who holds it, for people: its pid, host, age and last heartbeat.
        holder: String,
    },
    /// Another process took the lease over while this loop ran (its
    /// heartbeat looked stale to it); this loop stopped.
    #[error("the lease on world {world} was taken over by another process; this loop stopped")]
    LeaseLost {
        /// The world this loop was running.
        world: String,
    },
    /// The lease's lock file could not be opened or locked.
    #[error("locking {}: {source}", path.display())]
    LeaseLock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A protected path pattern is not a valid glob.
    #[error(transparent)]
    Protect(#[from] crate::guard::PatternError),
    /// The comparator was asked about a run and returned no decision.
    #[error("the comparator returned no decision for run {run_id}")]
    NoDecision {
        /// The run left undecided.
        run_id: String,
    },
}

/// Everything the loop needs to know, independent of the config file.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// The experiment the loop advances.
    pub experiment: String,
    /// The world to run in: `autoresearch:{experiment}`, or a fork of it.
    pub world: String,
    /// The user's repository (a local path: the config file's directory,
    /// which may be a folder inside the repository).
    pub repo: PathBuf,
    /// `repo` relative to the repository's root (empty at the root), where
    /// jobs run in their checkouts; filled in by [`Controller::open`].
    pub workdir: String,
    /// The branch the loop advances (for a fork, its own `autoresearch/{fork}` branch).
    pub branch: String,
    /// Recorded as `Run.harness`.
    pub harness: String,
    /// The proposer's shell command, run in a fresh checkout of the head.
    pub propose_command: String,
    /// How long the proposer may run before its process group is killed.
    pub propose_timeout: Duration,
    /// The evaluator's shell command, run in a checkout of the candidate.
    pub evaluate_command: String,
    /// How long one evaluation may run before its process group is killed.
    pub evaluate_timeout: Duration,
    /// How the evaluator's metrics are read.
    pub metrics: MetricsFormat,
    /// Paths a candidate may not change (see [`guard`](crate::guard)), on
    /// top of `config_file` and the files the evaluate command names.
    pub protect: Vec<String>,
    /// Files the evaluate command names that candidates may change.
    pub editable: Vec<String>,
    /// The config file, protected by default (`None`: none).
    pub config_file: Option<PathBuf>,
    /// A candidate adding or growing a file past this many bytes is refused.
    pub max_file_size: u64,
    /// Whether a candidate may add or change a gitlink.
    pub allow_gitlinks: bool,
    /// Metrics every evaluation must print.
    pub require: Vec<String>,
    /// The comparator's first metric: the first value column of the
    /// proposer's results file, as `log --format tsv` writes it.
    pub primary_metric: Option<String>,
    /// Candidates tried at once against the same head (at least 1).
    pub parallel: usize,
    /// Candidates to try in this invocation; 0: no limit.
    pub iterations: u64,
    /// Stop launching runs after this long; `None`: no limit.
    pub time_budget: Option<Duration>,
    /// Stop after this many crashed runs in a row.
    pub max_consecutive_crashes: u32,
    /// Bytes of each job's output kept in memory and in the ledger.
    pub output_limit: usize,
    /// After a polite stop (SIGTERM) of a job, how long to wait before killing it.
    pub kill_grace: Duration,
    /// A guard against a comparator that never stops asking: the most
    /// samples of one side the loop takes for one decision. Every built-in
    /// comparator's budget is its spec's (`stat`'s `max_n`), so a config
    /// file sets none (`u32::MAX`).
    pub max_samples: u32,
    /// `[compare] calibrate`: before the first candidate, evaluate the head
    /// until it has this many samples, so that the noise model starts from
    /// a measured noise floor; 0: no calibration.
    pub calibrate: u32,
    /// Whether the candidate's diff goes into its evidence (a judge reads
    /// it; numeric comparators do not, and it costs a `git diff`).
    pub evidence_diff: bool,
    /// The controller's directory (logs, worktrees, history), `{repo}/.autoresearch`.
    pub state_dir: PathBuf,
    /// The OS lock file of the world's lease (in a folder next to the
    /// ledger, so that every process using that ledger meets it; the
    /// ledger's folder is excluded from git when inside the repository);
    /// `None`: the lease record in the ledger only.
    pub lease_lock: Option<PathBuf>,
    /// A lease whose holder on another host has not renewed it for this
    /// long is taken over; the holder renews it every quarter of it.
    pub lease_timeout: Duration,
    /// Held-out confirmation of candidates the comparator would keep
    /// (`[confirm]`); `None`: the comparator's keep is final.
    pub confirm: Option<crate::config::ConfirmConfig>,
    /// Stop launching runs once the experiment has spent this much
    /// (`[run] cost_budget`); `None`: no limit.
    pub cost_budget: Option<crate::config::CostBudget>,
}

impl LoopConfig {
    /// The loop settings of a config file, in the experiment's own world.
    pub fn from_config(c: &Config) -> LoopConfig {
        LoopConfig {
            experiment: c.name.clone(),
            world: autoresearch_core::experiment_world_name(&c.name),
            repo: c.repo.clone(),
            workdir: String::new(),
            branch: c.branch.clone(),
            harness: c.harness.clone(),
            propose_command: c.propose.command.clone(),
            propose_timeout: c.propose.timeout.0,
            evaluate_command: c.evaluate.command.clone(),
            evaluate_timeout: c.evaluate.timeout.0,
            metrics: c.evaluate.metrics.clone(),
            protect: c.evaluate.protect.clone(),
            editable: c.evaluate.editable.clone(),
            config_file: Some(c.path.canonicalize().unwrap_or(c.path.clone())),
            max_file_size: c.propose.max_file_size.0,
            allow_gitlinks: c.propose.allow_gitlinks,
            require: c.evaluate.require.clone(),
            primary_metric: None,
            parallel: c.run.parallel,
            iterations: c.run.iterations,
            time_budget: c.run.time_budget.map(|s| s.0),
            max_consecutive_crashes: c.run.max_consecutive_crashes,
            output_limit: c.run.output_limit,
            kill_grace: Duration::from_secs(2),
            max_samples: u32::MAX,
            calibrate: c.calibrate,
            evidence_diff: true,
            state_dir: c.repo.join(".autoresearch"),
            lease_lock: None,
            lease_timeout: c.run.lease_timeout.0,
            confirm: c.confirm.clone(),
            cost_budget: c.run.cost_budget.clone(),
        }
    }

    /// Where the proposer's results.tsv lives.
    pub fn history_path(&self) -> PathBuf {
        let name = world_short_name(&self.world).replace([':', '/', '\\'], "_");
        self.state_dir.join(name).join("results.tsv")
    }
}

/// The git branch a forked world continues on: `autoresearch/{fork}`.
pub fn fork_branch_name(world: &str) -> String {
    let fork = world_short_name(world);
    format!(
        "autoresearch/{}",
        fork.replace([':', ' ', '~', '^', '?', '*', '['], "-")
    )
}

/// Shutdown requests: the first stops launching runs (drain), the second
/// kills running jobs and records them as interrupted.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<u8>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// Level 0: launching runs as usual.
    pub const RUNNING: u8 = 0;
    /// Level 1: launch no new runs; let the running ones finish.
    pub const DRAIN: u8 = 1;
    /// Level 2: kill the running jobs and record them as interrupted.
    pub const KILL: u8 = 2;

    /// A shutdown at level [`Shutdown::RUNNING`]. Clones share the level.
    pub fn new() -> Shutdown {
        Shutdown {
            tx: Arc::new(watch::channel(Shutdown::RUNNING).0),
        }
    }

    /// Moves one level up (running, drain, kill); returns the new level.
    pub fn escalate(&self) -> u8 {
        let mut level = 0;
        self.tx.send_modify(|l| {
            *l = (*l + 1).min(Shutdown::KILL);
            level = *l;
        });
        level
    }

    /// The current level: [`Shutdown::RUNNING`], [`Shutdown::DRAIN`] or [`Shutdown::KILL`].
    pub fn level(&self) -> u8 {
        *self.tx.borrow()
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u8> {
        self.tx.subscribe()
    }
}

/// What the loop reports as it goes, for progress displays.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A run was launched against `base`.
    Started {
        /// The new run's id.
        run_id: String,
        /// The head commit the run starts from.
        base: String,
    },
    /// A run entered a step (`proposing`, `evaluating`, `rebasing`, ...).
    Step {
        /// The run.
        run_id: String,
        /// The step's name.
        step: String,
    },
    /// A run was decided.
    Finished {
        /// The run.
        run_id: String,
        /// The candidate commit; empty when the proposer made none.
        commit: String,
        /// `keep`, `discard`, `crash`, `pending` or `baseline`.
        status: OutcomeStatus,
        /// The decision's one-line reason.
        reason: String,
        /// The final commit's metrics, averaged over its samples, in the
        /// order they first appear; `_`-prefixed keys left out.
        metrics: Vec<(String, f64)>,
        /// The head after the decision.
        head: String,
    },
    /// Something the user should know (a dirty checkout left alone, ...).
    Warning(String),
}

/// Receives [`Event`]s; must be cheap (it runs on the loop's tasks).
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// How a loop invocation ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Runs launched by this invocation.
    pub launched: u64,
    /// Candidates kept, including pending ones decided by later votes.
    pub kept: u64,
    /// Candidates discarded, including pending ones decided by later votes.
    pub discarded: u64,
    /// Runs that ended without a keep, discard or pending decision (crashes and interrupted runs).
    pub crashed: u64,
    /// Runs left waiting for votes.
    pub pending: u64,
    /// Times the head was found moved by someone else and re-evaluated as a baseline.
    pub baselines: u64,
    /// The head commit when the loop stopped; empty when there is none.
    pub head: String,
    /// Why the loop stopped, in words (`"5 consecutive crashes"`).
    pub stopped: String,
    /// Why the loop stopped, for a program (the CLI's exit code).
    pub reason: StopReason,
}

/// Why a loop invocation ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// `iterations` candidates were tried.
    #[default]
    IterationsDone,
    /// The time budget was spent.
    TimeBudget,
    /// Asked to stop (Ctrl-C, a signal).
    Interrupted,
    /// `max_consecutive_crashes` attempts in a row crashed: the evaluator or
    /// the proposer is probably broken, not the candidates.
    ConsecutiveCrashes(u32),
    /// The experiment's `[run] cost_budget` is spent
    /// ([`LoopCause::CostBudget`]).
    CostBudget,
}
