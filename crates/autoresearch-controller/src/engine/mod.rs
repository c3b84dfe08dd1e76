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

use staged::StagedLedger;

/// Errors that stop the loop (a failing job does not: it is a crashed run).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopError {
    #[error("{doing} in world {world}: {source}")]
    Ledger {
        doing: String,
        world: String,
        #[source]
        source: autoresearch_core::Error,
    },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Neither the branch nor a recorded head exists: nothing to start from.
    #[error("branch {branch:?} does not exist in {}", repo.display())]
    NoBranch { branch: String, repo: PathBuf },
    /// The proposer's history file could not be written.
    #[error("writing {}: {source}", path.display())]
    History {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A task of the loop's own (a blocking call, a parallel attempt) panicked
    /// or was cancelled.
    #[error("internal task failed while {doing}: {source}")]
    Task {
        doing: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// Another live process holds the world's lease: a second loop on one
    /// world would interleave its ticks with the first one's.
    #[error(
        "world {world} is being run by {holder}; stop that loop first, or run a fork (`autoresearch fork`) or another experiment"
    )]
    LeaseHeld { world: String, holder: String },
    /// Another process took the lease over while this loop ran (its
    /// heartbeat looked stale to it); this loop stopped.
    #[error("the lease on world {world} was taken over by another process; this loop stopped")]
    LeaseLost { world: String },
    /// The lease's lock file could not be opened or locked.
    #[error("locking {}: {source}", path.display())]
    LeaseLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The comparator was asked about a run and returned no decision.
    #[error("the comparator returned no decision for run {run_id}")]
    NoDecision { run_id: String },
}

/// Everything the loop needs to know, independent of the config file.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    pub experiment: String,
    /// The world to run in: `autoresearch:{experiment}`, or a fork of it.
    pub world: String,
    /// The user's repository (a local path).
    pub repo: PathBuf,
    pub branch: String,
    pub harness: String,
    pub propose_command: String,
    pub propose_timeout: Duration,
    pub evaluate_command: String,
    pub evaluate_timeout: Duration,
    pub metrics: MetricsFormat,
    pub protect: Vec<String>,
    /// Metrics every evaluation must print.
    pub require: Vec<String>,
    /// The comparator's first metric: the first value column of the
    /// proposer's results file, as `log --format tsv` writes it.
    pub primary_metric: Option<String>,
    pub parallel: usize,
    /// Candidates to try in this invocation; 0: no limit.
    pub iterations: u64,
    pub time_budget: Option<Duration>,
    pub max_consecutive_crashes: u32,
    pub output_limit: usize,
    pub kill_grace: Duration,
    /// Most samples of one side a comparator may ask for.
    pub max_samples: u32,
    /// Whether the candidate's diff goes into its evidence (a judge reads
    /// it; numeric comparators do not, and it costs a `git diff`).
    pub evidence_diff: bool,
    /// The controller's directory (logs, worktrees, history), `{repo}/.autoresearch`.
    pub state_dir: PathBuf,
    /// The OS lock file of the world's lease (next to the ledger, so that
    /// every process using that ledger meets it); `None`: the lease record
    /// in the ledger only.
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
            branch: c.branch.clone(),
            harness: c.harness.clone(),
            propose_command: c.propose.command.clone(),
            propose_timeout: c.propose.timeout.0,
            evaluate_command: c.evaluate.command.clone(),
            evaluate_timeout: c.evaluate.timeout.0,
            metrics: c.evaluate.metrics.clone(),
            protect: c.evaluate.protect.clone(),
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
    pub const RUNNING: u8 = 0;
    pub const DRAIN: u8 = 1;
    pub const KILL: u8 = 2;

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
    Started { run_id: String, base: String },
    /// A run entered a step (`proposing`, `evaluating`, `rebasing`, ...).
    Step { run_id: String, step: String },
    /// A run was decided.
    Finished {
        run_id: String,
        commit: String,
        /// `keep`, `discard`, `crash`, `pending` or `baseline`.
        status: OutcomeStatus,
        reason: String,
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
    pub launched: u64,
    pub kept: u64,
    pub discarded: u64,
    pub crashed: u64,
    pub pending: u64,
    pub baselines: u64,
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
        let git = Git::new(&cfg.repo);
        let state_rel = cfg
            .state_dir
            .strip_prefix(&cfg.repo)
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let g = git.clone();
        blocking(move || {
            g.run(&["rev-parse", "--git-dir"])?;
            if let Some(rel) = state_rel.filter(|r| !r.is_empty()) {
                g.exclude(&rel)?;
            }
            Ok::<_, GitError>(())
        })
        .await??;
        let c = Controller {
            cfg,
            comparator,
            executor,
            git,
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

    pub fn config(&self) -> &LoopConfig {
        &self.cfg
    }

    fn emit(&self, e: Event) {
        (self.events)(&e);
    }

    /// For crash-safety tests only (feature `crash-injection`, never in a
    /// shipped build): kill this process (SIGKILL) when the loop reaches
    /// `point` (`after-candidate`, `after-intent`, `after-ref`). Such a build
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

    async fn ensure_experiment(&self) -> Result<(), LoopError> {
        let name = self.cfg.experiment.clone();
        if self.ledger.read(|w| w.experiment(&name).is_some()).await {
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
