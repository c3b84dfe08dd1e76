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
use autoresearch_core::compare::{Comparator, Decision, Evidence, Verdict, Vote};
use autoresearch_core::exec::{ExecError, Executor, Job, JobReport, Limits};
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts};
use autoresearch_core::{
    BranchHead, ComponentRegistry, EntityId, EvalResult, Experiment, Run, RunStatus, Storage,
    StorageError, World, now_ms,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

/// Errors that stop the loop (a failing job does not: it is a crashed run).
#[derive(Debug, thiserror::Error)]
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
    #[error("{0}")]
    Setup(String),
    #[error("internal task failed: {0}")]
    Task(String),
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
    /// For crash-safety tests only: kill this process (SIGKILL) when the
    /// loop reaches the named point (`after-candidate`, `after-intent`,
    /// `after-ref`).
    pub crash_at: Option<String>,
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
            parallel: c.run.parallel,
            iterations: c.run.iterations,
            time_budget: c.run.time_budget.map(|s| s.0),
            max_consecutive_crashes: c.run.max_consecutive_crashes,
            output_limit: c.run.output_limit,
            kill_grace: Duration::from_secs(2),
            max_samples: 30,
            evidence_diff: true,
            state_dir: c.repo.join(".autoresearch"),
            crash_at: None,
        }
    }

    /// Where the proposer's results.tsv lives.
    pub fn history_path(&self) -> PathBuf {
        let name = self
            .world
            .strip_prefix("autoresearch:")
            .unwrap_or(&self.world)
            .replace([':', '/', '\\'], "_");
        self.state_dir.join(name).join("results.tsv")
    }
}

/// The git branch a forked world continues on: `autoresearch/{fork}`.
pub fn fork_branch_name(world: &str) -> String {
    let fork = world.strip_prefix("autoresearch:").unwrap_or(world);
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
        status: String,
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
    /// Why the loop stopped.
    pub stopped: String,
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
    Done(String),
}

struct Crash {
    reason: String,
    detail: Value,
}

enum JobEnd {
    Report(Box<JobReport>),
    Interrupted,
}

/// A staged step's changes, kept to be made again should the flush of its
/// tick meet another writer's tick (see [`Controller::stage`]).
type StagedStep = Box<dyn FnMut(&mut World) -> Result<(), autoresearch_core::Error> + Send>;

/// The experiment world, and the steps staged on it that are not durable yet.
struct Ledger {
    world: World,
    staged: Vec<(String, StagedStep)>,
}

/// The loop over one experiment world and one branch.
pub struct Controller {
    cfg: LoopConfig,
    comparator: Arc<dyn Comparator>,
    executor: Arc<dyn Executor>,
    git: Git,
    world: Mutex<Ledger>,
    /// How many steps are staged (a copy of `world.staged.len()` readable
    /// without waiting for the world, e.g. while a durable tick commits).
    staged_steps: std::sync::atomic::AtomicUsize,
    /// The history file's lines of attempts that can no longer change, by
    /// entity (so in recorded order): each iteration renders only the rest.
    history_rows: Arc<std::sync::Mutex<BTreeMap<EntityId, history::Row>>>,
    incumbent_lock: Mutex<()>,
    events: EventSink,
    shutdown: Shutdown,
    started: Instant,
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
            world: Mutex::new(Ledger {
                world,
                staged: Vec::new(),
            }),
            staged_steps: Default::default(),
            history_rows: Default::default(),
            incumbent_lock: Mutex::new(()),
            events: Arc::new(|_| {}),
            shutdown: Shutdown::new(),
            started: Instant::now(),
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

    fn crash_point(&self, point: &str) {
        if self.cfg.crash_at.as_deref() == Some(point) {
            // SAFETY: raising a signal at ourselves has no preconditions.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
    }

    // --- Ledger access --------------------------------------------------

    /// Applies `f` and commits it as one durable tick, after the staged
    /// ticks before it (all in one write); on a conflict with another
    /// writer (a vote), refreshes, makes the staged steps again, and applies
    /// `f` again.
    async fn tick<T>(
        &self,
        doing: &str,
        mut f: impl FnMut(&mut World) -> Result<T, autoresearch_core::Error>,
    ) -> Result<T, LoopError> {
        let mut l = self.world.lock().await;
        let mut attempts_left = 20;
        loop {
            let out = match f(&mut l.world) {
                Ok(v) => v,
                Err(e) => {
                    l.world.discard_pending();
                    return Err(self.ledger_error(doing, e));
                }
            };
            match l.world.commit().await {
                Ok(_) => {
                    l.staged.clear();
                    self.staged_steps.store(0, Ordering::Release);
                    return Ok(out);
                }
                Err(autoresearch_core::Error::Storage(StorageError::Conflict { .. }))
                    if attempts_left > 0 =>
                {
                    attempts_left -= 1;
                    self.redo_staged(&mut l).await?;
                }
                Err(e) => {
                    l.world.discard_pending();
                    return Err(self.ledger_error(doing, e));
                }
            }
        }
    }

    /// Applies `f` as the next tick at once, but leaves its append to the
    /// next durable tick or [`Controller::flush`], so that several steps
    /// cost one durable write. Only for steps nothing outside this process
    /// acts on before then: every job start and every branch update flushes
    /// first. `f` is kept until then, to be made again on a refreshed world
    /// should another writer get in first.
    async fn stage(
        &self,
        doing: &str,
        mut f: impl FnMut(&mut World) -> Result<(), autoresearch_core::Error> + Send + 'static,
    ) -> Result<(), LoopError> {
        let mut l = self.world.lock().await;
        let staged = f(&mut l.world).and_then(|_| l.world.stage());
        if let Err(e) = staged {
            l.world.discard_pending();
            return Err(self.ledger_error(doing, e));
        }
        l.staged.push((doing.to_string(), Box::new(f)));
        self.staged_steps.store(l.staged.len(), Ordering::Release);
        Ok(())
    }

    /// Makes every staged step durable (without waiting for the world when
    /// there is none).
    async fn flush(&self) -> Result<(), LoopError> {
        if self.staged_steps.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let mut l = self.world.lock().await;
        self.flush_locked(&mut l).await
    }

    async fn flush_locked(&self, l: &mut Ledger) -> Result<(), LoopError> {
        let mut attempts_left = 20;
        while !l.staged.is_empty() {
            match l.world.flush().await {
                Ok(_) => {
                    l.staged.clear();
                    self.staged_steps.store(0, Ordering::Release);
                }
                Err(autoresearch_core::Error::Storage(StorageError::Conflict { .. }))
                    if attempts_left > 0 =>
                {
                    attempts_left -= 1;
                    self.redo_staged(l).await?;
                }
                Err(e) => return Err(self.ledger_error("appending staged steps", e)),
            }
        }
        Ok(())
    }

    /// After a conflict: catches up with the ledger (a failed flush already
    /// went back to it, dropping the staged ticks) and stages the staged
    /// steps again on top.
    async fn redo_staged(&self, l: &mut Ledger) -> Result<(), LoopError> {
        l.world
            .refresh()
            .await
            .map_err(|e| self.ledger_error("refreshing", e))?;
        for (doing, f) in l.staged.iter_mut() {
            let staged = f(&mut l.world).and_then(|_| l.world.stage());
            if let Err(e) = staged {
                l.world.discard_pending();
                return Err(self.ledger_error(doing, e));
            }
        }
        Ok(())
    }

    fn ledger_error(&self, doing: &str, source: autoresearch_core::Error) -> LoopError {
        LoopError::Ledger {
            doing: doing.to_string(),
            world: self.cfg.world.clone(),
            source,
        }
    }

    async fn read<T>(&self, f: impl FnOnce(&World) -> T) -> T {
        let l = self.world.lock().await;
        f(&l.world)
    }

    /// Catches up with ticks other processes appended (votes), after making
    /// the staged steps durable.
    async fn refresh(&self) -> Result<(), LoopError> {
        let mut l = self.world.lock().await;
        self.flush_locked(&mut l).await?;
        l.world
            .refresh()
            .await
            .map_err(|e| self.ledger_error("refreshing", e))?;
        Ok(())
    }

    async fn git<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Git) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, LoopError> {
        let g = self.git.clone();
        Ok(blocking(move || f(&g)).await??)
    }

