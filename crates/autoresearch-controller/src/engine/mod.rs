//! The loop: read the head, try candidates, evaluate, compare, keep or
//! discard or crash, advance the branch only on improvement, repeat.
//!
//! Every step is one tick of the experiment world, so time travel shows the
//! loop as it went. The git branch and the ledger's BranchHead are two
//! stores that cannot change atomically; promotion therefore goes
//! (1) tick: the run's Outcome `keep` with the run `stopping` (the intent),
//! (2) compare-and-swap of the branch from the base to the candidate,
//! (3) tick: BranchHead and the run `stopped`.
//! A controller killed anywhere in between is finished by [`Controller::recover`]:
//! a `stopping` run with Outcome `keep` whose base is still the BranchHead is
//! promoted (its branch update done if the branch is still at the base, only
//! the tick if the branch already moved to it), so a kept candidate is never
//! lost and, thanks to the compare-and-swap, never applied twice.

use crate::config::{Config, MetricsFormat};
use crate::git::{Git, GitError};
use crate::{history, metrics};
use autoresearch_core::compare::{Comparator, Decision, Evidence, Verdict};
use autoresearch_core::exec::{ExecError, Executor, Job, JobReport, Limits};
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts, stored_evidence, world_short_name};
use autoresearch_core::{
    AttemptState, BranchHead, ComponentRegistry, EntityId, EvalResult, Experiment, LoopCause,
    OutcomeStatus, ResultMeta, Run, RunStatus, Storage, World, now_ms, short_commit,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

mod attempt;
mod decision;
mod lease;
mod promotion;
mod proposer_history;
mod schedule;
mod staged;

pub use lease::{HolderState, holder_state};
use staged::StagedLedger;

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
    /// Most samples of one side a comparator may ask for.
    pub max_samples: u32,
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
            max_samples: 30,
            evidence_diff: true,
            state_dir: c.repo.join(".autoresearch"),
            lease_lock: None,
            lease_timeout: c.run.lease_timeout.0,
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

    fn subscribe(&self) -> watch::Receiver<u8> {
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
}

#[derive(Clone, Debug)]
struct Head {
    commit: String,
    run_id: String,
}

#[derive(Clone, Debug)]
struct Cand {
    run_id: String,
    entity: EntityId,
    base: String,
    commit: String,
    /// The checkout the candidate was made in; recorded with its first
    /// result or its decision (empty: already recorded, or none).
    workspace: String,
    /// What the proposer left out of the candidate (ignored files).
    left_out: Vec<String>,
}

/// Where an attempt ended before comparison.
enum Prepared {
    Evaluated(Cand),
    Done(OutcomeStatus),
}

struct Crash {
    reason: String,
    detail: Value,
}

enum JobEnd {
    Report(Box<JobReport>),
    Interrupted,
}

/// The loop over one experiment world and one branch.
pub struct Controller {
    cfg: LoopConfig,
    comparator: Arc<dyn Comparator>,
    executor: Arc<dyn Executor>,
    git: Git,
    /// The paths a candidate may not change.
    protection: crate::guard::Protection,
    ledger: StagedLedger,
    /// The history file's lines of attempts that can no longer change, by
    /// entity (so in recorded order): each iteration renders only the rest.
    history_rows: Arc<std::sync::Mutex<BTreeMap<EntityId, history::Row>>>,
    incumbent_lock: Mutex<()>,
    events: EventSink,
    shutdown: Shutdown,
    started: Instant,
    #[cfg(feature = "crash-injection")]
    crash_at: Option<String>,
}

impl Controller {
    /// Opens (creating if needed) the world and its Experiment, and keeps the
    /// controller's directory out of git. Does not touch the branch yet.
    pub async fn open(
        cfg: LoopConfig,
        storage: Arc<dyn Storage>,
        comparator: Arc<dyn Comparator>,
        executor: Arc<dyn Executor>,
    ) -> Result<Controller, LoopError> {
        let registry = Arc::new(ComponentRegistry::standard());
        let world = World::open_or_create(storage, registry, &cfg.world)
            .await
            .map_err(|source| LoopError::Ledger {
                doing: "opening the experiment world".into(),
                world: cfg.world.clone(),
                source,
            })?;
        let mut cfg = cfg;
        let git = Git::new(&cfg.repo);
        let (g, state_dir) = (git.clone(), cfg.state_dir.clone());
        // The ledger's folder (where the lease's lock folder is) is ours too.
        let ledger_dir = cfg
            .lease_lock
            .as_ref()
            .and_then(|p| p.parent()?.parent().map(PathBuf::from));
        cfg.workdir = blocking(move || {
            g.run(&["rev-parse", "--git-dir"])?;
            if g.is_bare()? {
                return Ok(String::new());
            }
            // The config's folder inside the repository, and the state
            // directory as the repository's root sees it.
            let prefix = g.run(&["rev-parse", "--show-prefix"])?;
            let top = PathBuf::from(g.run(&["rev-parse", "--show-toplevel"])?);
            let top = top.canonicalize().unwrap_or(top);
            let _ = std::fs::create_dir_all(&state_dir);
            for dir in std::iter::once(state_dir).chain(ledger_dir) {
                let dir = dir.canonicalize().unwrap_or(dir);
                if let Ok(rel) = dir.strip_prefix(&top)
                    && !rel.as_os_str().is_empty()
                {
                    g.exclude(&rel.to_string_lossy())?;
                }
            }
            Ok::<_, GitError>(prefix.trim_end_matches('/').to_string())
        })
        .await??;
        let protection =
            crate::guard::Protection::new(&crate::guard::protected_patterns(&cfg), &cfg.workdir)?;
        let c = Controller {
            cfg,
            comparator,
            executor,
            git,
            protection,
            ledger: StagedLedger::new(world),
            history_rows: Default::default(),
            incumbent_lock: Mutex::new(()),
            events: Arc::new(|_| {}),
            shutdown: Shutdown::new(),
            started: Instant::now(),
            // The test hook's switch, read only in builds that have it.
            #[cfg(feature = "crash-injection")]
            crash_at: std::env::var("AUTORESEARCH_TEST_CRASH_AT").ok(),
        };
        c.ensure_experiment().await?;
        Ok(c)
    }

    /// Sends progress events to `sink`.
    pub fn with_events(mut self, sink: EventSink) -> Self {
        self.events = sink;
        self
    }

    /// Obeys `shutdown` (Ctrl-C handling lives in the caller).
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The settings this controller runs with.
    pub fn config(&self) -> &LoopConfig {
        &self.cfg
    }

    fn emit(&self, e: Event) {
        (self.events)(&e);
    }

    /// For crash-safety tests only (feature `crash-injection`, never in a
    /// shipped build): kill this process (SIGKILL) when the loop reaches
    /// `point` (`after-candidate`, `after-intent`, `after-branch` (the branch
    /// moved, its checkout not yet), `after-ref`). Such a build
    /// also takes the point from `AUTORESEARCH_TEST_CRASH_AT`.
    #[cfg(feature = "crash-injection")]
    pub fn with_crash_point(mut self, point: Option<String>) -> Self {
        self.crash_at = point;
        self
    }

    #[cfg(feature = "crash-injection")]
    fn crash_point(&self, point: &str) {
        if self.crash_at.as_deref() == Some(point) {
            // SAFETY: raising a signal at ourselves has no preconditions.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
    }

    #[cfg(not(feature = "crash-injection"))]
    fn crash_point(&self, _point: &str) {}

    async fn git<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Git) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, LoopError> {
        let g = self.git.clone();
        Ok(blocking(move || f(&g)).await??)
    }

    /// Records the Experiment on first use; afterwards, in the experiment's
    /// own world, the configured branch must be the one it recorded.
    async fn ensure_experiment(&self) -> Result<(), LoopError> {
        let name = self.cfg.experiment.clone();
        if let Some((_, e)) = self.ledger.read(|w| w.experiment(&name)).await {
            let own_world = self.cfg.world == autoresearch_core::experiment_world_name(&name);
            if own_world && !e.branch.is_empty() && e.branch != self.cfg.branch {
                return Err(LoopError::BranchMismatch {
                    experiment: name,
                    recorded: e.branch,
                    configured: self.cfg.branch.clone(),
                });
            }
            return Ok(());
        }
        let exp = Experiment::new(
            &name,
            self.cfg.repo.display().to_string(),
            &self.cfg.branch,
            now_ms(),
            &json!({
                Experiment::CONTROLLER_KEY: Experiment::LOOP_CONTROLLER,
                "comparator": self.comparator.spec(),
            }),
        );
        self.ledger
            .tick("recording the experiment", |w| {
                if w.experiment(&name).is_none() {
                    w.spawn_with(&exp)?;
                }
                Ok(())
            })
            .await
    }

    async fn head(&self) -> Option<Head> {
        let name = self.cfg.experiment.clone();
        self.ledger
            .read(|w| w.branch_head(&name))
            .await
            .map(|(_, h)| Head {
                commit: h.commit_hash,
                run_id: h.run_id,
            })
    }

    fn new_run_id() -> String {
        format!("{:x}-{:04x}", now_ms(), rand::random::<u16>())
    }

    fn candidate_ref(&self, run_id: &str) -> String {
        format!("refs/autoresearch/{}/{run_id}", self.cfg.experiment)
    }

    fn new_run(&self, run_id: &str, task: &str) -> Run {
        Run {
            run_id: run_id.to_string(),
            experiment_name: self.cfg.experiment.clone(),
            vm_name: self.executor.name(),
            status: RunStatus::Booting.as_str().to_string(),
            harness: self.cfg.harness.clone(),
            repo_url: self.cfg.repo.display().to_string(),
            branch: self.cfg.branch.clone(),
            task: task.to_string(),
            started_at_ms: now_ms(),
            finished_at_ms: 0,
            agent_name: Run::conventional_agent_name(&self.cfg.experiment, &self.cfg.harness),
            workspace_path: String::new(),
            commit_hash: String::new(),
        }
    }
}

/// The Run on `entity`, which the loop spawned: its absence is an error,
/// never a default Run.
fn run_of(w: &World, entity: EntityId) -> Result<Run, autoresearch_core::Error> {
    w.get::<Run>(entity)
        .ok_or(autoresearch_core::Error::NoSuchEntity {
            world: w.id(),
            entity,
        })
}

/// Logs a checkout that could not be given back (the next job or `recover`
/// retries; the loop goes on).
fn log_release(run_id: &str, released: Result<(), ExecError>) {
    if let Err(e) = released {
        tracing::warn!("releasing the checkout of run {run_id}: {e}");
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LoopError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| LoopError::Task {
            doing: "running a blocking call",
            source,
        })
}
