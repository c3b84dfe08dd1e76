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
use autoresearch_core::Description;
use autoresearch_core::compare::{Comparator, Decision, Evidence, Verdict};
use autoresearch_core::description::{clean_description, description_line};
use autoresearch_core::exec::{ExecError, Executor, Job, JobReport, Limits};
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts, stored_evidence, world_short_name};
use autoresearch_core::noise::NoiseModel;
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

mod adopted;
mod adopted_proposal;
mod api;
mod attempt;
mod calibrate;
mod confirm;
mod cost;
mod decision;
mod evaluation;
mod fairness;
mod jobs;
mod lease;
mod promotion;
mod proposer_history;
mod schedule;
mod staged;
mod votes;

pub use api::{
    Event, EventSink, LoopConfig, LoopError, Shutdown, StopReason, Summary, fork_branch_name,
};
pub use lease::{HolderState, holder_state, lock_holder};
use staged::StagedLedger;

/// The step (and job step name prefix) of a candidate's evaluations; its
/// samples are marked [`ResultMeta::CANDIDATE`]. The incumbent's are taken
/// as `incumbent`, a baseline's as `baseline`, a calibration's as `calibrate`.
const CANDIDATE_STEP: &str = "evaluate";

/// The step of a candidate's evaluation after its rebase onto a moved head:
/// a candidate's sample too, under a name of its own, so that its job (its
/// logs, a scheduler's job record) is never the pre-rebase `evaluate-0`'s.
const REBASED_STEP: &str = "rebased";

/// The step of the incumbent's samples a comparator asks for during a
/// decision, taken in the first candidate's checkout.
const INCUMBENT_STEP: &str = "incumbent";

/// The step of the head's samples of `[compare] calibrate`, taken in its
/// own checkout.
const CALIBRATE_STEP: &str = "calibrate";

/// The step of a run's proposer job (one a run).
const PROPOSE_STEP: &str = "propose";

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
    /// The proposer's cost, charged to the run with its first result or
    /// its decision (like `workspace`; `None`: already charged, or none).
    proposer_cost: Option<ProposerCost>,
    /// What the proposer tried (the candidate's commit message); recorded
    /// with its first result or its decision (empty: already recorded, or
    /// none).
    description: String,
}

impl Cand {
    /// The [`Description`] component to record, when there is one.
    fn description_record(&self) -> Option<Description> {
        (!self.description.is_empty()).then(|| Description {
            run_id: self.run_id.clone(),
            text: self.description.clone(),
        })
    }
}

/// A proposer job's usage and the cost metrics it printed.
#[derive(Clone, Debug)]
struct ProposerCost {
    usage: autoresearch_core::JobUsage,
    metrics: Vec<(String, f64)>,
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
    /// Pending runs this loop leaves alone because another comparator made
    /// them wait (said once each).
    left_pending: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The number of the next job step, by the run whose checkout the job
    /// runs in (see [`Controller::job_steps`]).
    next_step: std::sync::Mutex<std::collections::HashMap<String, u32>>,
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
            left_pending: Default::default(),
            next_step: Default::default(),
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

    /// A warning for the user, sent once: as an [`Event::Warning`] to the
    /// event sink, which shows it (the CLI prints each once); the log gets
    /// it at debug level only, so that it is not printed twice.
    fn warn(&self, w: String) {
        tracing::debug!("{w}");
        self.emit(Event::Warning(w));
    }

    /// For crash-safety tests only (feature `crash-injection`, never in a
    /// shipped build): kill this process (SIGKILL) when the loop reaches
    /// `point` (`after-candidate`, `confirming` (the held-out confirmation
    /// recorded as running, its job not started), `after-intent`,
    /// `after-branch` (the branch moved, its checkout not yet), `after-ref`). Such a build
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