    async fn ensure_experiment(&self) -> Result<(), LoopError> {
        let name = self.cfg.experiment.clone();
        if self.read(|w| w.experiment(&name).is_some()).await {
            return Ok(());
        }
        let exp = Experiment::new(
            &name,
            self.cfg.repo.display().to_string(),
            &self.cfg.branch,
            now_ms(),
            &json!({"controller": "autoresearch", "comparator": self.comparator.spec()}),
        );
        self.tick("recording the experiment", |w| {
            if w.experiment(&name).is_none() {
                w.spawn_with(&exp)?;
            }
            Ok(())
        })
        .await
    }

    async fn head(&self) -> Option<Head> {
        let name = self.cfg.experiment.clone();
        self.read(|w| w.branch_head(&name))
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

    /// Updates the run on `entity` with `edit`, and optionally sets its Outcome, in one tick.
    async fn update_run(
        &self,
        doing: &str,
        entity: EntityId,
        edit: impl Fn(&mut Run),
        outcome: Option<Outcome>,
    ) -> Result<Run, LoopError> {
        self.tick(doing, |w| {
            let mut run = w.get::<Run>(entity).unwrap_or_default();
            edit(&mut run);
            w.insert(entity, &run)?;
            if let Some(o) = &outcome {
                w.insert(entity, o)?;
            }
            Ok(run)
        })
        .await
    }

    fn outcome(
        &self,
        run_id: &str,
        status: &str,
        reason: &str,
        descriptor: &Value,
        base: &str,
    ) -> Outcome {
        Outcome {
            run_id: run_id.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            descriptor_json: descriptor.to_string(),
            base_commit: base.to_string(),
            comparator: match status {
                Outcome::CRASH | Outcome::BASELINE => String::new(),
                _ => self.comparator.spec(),
            },
            decided_at_ms: now_ms(),
        }
    }

    /// Finishes a run with a decision that does not move the head.
    async fn finish(
        &self,
        c: &Cand,
        status: &str,
        reason: &str,
        descriptor: &Value,
    ) -> Result<String, LoopError> {
        let run_status = if status == Outcome::CRASH {
            RunStatus::Crashed
        } else {
            RunStatus::Stopped
        };
        let outcome = self.outcome(&c.run_id, status, reason, descriptor, &c.base);
        let (commit, workspace) = (c.commit.clone(), c.workspace.clone());
        let (entity, finished_at) = (c.entity, now_ms());
        // Staged: nothing acts on a decision that leaves the head alone
        // before the next job start, which makes it durable.
        self.stage(
            &format!("recording {status} of run {}", c.run_id),
            move |w| {
                let mut r = w.get::<Run>(entity).unwrap_or_default();
                r.set_status(run_status);
                r.finished_at_ms = finished_at;
                if !commit.is_empty() {
                    r.commit_hash = commit.clone();
                }
                if !workspace.is_empty() {
                    r.workspace_path = workspace.clone();
                }
                w.insert(entity, &r)?;
                w.insert(entity, &outcome)
            },
        )
        .await?;
        self.finished_event(&c.run_id, &c.commit, status, reason)
            .await;
        Ok(status.to_string())
    }

    async fn finished_event(&self, run_id: &str, commit: &str, status: &str, reason: &str) {
        let exp = self.cfg.experiment.clone();
        let rid = run_id.to_string();
        let (metrics, head) = self
            .read(|w| {
                // One run, not a scan of every attempt.
                let a = w
                    .run_by_id(&rid)
                    .map(|(entity, run)| Attempt::of(w, entity, run));
                let m = a.as_ref().map(history::final_metrics).unwrap_or_default();
                let h = w
                    .branch_head(&exp)
                    .map(|(_, h)| h.commit_hash)
                    .unwrap_or_default();
                (m, h)
            })
            .await;
        self.emit(Event::Finished {
            run_id: run_id.to_string(),
            commit: commit.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            metrics: metrics
                .into_iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .collect(),
            head,
        });
    }

    // --- Jobs -----------------------------------------------------------

    fn limits(&self, timeout: Duration) -> Limits {
        Limits {
            timeout,
            output_limit: self.cfg.output_limit,
            kill_grace: self.cfg.kill_grace,
        }
    }

    /// Runs a job unless a kill is requested first (then the job's future is
    /// dropped, which kills it).
    async fn exec(&self, job: Job) -> Result<JobEnd, LoopError> {
        // A job acts outside this process: what led to it is durable first.
        self.flush().await?;
        let mut rx = self.shutdown.subscribe();
        if *rx.borrow() >= Shutdown::KILL {
            return Ok(JobEnd::Interrupted);
        }
        tokio::select! {
            r = self.executor.run(job) => Ok(JobEnd::Report(Box::new(r?))),
            _ = rx.wait_for(|l| *l >= Shutdown::KILL) => Ok(JobEnd::Interrupted),
        }
    }

    fn tail(&self, s: &str) -> String {
        let limit = 2048.min(self.cfg.output_limit);
        let start = s.len().saturating_sub(limit);
        let start = (start..=s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s[start..].to_string()
    }

    fn crash_of(&self, step: &str, what: &str, report: &JobReport) -> Crash {
        Crash {
            reason: format!("{step}: {what}"),
            detail: json!({
                "step": step,
                "cause": what,
                "exit": report.status,
                "stdout_tail": self.tail(&report.stdout_tail),
                "stderr_tail": self.tail(&report.stderr_tail),
                "stdout_log": report.stdout_log,
                "stderr_log": report.stderr_log,
            }),
        }
    }

    /// Evaluates `commit` once, as sample `sample`, in the checkout of
    /// `workspace`; records a Result under `owner`, and with it (same tick)
    /// the candidate `cand` when given. The metrics, or why the evaluation
    /// counts as a crash.
    async fn evaluate(
        &self,
        owner: &str,
        workspace: &str,
        commit: &str,
        sample: u32,
        step: &str,
        cand: Option<&Cand>,
    ) -> Result<Result<Map<String, Value>, Crash>, LoopError> {
        let mut env = BTreeMap::new();
        env.insert("AUTORESEARCH_SAMPLE".to_string(), sample.to_string());
        env.insert(
            "AUTORESEARCH_EXPERIMENT".to_string(),
            self.cfg.experiment.clone(),
        );
        env.insert("AUTORESEARCH_COMMIT".to_string(), commit.to_string());
        let job = Job {
            run_id: workspace.to_string(),
            step: format!("{step}-{sample}"),
            repo: self.cfg.repo.display().to_string(),
            commit: commit.to_string(),
            command: self.cfg.evaluate_command.clone(),
            env,
            limits: self.limits(self.cfg.evaluate_timeout),
            output: self.cfg.metrics.source(),
            commit_changes: false,
        };
        let report = match self.exec(job).await? {
            JobEnd::Report(r) => r,
            JobEnd::Interrupted => {
                return Ok(Err(Crash {
                    reason: "interrupted".into(),
                    detail: json!({"step": step, "cause": "interrupted"}),
                }));
            }
        };
        let parsed = if !report.status.success() {
            Err(self.crash_of("evaluate", &format!("evaluator {}", report.status), &report))
        } else {
            match metrics::parse(&self.cfg.metrics, &report.output)
                .and_then(|m| metrics::check(&m, &self.cfg.require).map(|_| m))
            {
                Ok(m) => Ok(m),
                Err(e) => Err(self.crash_of("evaluate", &e.to_string(), &report)),
            }
        };
        let mut outputs = match &parsed {
            Ok(m) => m.clone(),
            Err(_) => Map::new(),
        };
        outputs.insert(
            "_meta".into(),
            json!({
                "commit": commit,
                "sample": sample,
                "exit_code": report.status.code(),
                "status": report.status,
                "duration_ms": report.duration.as_millis() as u64,
                "stdout_log": report.stdout_log,
                "stderr_log": report.stderr_log,
            }),
        );
        let result = EvalResult::new(owner, "evaluate", &Value::Object(outputs), now_ms());
        // Staged: the decision that reads it follows at once, and the next
        // job start or branch update makes both durable in one write.
        let cand = cand.map(|c| (c.entity, c.commit.clone(), c.workspace.clone()));
        self.stage(&format!("recording a result of run {owner}"), move |w| {
            if let Some((entity, commit, workspace)) = &cand {
                let mut run = w.get::<Run>(*entity).unwrap_or_default();
                run.commit_hash = commit.clone();
                if !workspace.is_empty() {
                    run.workspace_path = workspace.clone();
                }
                w.insert(*entity, &run)?;
            }
            w.spawn_with(&result).map(drop)
        })
        .await?;
        Ok(parsed)
    }

    /// How many samples of `commit` are recorded under `owner`.
    async fn sample_count(&self, owner: &str, commit: &str) -> u32 {
        let (o, c) = (owner.to_string(), commit.to_string());
        self.read(move |w| {
            w.results_for(&o)
                .iter()
                .filter(|(_, r)| result_commit(r).is_none_or(|rc| rc == c))
                .count() as u32
        })
        .await
    }

    async fn evidence(
        &self,
        run_id: &str,
        commit: &str,
        base: Option<&str>,
    ) -> Result<Evidence, LoopError> {
        let (o, c) = (run_id.to_string(), commit.to_string());
        let (results, votes) = self
            .read(move |w| {
                let results: Vec<EvalResult> = w
                    .results_for(&o)
                    .into_iter()
                    .map(|(_, r)| r)
                    .filter(|r| result_commit(r).is_none_or(|rc| rc == c))
                    .collect();
                let votes: Vec<Vote> = w
                    .find_all::<Vote>(|v| v.run_id == o)
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                (results, votes)
            })
            .await;
        let diff = match base {
            Some(b) if b != commit && self.cfg.evidence_diff => {
                let (b, c) = (b.to_string(), commit.to_string());
                let limit = self.cfg.output_limit;
                Some(self.git(move |g| g.diff(&b, &c)).await?).map(|d| {
                    if d.len() > limit {
                        let mut end = limit;
                        while !d.is_char_boundary(end) {
                            end -= 1;
                        }
                        d[..end].to_string()
                    } else {
                        d
                    }
                })
            }
            _ => None,
        };
        Ok(Evidence {
            run_id: run_id.to_string(),
            commit: commit.to_string(),
            results,
            diff,
            votes,
        })
    }

    // --- Head and baselines ---------------------------------------------

    /// Makes the BranchHead agree with the branch: on first run, and when
    /// someone else moved the branch, its tip is evaluated as a baseline and
    /// adopted. A forked world whose branch does not exist yet creates it at
    /// the world's head.
    async fn sync_head(&self) -> Result<Head, LoopError> {
        let branch = self.cfg.branch.clone();
        let tip = self.git(move |g| g.branch_tip(&branch)).await?;
        let head = self.head().await;
        match (head, tip) {
            (Some(h), Some(t)) if h.commit == t => Ok(h),
            (Some(h), None) => {
                let (branch, commit) = (self.cfg.branch.clone(), h.commit.clone());
                self.git(move |g| {
                    g.compare_and_swap(
                        &format!("refs/heads/{branch}"),
                        &commit,
                        None,
                        "autoresearch: branch of a forked world",
                    )
                })
                .await?;
                Ok(h)
            }
            (None, None) => Err(LoopError::Setup(format!(
                "branch {:?} does not exist in {}",
                self.cfg.branch,
                self.cfg.repo.display()
            ))),
            (old, Some(t)) => {
                let why = if old.is_some() {
                    "the branch was moved outside the loop; adopted as a new baseline"
                } else {
                    "the branch tip when the experiment started"
                };
                self.baseline(&t, why).await
            }
        }
    }

    async fn baseline(&self, commit: &str, why: &str) -> Result<Head, LoopError> {
        let run_id = Self::new_run_id();
        let mut run = self.new_run(&run_id, "baseline");
        run.commit_hash = commit.to_string();
        let entity = self
            .tick("recording a baseline run", |w| w.spawn_with(&run))
            .await?;
        self.emit(Event::Started {
            run_id: run_id.clone(),
            base: commit.to_string(),
        });
        self.update_run(
            "starting a baseline run",
            entity,
            |r| r.set_status(RunStatus::Running),
            None,
        )
        .await?;
        self.emit(Event::Step {
            run_id: run_id.clone(),
            step: "evaluating".into(),
        });
        let eval = self
            .evaluate(&run_id, &run_id, commit, 0, "evaluate", None)
            .await?;
        let _ = self.executor.release(&run_id).await;
        let (status, reason, descriptor, run_status) = match &eval {
            Ok(_) => (
                Outcome::BASELINE,
                why.to_string(),
                json!({"baseline": why}),
                RunStatus::Stopped,
            ),
            Err(c) => (
                Outcome::CRASH,
                format!("baseline {}", c.reason),
                c.detail.clone(),
                RunStatus::Crashed,
            ),
        };
        let outcome = self.outcome(&run_id, status, &reason, &descriptor, "");
        let head = BranchHead::new(
            &self.cfg.experiment,
            commit,
            &run_id,
            &json!({"baseline": why}),
            now_ms(),
        );
        let exp = self.cfg.experiment.clone();
        self.tick("adopting a baseline", |w| {
            let mut r = w.get::<Run>(entity).unwrap_or_default();
            r.set_status(run_status);
            r.finished_at_ms = now_ms();
            w.insert(entity, &r)?;
            w.insert(entity, &outcome)?;
            match w.branch_head(&exp) {
                Some((e, _)) => w.insert(e, &head)?,
                None => drop(w.spawn_with(&head)?),
            }
            Ok(())
        })
        .await?;
        self.finished_event(&run_id, commit, status, &reason).await;
        Ok(Head {
            commit: commit.to_string(),
            run_id,
        })
    }

    // --- One attempt ----------------------------------------------------

    /// Writes the proposer's history file: every attempt of the experiment,
    /// and `new` (a run about to be recorded) as the last one if the world
    /// does not hold it yet. Lines of decided attempts are kept from one
    /// call to the next, so a long experiment costs a walk over its Runs
    /// (no copies) plus the few attempts still open, not a rebuild of every
    /// attempt. Only the ledger read holds the world; rendering and writing
    /// happen on a blocking thread, alongside a tick.
    async fn write_history(&self, new: Option<&Run>) -> Result<PathBuf, LoopError> {
        /// Beyond this many attempts not cached, one grouped pass over all
        /// Results beats looking each one up.
        const LOOKUPS: usize = 16;
        let exp = self.cfg.experiment.clone();
        let new_id = new.map(|r| r.run_id.clone());
        let (mut open, new_seen) = self
            .read(|w| {
                let mut todo = Vec::new();
                {
                    let cached = self.history_rows.lock();
                    let cached = cached.as_deref();
                    let mut q = w.hecs().query::<(&EntityId, &Run)>();
                    for (id, run) in q.iter() {
                        let known = cached.is_ok_and(|c| c.contains_key(id));
                        if run.experiment_name == exp && !known {
                            todo.push((*id, run.clone()));
                        }
                    }
                }
                let new_seen = new_id
                    .as_ref()
                    .is_some_and(|n| todo.iter().any(|(_, r)| &r.run_id == n));
                let found: Vec<Attempt> = if todo.len() > LOOKUPS {
                    let wanted: std::collections::HashSet<EntityId> =
                        todo.iter().map(|(id, _)| *id).collect();
                    attempts(w, &exp)
                        .into_iter()
                        .filter(|a| wanted.contains(&a.entity))
                        .collect()
                } else {
                    todo.into_iter()
                        .map(|(entity, run)| Attempt::of(w, entity, run))
                        .collect()
                };
                let mut open = Vec::new();
                let mut done = Vec::new();
                for a in &found {
                    let row = (a.entity, history::Row::of(a));
                    if history::Row::is_final(a) {
                        done.push(row);
                    } else {
                        open.push(row);
                    }
                }
                if let Ok(mut c) = self.history_rows.lock() {
                    c.extend(done);
                }
                (open, new_seen)
            })
            .await;
        if let Some(run) = new.filter(|_| !new_seen) {
            let a = Attempt {
                entity: EntityId(u64::MAX),
                run: run.clone(),
                results: Vec::new(),
                outcome: None,
            };
            open.push((a.entity, history::Row::of(&a)));
        }
        let path = self.cfg.history_path();
        let (p, cache) = (path.clone(), self.history_rows.clone());
        blocking(move || {
            let cached = cache
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            let mut rows: Vec<(EntityId, &history::Row)> =
                cached.iter().map(|(id, r)| (*id, r)).collect();
            rows.extend(open.iter().map(|(id, r)| (*id, r)));
            rows.sort_by_key(|(id, _)| *id);
            let text = history::render_rows(rows.iter().map(|(_, r)| *r));
            drop(cached);
            history::write(&p, &text)
        })
        .await?
        .map_err(|e| LoopError::Setup(format!("writing {}: {e}", path.display())))?;
        Ok(path)
    }

    /// Launches one candidate against `head`: propose, check, evaluate once.
    async fn attempt(&self, head: &Head, run_id: String) -> Result<Prepared, LoopError> {
        let run = self.new_run(&run_id, &self.cfg.propose_command);
        // The history file (this run last, as running) is written while the
        // run's first tick commits; both precede the proposer.
        // Two ticks, `booting` then `running`, made durable in one write
        // (with whatever the previous run staged) before the job starts: a
        // controller killed from then on leaves an active run that `recover`
        // marks interrupted (and whose process group it kills).
        let recording = format!("recording run {run_id}");
        let (history, entity) = tokio::join!(
            self.write_history(Some(&run)),
            self.tick(&recording, |w| {
                let entity = w.spawn_with(&run)?;
                w.stage()?;
                let mut running = run.clone();
                running.set_status(RunStatus::Running);
                w.insert(entity, &running)?;
                Ok(entity)
            }),
        );
        let entity = entity?;
        let history = history?;
        let mut cand = Cand {
            run_id: run_id.clone(),
            entity,
            base: head.commit.clone(),
            commit: String::new(),
            workspace: String::new(),
        };
        self.emit(Event::Started {
            run_id: run_id.clone(),
            base: head.commit.clone(),
        });
        self.emit(Event::Step {
            run_id: run_id.clone(),
            step: "proposing".into(),
        });
        let mut env = BTreeMap::new();
        env.insert("AUTORESEARCH_BASE_COMMIT".to_string(), head.commit.clone());
        env.insert(
            "AUTORESEARCH_RESULTS".to_string(),
            history.display().to_string(),
        );
        env.insert(
            "AUTORESEARCH_EXPERIMENT".to_string(),
            self.cfg.experiment.clone(),
        );
        env.insert("AUTORESEARCH_BRANCH".to_string(), self.cfg.branch.clone());
        let job = Job {
            run_id: run_id.clone(),
            step: "propose".into(),
            repo: self.cfg.repo.display().to_string(),
            commit: head.commit.clone(),
            command: self.cfg.propose_command.clone(),
            env,
            limits: self.limits(self.cfg.propose_timeout),
            output: Default::default(),
            commit_changes: true,
        };
        let report = match self.exec(job).await? {
            JobEnd::Report(r) => r,
            JobEnd::Interrupted => {
                return self
                    .finish(
                        &cand,
                        Outcome::CRASH,
                        "interrupted",
                        &json!({"step": "propose", "cause": "interrupted"}),
                    )
                    .await
                    .map(Prepared::Done);
            }
        };
        if !report.status.success() {
            let c = self.crash_of("propose", &format!("proposer {}", report.status), &report);
            return self
                .finish(&cand, Outcome::CRASH, &c.reason, &c.detail)
                .await
                .map(Prepared::Done);
        }
        let workspace = report.workspace.clone();
        if report.commit.is_empty() || report.commit == head.commit {
            return self
                .finish(
                    &cand,
                    Outcome::DISCARD,
                    "no change",
                    &json!({"cause": "no change"}),
                )
                .await
                .map(Prepared::Done);
        }
        cand.commit = report.commit.clone();
        cand.workspace = workspace;
        // The ref keeps the candidate reachable before anything else refers
        // to it; the ledger records it with its first result or its
        // decision (a run interrupted before that gets it back from the ref
        // in `recover`). The changed paths come from the executor when it
        // knows them (the local one does when the proposer left its change
        // uncommitted), else from git.
        let (refname, commit) = (self.candidate_ref(&run_id), cand.commit.clone());
        let (base, commit2) = (head.commit.clone(), cand.commit.clone());
        let known = report.changed_paths.clone();
        let changed = self
            .git(move |g| {
                g.create_ref(&refname, &commit)?;
                match known {
                    Some(paths) => Ok(paths),
                    None => g.changed_paths(&base, &commit2),
                }
            })
            .await?;
        self.crash_point("after-candidate");
        if changed.is_empty() {
            return self
                .finish(
                    &cand,
                    Outcome::DISCARD,
                    "no change",
                    &json!({"cause": "no change"}),
                )
                .await
                .map(Prepared::Done);
        }
        if let Some(p) = changed.iter().find(|p| self.is_protected(p)) {
            let reason = format!("touches protected path {p}");
            return self
                .finish(
                    &cand,
                    Outcome::DISCARD,
                    &reason,
                    &json!({"cause": "protected path", "path": p}),
                )
                .await
                .map(Prepared::Done);
        }
        self.emit(Event::Step {
            run_id: run_id.clone(),
            step: "evaluating".into(),
        });
        let evaluated = self
            .evaluate(&run_id, &run_id, &cand.commit, 0, "evaluate", Some(&cand))
            .await?;
        cand.workspace.clear();
        match evaluated {
            Ok(_) => Ok(Prepared::Evaluated(cand)),
            Err(c) => self
                .finish(&cand, Outcome::CRASH, &c.reason, &c.detail)
                .await
                .map(Prepared::Done),
        }
    }

    fn is_protected(&self, path: &str) -> bool {
        self.cfg.protect.iter().any(|p| {
            let p = p.trim_matches('/');
            path == p || path.starts_with(&format!("{p}/"))
        })
    }

    // --- Deciding -------------------------------------------------------

    /// Asks the comparator about `cands` against `head`, adding samples
    /// while it asks for more (within the sample budget).
    async fn decide(
        &self,
        head: &Head,
        cands: &[Cand],
    ) -> Result<Vec<Result<Decision, String>>, LoopError> {
        let mut rounds = 0;
        loop {
            rounds += 1;
            let inc = self.evidence(&head.run_id, &head.commit, None).await?;
            let mut evs = Vec::with_capacity(cands.len());
            for c in cands {
                evs.push(self.evidence(&c.run_id, &c.commit, Some(&c.base)).await?);
            }
            let decisions: Vec<Result<Decision, String>> = if cands.len() == 1 {
                vec![
                    self.comparator
                        .compare(&inc, &evs[0])
                        .await
                        .map_err(|e| e.to_string()),
                ]
            } else {
                match self.comparator.compare_round(&inc, &evs).await {
                    Ok(d) if d.len() == cands.len() => d.into_iter().map(Ok).collect(),
                    Ok(d) => {
                        let why = format!(
                            "comparator returned {} decisions for {} candidates",
                            d.len(),
                            cands.len()
                        );
                        vec![Err(why); cands.len()]
                    }
                    Err(e) => vec![Err(e.to_string()); cands.len()],
                }
            };
            let want_inc = decisions
                .iter()
                .filter_map(|d| match d {
                    Ok(Decision {
                        verdict: Verdict::NeedMore { incumbent, .. },
                        ..
                    }) => Some(*incumbent),
                    _ => None,
                })
                .max();
            let Some(want_inc) = want_inc else {
                return Ok(decisions);
            };
            let have_inc = inc.results.len() as u32;
            let over_budget = rounds > 50
                || have_inc + want_inc > self.cfg.max_samples
                || decisions.iter().zip(&evs).any(|(d, e)| match d {
                    Ok(Decision {
                        verdict: Verdict::NeedMore { candidate, .. },
                        ..
                    }) => e.results.len() as u32 + candidate > self.cfg.max_samples,
                    _ => false,
                });
            if over_budget || self.shutdown.level() >= Shutdown::KILL {
                return Ok(decisions
                    .into_iter()
                    .map(|d| match d {
                        Ok(Decision {
                            verdict: Verdict::NeedMore { .. },
                            descriptor,
                            ..
                        }) => Ok(Decision::new(
                            Verdict::Discard,
                            format!(
                                "sample budget exhausted ({} samples a side)",
                                self.cfg.max_samples
                            ),
                            descriptor,
                        )),
                        other => other,
                    })
                    .collect());
            }
            if want_inc > 0 {
                let _g = self.incumbent_lock.lock().await;
                let workspace = cands
                    .first()
                    .map_or(head.run_id.clone(), |c| c.run_id.clone());
                for _ in 0..want_inc {
                    let n = self.sample_count(&head.run_id, &head.commit).await;
                    // A failing incumbent sample is recorded; the comparator sees fewer samples.
                    let _ = self
                        .evaluate(&head.run_id, &workspace, &head.commit, n, "incumbent", None)
                        .await?;
                }
            }
            for (c, d) in cands.iter().zip(&decisions) {
                if let Ok(Decision {
                    verdict: Verdict::NeedMore { candidate, .. },
                    ..
                }) = d
                {
                    self.emit(Event::Step {
                        run_id: c.run_id.clone(),
                        step: "sampling".into(),
                    });
                    for _ in 0..*candidate {
                        let n = self.sample_count(&c.run_id, &c.commit).await;
                        let _ = self
                            .evaluate(&c.run_id, &c.run_id, &c.commit, n, "evaluate", None)
                            .await?;
                    }
                }
            }
        }
    }

    /// Applies one decision for `c` measured against `head`. Returns the
    /// final status word.
    async fn apply(
        &self,
        head: &Head,
        c: Cand,
        d: Result<Decision, String>,
    ) -> Result<String, LoopError> {
        let d = match d {
            Ok(d) => d,
            Err(why) => {
                let reason = format!("comparator failed: {why}");
                return self
                    .finish(&c, Outcome::DISCARD, &reason, &json!({"error": why}))
                    .await;
            }
        };
        match d.verdict {
            Verdict::Keep => self.promote_or_rebase(head, c, d).await,
            Verdict::Discard | Verdict::NeedMore { .. } => {
                self.finish(&c, Outcome::DISCARD, &d.reason, &d.descriptor)
                    .await
            }
            Verdict::Pending => {
                self.finish(&c, Outcome::PENDING, &d.reason, &d.descriptor)
                    .await
            }
        }
    }

    /// Promotes `c` if `head` is still the head; otherwise rebases it onto the
    /// current head and decides again (a few times at most).
    async fn promote_or_rebase(
        &self,
        head: &Head,
        mut c: Cand,
        mut d: Decision,
    ) -> Result<String, LoopError> {
        let mut head = head.clone();
        for _ in 0..3 {
            if self.promote(&head, &c, &d).await? {
                return Ok(Outcome::KEEP.to_string());
            }
            // Stale: measured against a head that has moved.
            let new_head = self.sync_head().await?;
            self.emit(Event::Step {
                run_id: c.run_id.clone(),
                step: "rebasing".into(),
            });
            let (old_base, commit, onto) =
                (c.base.clone(), c.commit.clone(), new_head.commit.clone());
            let (keep_ref, pre_ref) = (
                self.candidate_ref(&c.run_id),
                self.candidate_ref(&format!(
                    "{}.before-rebase-{}",
                    c.run_id,
                    &onto[..7.min(onto.len())]
                )),
            );
            let rebased = self
                .git(move |g| {
                    g.set_ref(&pre_ref, &commit)?;
                    let r = g.rebase_commit(&old_base, &commit, &onto)?;
                    if let Some(r) = &r {
                        g.set_ref(&keep_ref, r)?;
                    }
                    Ok(r)
                })
                .await?;
            let Some(rebased) = rebased else {
                c.base = new_head.commit.clone();
                let reason = format!(
                    "stale: conflicts with the new head {}",
                    short(&new_head.commit)
                );
                return self
                    .finish(
                        &c,
                        Outcome::DISCARD,
                        &reason,
                        &json!({"cause": "stale", "head": new_head.commit}),
                    )
                    .await;
            };
            c.base = new_head.commit.clone();
            c.commit = rebased;
            let commit = c.commit.clone();
            self.update_run(
                &format!("recording the rebased candidate of run {}", c.run_id),
                c.entity,
                |r| {
                    r.commit_hash = commit.clone();
                    r.set_status(RunStatus::Running);
                },
                None,
            )
            .await?;
            self.emit(Event::Step {
                run_id: c.run_id.clone(),
                step: "evaluating".into(),
            });
            if let Err(crash) = self
                .evaluate(&c.run_id, &c.run_id, &c.commit, 0, "evaluate", None)
                .await?
            {
                return self
                    .finish(
                        &c,
                        Outcome::CRASH,
                        &format!("after rebase: {}", crash.reason),
                        &crash.detail,
                    )
                    .await;
            }
            head = new_head;
            let mut ds = self.decide(&head, std::slice::from_ref(&c)).await?;
            match ds.pop() {
                Some(Ok(nd)) if nd.verdict == Verdict::Keep => d = nd,
                Some(other) => return Box::pin(self.apply(&head, c, other)).await,
                None => return Err(LoopError::Task("no decision".into())),
            }
        }
        self.finish(
            &c,
            Outcome::DISCARD,
            "stale: the head kept moving",
            &json!({"cause": "stale"}),
        )
        .await
    }

    /// The promotion protocol (see the module doc). False when the head is
    /// no longer `head` (nothing is changed then, except the intent which
    /// the caller overwrites).
    async fn promote(&self, head: &Head, c: &Cand, d: &Decision) -> Result<bool, LoopError> {
        let current = self.head().await;
        let branch = self.cfg.branch.clone();
        let tip = self.git(move |g| g.branch_tip(&branch)).await?;
        if current.as_ref().map(|h| &h.commit) != Some(&head.commit)
            || tip.as_deref() != Some(&head.commit)
        {
            return Ok(false);
        }
        let outcome = self.outcome(
            &c.run_id,
            Outcome::KEEP,
            &d.reason,
            &d.descriptor,
            &head.commit,
        );
        let commit = c.commit.clone();
        self.update_run(
            &format!("recording the decision to keep run {}", c.run_id),
            c.entity,
            |r| {
                r.set_status(RunStatus::Stopping);
                r.commit_hash = commit.clone();
            },
            Some(outcome),
        )
        .await?;
        self.crash_point("after-intent");
        if !self.move_branch(&head.commit, &c.commit).await? {
            return Ok(false);
        }
        self.crash_point("after-ref");
        self.complete_promotion(c.entity, &c.run_id, &c.commit, &d.descriptor)
            .await?;
        self.finished_event(&c.run_id, &c.commit, Outcome::KEEP, &d.reason)
            .await;
        Ok(true)
    }

    /// Compare-and-swap of the branch from `old` to `new`; a clean checkout of
    /// the branch follows, a dirty one is left alone with a warning.
    async fn move_branch(&self, old: &str, new: &str) -> Result<bool, LoopError> {
        let (branch, old_s, new_s) = (self.cfg.branch.clone(), old.to_string(), new.to_string());
        let (moved, warning) = self
            .git(move |g| {
                let checked_out = !g.is_bare()? && g.checked_out_branch()?.as_deref() == Some(branch.as_str());
                let clean = checked_out && !g.is_dirty()?;
                let refname = format!("refs/heads/{branch}");
                if !g.compare_and_swap(&refname, &new_s, Some(&old_s), "autoresearch: keep")? {
                    return Ok((false, None));
                }
                let warning = if !checked_out {
                    None
                } else if !clean {
                    Some(format!(
                        "branch {branch} advanced to {} but its checkout in {} has local changes: left alone (run `git reset --keep {branch}` when ready)",
                        short(&new_s),
                        g.dir.display()
                    ))
                } else {
                    g.advance_checkout(&old_s, &new_s).err().map(|e| {
                        format!("branch {branch} advanced but its checkout could not follow: {e}")
                    })
                };
                Ok((true, warning))
            })
            .await?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
            self.emit(Event::Warning(w));
        }
        Ok(moved)
    }

    async fn complete_promotion(
        &self,
        entity: EntityId,
        run_id: &str,
        commit: &str,
        descriptor: &Value,
    ) -> Result<(), LoopError> {
        let head = BranchHead::new(&self.cfg.experiment, commit, run_id, descriptor, now_ms());
        let exp = self.cfg.experiment.clone();
        let (commit, finished_at) = (commit.to_string(), now_ms());
        // Staged: the branch already points at the candidate, and a
        // controller killed before the next durable write leaves the intent,
        // which `recover` completes the same way.
        self.stage(&format!("advancing the head to run {run_id}"), move |w| {
            let mut r = w.get::<Run>(entity).unwrap_or_default();
            r.set_status(RunStatus::Stopped);
            r.finished_at_ms = finished_at;
            r.commit_hash = commit.clone();
            w.insert(entity, &r)?;
            match w.branch_head(&exp) {
                Some((e, _)) => w.insert(e, &head)?,
                None => drop(w.spawn_with(&head)?),
            }
            Ok(())
        })
        .await
    }

    // --- Recovery and pending decisions ---------------------------------

    /// Finishes what a killed controller left: runs in flight become
    /// crashed ("interrupted") and their checkouts are released; a
    /// promotion in progress is completed (see the module doc). Returns the
    /// run ids it touched.
    pub async fn recover(&self) -> Result<Vec<String>, LoopError> {
        self.refresh().await?;
        let exp = self.cfg.experiment.clone();
        let active: Vec<_> = self
            .read(|w| {
                attempts(w, &exp)
                    .into_iter()
                    .filter(|a| a.run.status().map(|s| s.is_active()).unwrap_or(false))
                    .collect()
            })
            .await;
        let mut touched = Vec::new();
        for a in active {
            let run_id = a.run.run_id.clone();
            let mut cand = Cand {
                run_id: run_id.clone(),
                entity: a.entity,
                base: a
                    .outcome
                    .as_ref()
                    .map(|o| o.base_commit.clone())
                    .unwrap_or_default(),
                commit: a.run.commit_hash.clone(),
                workspace: String::new(),
            };
            if cand.commit.is_empty() {
                // A candidate made but not yet in the ledger is under its ref.
                let refname = self.candidate_ref(&run_id);
                cand.commit = self
                    .git(move |g| g.resolve(&refname))
                    .await?
                    .unwrap_or_default();
            }
            let keep = a.outcome.as_ref().filter(|o| o.status == Outcome::KEEP);
            if let Some(o) = keep {
                let head = self.head().await;
                let branch = self.cfg.branch.clone();
                let tip = self.git(move |g| g.branch_tip(&branch)).await?;
                let descriptor: Value =
                    serde_json::from_str(&o.descriptor_json).unwrap_or(json!({}));
                let head_is_base = head.as_ref().is_some_and(|h| h.commit == o.base_commit);
                let already_moved = head_is_base && tip.as_deref() == Some(cand.commit.as_str());
                let promoted = already_moved
                    || (head_is_base
                        && tip.as_deref() == Some(o.base_commit.as_str())
                        && self.move_branch(&o.base_commit, &cand.commit).await?);
                if promoted {
                    self.complete_promotion(a.entity, &run_id, &cand.commit, &descriptor)
                        .await?;
                    self.finished_event(&run_id, &cand.commit, Outcome::KEEP, &o.reason)
                        .await;
                } else if head.as_ref().is_some_and(|h| h.commit == cand.commit) {
                    self.complete_promotion(a.entity, &run_id, &cand.commit, &descriptor)
                        .await?;
                } else {
                    self.finish(
                        &cand,
                        Outcome::DISCARD,
                        "interrupted before promotion; the branch moved meanwhile",
                        &json!({"cause": "interrupted"}),
                    )
                    .await?;
                }
            } else {
                self.finish(
                    &cand,
                    Outcome::CRASH,
                    "interrupted",
                    &json!({"cause": "interrupted"}),
                )
                .await?;
            }
            let _ = self.executor.release(&run_id).await;
            touched.push(run_id);
        }
        let _ = self.git(|g| g.run(&["worktree", "prune"]).map(drop)).await;
        // What recovery decided is durable before anything else happens.
        self.flush().await?;
        Ok(touched)
    }

    /// Asks the comparator again about runs waiting for votes. Returns how
    /// many were decided.
    async fn revisit_pending(&self) -> Result<(u64, u64), LoopError> {
        self.refresh().await?;
        let exp = self.cfg.experiment.clone();
        // Pending outcomes are few: look them up rather than build every attempt.
        let pending: Vec<Attempt> = self
            .read(|w| {
                w.find_all::<Outcome>(|o| o.status == Outcome::PENDING)
                    .into_iter()
                    .filter_map(|(entity, outcome)| {
                        let run = w.get::<Run>(entity)?;
                        let decided = run.status().map(|s| s.is_terminal()).unwrap_or(false);
                        (run.experiment_name == exp && decided).then(|| Attempt {
                            entity,
                            results: Vec::new(),
                            outcome: Some(outcome),
                            run,
                        })
                    })
                    .collect()
            })
            .await;
        let (mut kept, mut discarded) = (0, 0);
        for a in pending {
            let Some(head) = self.head().await else { break };
            let o = a.outcome.clone().unwrap_or_default();
            let c = Cand {
                run_id: a.run.run_id.clone(),
                entity: a.entity,
                base: o.base_commit.clone(),
                commit: a.run.commit_hash.clone(),
                workspace: String::new(),
            };
            let inc_head = if c.base == head.commit {
                head.clone()
            } else {
                // Compare against the head it was measured with; a keep is then rebased.
                Head {
                    commit: c.base.clone(),
                    run_id: self
                        .run_at_commit(&c.base)
                        .await
                        .unwrap_or(head.run_id.clone()),
                }
            };
            let mut ds = self.decide(&inc_head, std::slice::from_ref(&c)).await?;
            let d = ds.pop().unwrap_or_else(|| Err("no decision".into()));
            match &d {
                Ok(Decision {
                    verdict: Verdict::Pending,
                    ..
                }) => continue,
                Ok(Decision {
                    verdict: Verdict::Keep,
                    ..
                }) => {
                    if self.apply(&inc_head, c.clone(), d).await? == Outcome::KEEP {
                        kept += 1;
                    } else {
                        discarded += 1;
                    }
                }
                _ => {
                    self.apply(&inc_head, c.clone(), d).await?;
                    discarded += 1;
                }
            }
            let _ = self.executor.release(&c.run_id).await;
        }
        Ok((kept, discarded))
    }

    async fn run_at_commit(&self, commit: &str) -> Option<String> {
        let (exp, c) = (self.cfg.experiment.clone(), commit.to_string());
        self.read(move |w| {
            attempts(w, &exp)
                .into_iter()
                .rev()
                .find(|a| {
                    a.run.commit_hash == c
                        && a.outcome.as_ref().is_some_and(|o| {
                            o.status == Outcome::KEEP || o.status == Outcome::BASELINE
                        })
                })
                .map(|a| a.run.run_id)
        })
        .await
    }

    // --- The loop -------------------------------------------------------

    /// Runs the loop until the iteration limit, the time budget, too many
    /// consecutive crashes, or a shutdown request.
    pub async fn run(self: Arc<Self>) -> Result<Summary, LoopError> {
        let out = self.clone().run_loop().await;
        // Staged steps become durable however the loop ended.
        let flushed = self.flush().await;
        let out = out.and_then(|s| flushed.map(|_| s));
        // Pooled checkouts go whether the loop ended well or not.
        let closed = self.executor.close().await;
        let s = out?;
        closed?;
        Ok(s)
    }

    async fn run_loop(self: Arc<Self>) -> Result<Summary, LoopError> {
        let mut s = Summary::default();
        self.recover().await?;
        let mut crashes_in_a_row = 0u32;
        loop {
            if self.shutdown.level() >= Shutdown::DRAIN {
                s.stopped = "interrupted".into();
                break;
            }
            if self.cfg.iterations > 0 && s.launched >= self.cfg.iterations {
                s.stopped = format!("{} iterations done", s.launched);
                break;
            }
            if self
                .cfg
                .time_budget
                .is_some_and(|b| self.started.elapsed() >= b)
            {
                s.stopped = "time budget spent".into();
                break;
            }
            let (k, d) = self.revisit_pending().await?;
            s.kept += k;
            s.discarded += d;
            let before = self.head().await.map(|h| h.run_id);
            let head = self.sync_head().await?;
            if before.as_deref() != Some(head.run_id.as_str()) {
                s.baselines += 1;
            }
            let remaining = if self.cfg.iterations > 0 {
                (self.cfg.iterations - s.launched) as usize
            } else {
                usize::MAX
            };
            let k = self.cfg.parallel.min(remaining).max(1);
            s.launched += k as u64;
            let statuses = self.clone().round(&head, k).await?;
            for st in statuses {
                match st.as_str() {
                    Outcome::KEEP => s.kept += 1,
                    Outcome::DISCARD => s.discarded += 1,
                    Outcome::PENDING => s.pending += 1,
                    _ => s.crashed += 1,
                }
                if st == Outcome::CRASH {
                    crashes_in_a_row += 1;
                } else {
                    crashes_in_a_row = 0;
                }
            }
            if crashes_in_a_row >= self.cfg.max_consecutive_crashes {
                s.stopped = format!("{crashes_in_a_row} consecutive crashes");
                break;
            }
        }
        s.head = self.head().await.map(|h| h.commit).unwrap_or_default();
        Ok(s)
    }

    /// One round: `k` candidates against `head`, decided together.
    async fn round(self: Arc<Self>, head: &Head, k: usize) -> Result<Vec<String>, LoopError> {
        let mut set = tokio::task::JoinSet::new();
        let run_ids: Vec<String> = (0..k).map(|_| Self::new_run_id()).collect();
        for (i, run_id) in run_ids.iter().enumerate() {
            let this = self.clone();
            let head = head.clone();
            let run_id = run_id.clone();
            set.spawn(async move { (i, this.attempt(&head, run_id).await) });
        }
        let mut prepared: Vec<(usize, Prepared)> = Vec::with_capacity(k);
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok((i, Ok(p))) => prepared.push((i, p)),
                Ok((_, Err(e))) => first_err = first_err.or(Some(e)),
                Err(e) => first_err = first_err.or(Some(LoopError::Task(e.to_string()))),
            }
        }
        if let Some(e) = first_err {
            for run_id in &run_ids {
                let _ = self.executor.release(run_id).await;
            }
            return Err(e);
        }
        prepared.sort_by_key(|(i, _)| *i);
        let mut statuses = Vec::new();
        let mut cands = Vec::new();
        for (_, p) in prepared {
            match p {
                Prepared::Done(st) => statuses.push(st),
                Prepared::Evaluated(c) => cands.push(c),
            }
        }
        if !cands.is_empty() {
            let decisions = if self.shutdown.level() >= Shutdown::KILL {
                vec![Err("interrupted".to_string()); cands.len()]
            } else {
                self.decide(head, &cands).await?
            };
            for (c, d) in cands.iter().cloned().zip(decisions) {
                let keep = matches!(
                    &d,
                    Ok(Decision {
                        verdict: Verdict::Keep,
                        ..
                    })
                );
                if !keep {
                    // Only a keep may evaluate again (after a rebase): the
                    // others give their checkout back now, so that its reset
                    // overlaps the decision's tick.
                    let _ = self.executor.release(&c.run_id).await;
                }
                let st = match d {
                    Err(why) if why == "interrupted" => {
                        self.finish(
                            &c,
                            Outcome::CRASH,
                            "interrupted",
                            &json!({"cause": "interrupted"}),
                        )
                        .await?
                    }
                    d => self.apply(head, c, d).await?,
                };
                statuses.push(st);
            }
        }
        for run_id in &run_ids {
            let _ = self.executor.release(run_id).await;
        }
        Ok(statuses)
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

/// The commit a Result was measured on (`_meta.commit`), when recorded.
fn result_commit(r: &EvalResult) -> Option<String> {
    r.outputs()
        .ok()?
        .get("_meta")?
        .get("commit")?
        .as_str()
        .map(str::to_string)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LoopError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LoopError::Task(e.to_string()))
}
