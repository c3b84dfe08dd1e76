//! Fixtures of the dashboard's tests: a real redb ledger written the way
//! the loop writes an experiment (Run, Results, Outcome, BranchHead, Votes),
//! and an `Actions` that records votes and forks in it.

#![allow(dead_code, reason = "each test file uses part of the fixture")]

pub mod http;

use autoresearch_core::{
    BranchHead, ComponentRegistry, EntityId, EvalResult, Experiment, Outcome, OutcomeStatus, Run,
    RunStatus, Storage, Tick, Vote, VoteVerdict, World, now_ms,
};
use autoresearch_store::{RedbConfig, RedbStorage};
use autoresearch_web::{
    Access, ActionError, ActionReceipt, Actions, DashboardConfig, ForkRequest, VoteRequest,
};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The comparator spec the fixture's Outcomes name.
pub const SPEC: &str = "scalar:score:min";
/// The token of dashboards made with actions.
pub const TOKEN: &str = "test-token-0123";

/// A temp dir holding a ledger file.
pub struct Ledger {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub registry: Arc<ComponentRegistry>,
}

impl Ledger {
    /// A fresh ledger, opened read-write.
    pub fn new() -> Ledger {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let storage: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        Ledger {
            dir,
            path,
            storage,
            registry: Arc::new(ComponentRegistry::standard()),
        }
    }

    /// A read-only open of the same file, as `autoresearch serve` opens it.
    pub fn read_only(&self) -> Arc<dyn Storage> {
        Arc::new(RedbStorage::open_read_only(&self.path).unwrap())
    }
}

/// The metric picker the CLI passes, for the fixture's scalar specs.
pub fn picker() -> autoresearch_web::MetricPicker {
    Arc::new(|spec: &str| {
        let mut parts = spec.split(':');
        let _kind = parts.next()?;
        let metric = parts.next()?.to_string();
        Some((metric, parts.next() != Some("max")))
    })
}

/// A dashboard config with actions done on `storage` (`TOKEN`), replays
/// by the real replayer (`autoresearch replay`'s function) on it.
pub fn with_actions(
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
) -> DashboardConfig {
    let writable = storage.clone();
    let replayer = autoresearch_compare::LedgerReplayer::new(
        Arc::new(move || Ok(writable.clone())),
        registry.clone(),
    );
    DashboardConfig {
        replayer: Some(Arc::new(replayer)),
        params: None,
        access: Access::Token {
            token: TOKEN.into(),
            actions: Arc::new(WorldActions { storage, registry }),
        },
        metric: picker(),
        poll_interval: Duration::from_millis(50),
        title: "test ledger".into(),
        diffs: None,
    }
}

/// A read-only dashboard config.
pub fn read_only() -> DashboardConfig {
    DashboardConfig {
        metric: picker(),
        poll_interval: Duration::from_millis(50),
        ..DashboardConfig::read_only("test ledger")
    }
}

/// Writes an experiment world as the loop does, one tick per step.
pub struct Writer {
    pub world: World,
    pub experiment: String,
    pub n: usize,
}

impl Writer {
    /// Creates world `autoresearch:{name}` with its Experiment and a
    /// baseline head of `base_metric`.
    pub async fn start(ledger: &Ledger, name: &str, base_metric: f64) -> Writer {
        let mut world = World::create(
            ledger.storage.clone(),
            ledger.registry.clone(),
            &format!("autoresearch:{name}"),
        )
        .await
        .unwrap();
        world
            .spawn_with(&Experiment::new(
                name,
                "/repo",
                "main",
                now_ms(),
                &json!({}),
            ))
            .unwrap();
        world.commit().await.unwrap();
        let mut w = Writer {
            world,
            experiment: name.into(),
            n: 0,
        };
        w.attempt(
            Some(base_metric),
            OutcomeStatus::Baseline,
            "baseline measured",
        )
        .await;
        w
    }

    fn commit_of(n: usize) -> String {
        format!("{n:040x}")
    }

    /// Records a decided attempt (one tick): its Run, one Result with
    /// `score` (none for a crash without a metric), its Outcome and, for a
    /// keep or a baseline, the new BranchHead. Returns the run id.
    pub async fn attempt(
        &mut self,
        score: Option<f64>,
        status: OutcomeStatus,
        reason: &str,
    ) -> String {
        self.n += 1;
        let run_id = format!("run-{:04}", self.n);
        let commit = Self::commit_of(self.n);
        let mut run = Run::new(&run_id, &self.experiment);
        run.task = format!("idea number {} <try>", self.n);
        run.commit_hash = commit.clone();
        // One after the other, as a sequential loop runs them (a replay
        // decides runs that overlapped in time as one parallel round).
        run.started_at_ms = now_ms() - 1_000_000 + self.n as i64 * 10_000;
        run.finished_at_ms = run.started_at_ms + 5_000;
        run.set_status(if status == OutcomeStatus::Crash {
            RunStatus::Crashed
        } else {
            RunStatus::Stopped
        });
        let entity = self.world.spawn_with(&run).unwrap();
        if let Some(s) = score {
            let outputs =
                json!({"score": s, "loss": s * 2.0, "_meta": {"commit": commit, "sample": 0}});
            self.world
                .spawn_with(&EvalResult::new(&run_id, "eval", &outputs, now_ms()))
                .unwrap();
        }
        self.world
            .insert(entity, &outcome(&run_id, status.clone(), reason))
            .unwrap();
        if status.is_head() {
            self.set_head(&run_id, &commit);
        }
        self.world.commit().await.unwrap();
        run_id
    }

    fn set_head(&mut self, run_id: &str, commit: &str) {
        let head = BranchHead::new(&self.experiment, commit, run_id, &json!({}), now_ms());
        match self.world.branch_head(&self.experiment) {
            Some((e, _)) => self.world.insert(e, &head).unwrap(),
            None => {
                self.world.spawn_with(&head).unwrap();
            }
        }
    }

    /// A run in flight: `running`, no commit yet. Returns its id.
    pub async fn in_flight(&mut self) -> String {
        self.n += 1;
        let run_id = format!("run-{:04}", self.n);
        let mut run = Run::new(&run_id, &self.experiment);
        run.task = "an idea being tried".into();
        run.set_status(RunStatus::Running);
        run.started_at_ms = now_ms() - 65_000;
        self.world.spawn_with(&run).unwrap();
        self.world.commit().await.unwrap();
        run_id
    }

    /// A run whose comparator asked for votes. Returns its id.
    pub async fn pending(&mut self, score: f64) -> String {
        self.attempt(
            Some(score),
            OutcomeStatus::Pending,
            "too close to call: waiting for votes",
        )
        .await
    }

    /// What the loop does with votes: every pending run with a vote is
    /// decided by its latest vote (keep moves the head). Returns how many
    /// were decided.
    pub async fn decide_votes(&mut self) -> usize {
        self.world.refresh().await.unwrap();
        let pending: Vec<(EntityId, Outcome)> = self
            .world
            .find_all::<Outcome>(|o| o.status == OutcomeStatus::Pending);
        let mut decided = 0;
        for (entity, o) in pending {
            let mut votes = self.world.find_all::<Vote>(|v| v.run_id == o.run_id);
            votes.sort_by_key(|(_, v)| v.at_ms);
            let Some((_, vote)) = votes.pop() else {
                continue;
            };
            let status = match vote.verdict {
                VoteVerdict::Keep => OutcomeStatus::Keep,
                _ => OutcomeStatus::Discard,
            };
            let reason = format!("decided by {}'s vote", vote.voter);
            self.world
                .insert(entity, &outcome(&o.run_id, status.clone(), &reason))
                .unwrap();
            if status.is_head() {
                let run: Run = self.world.get(entity).unwrap();
                self.set_head(&o.run_id, &run.commit_hash);
            }
            decided += 1;
        }
        if decided > 0 {
            self.world.commit().await.unwrap();
        }
        decided
    }

    /// The world's head tick.
    pub fn tick(&self) -> Tick {
        self.world.tick()
    }
}

fn outcome(run_id: &str, status: OutcomeStatus, reason: &str) -> Outcome {
    Outcome {
        run_id: run_id.into(),
        status,
        reason: reason.into(),
        descriptor_json: json!({"score": {"candidate": 1}}).to_string(),
        base_commit: "b".repeat(40),
        comparator: SPEC.into(),
        decided_at_ms: now_ms(),
    }
}

/// Votes and forks written to a ledger through `World`, as the CLI's
/// actions do through `autoresearch-compare` (which this crate may not use).
pub struct WorldActions {
    pub storage: Arc<dyn Storage>,
    pub registry: Arc<ComponentRegistry>,
}

#[async_trait::async_trait]
impl Actions for WorldActions {
    async fn vote(&self, r: VoteRequest) -> Result<ActionReceipt, ActionError> {
        let failed = |e: autoresearch_core::Error| ActionError::Failed(e.to_string());
        let mut world = World::open(self.storage.clone(), self.registry.clone(), &r.world)
            .await
            .map_err(failed)?;
        loop {
            let vote = Vote {
                run_id: r.run_id.clone(),
                verdict: r.verdict.clone(),
                voter: r.voter.clone(),
                reason: r.reason.clone(),
                at_ms: now_ms(),
            };
            world.spawn_with(&vote).map_err(failed)?;
            match world.commit().await {
                Ok(_) => break,
                Err(autoresearch_core::Error::Storage(
                    autoresearch_core::StorageError::Conflict { .. },
                )) => {
                    world.refresh().await.map_err(failed)?;
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(ActionReceipt {
            message: format!("{} voted {} on run {}", r.voter, r.verdict, r.run_id),
            world: r.world,
            detail: json!({}),
        })
    }

    async fn fork(&self, r: ForkRequest) -> Result<ActionReceipt, ActionError> {
        let failed = |e: autoresearch_core::Error| ActionError::Failed(e.to_string());
        let source = World::open(self.storage.clone(), self.registry.clone(), &r.world)
            .await
            .map_err(failed)?;
        let name = r
            .name
            .unwrap_or_else(|| format!("{}-fork-{}", r.experiment, r.run_id));
        let info = source.fork(r.at, &name).await.map_err(failed)?;
        let (_, run) = source
            .run_by_id(&r.run_id)
            .ok_or_else(|| ActionError::Refused(format!("no run {}", r.run_id)))?;
        let mut fork = World::open_id(self.storage.clone(), self.registry.clone(), info.id)
            .await
            .map_err(failed)?;
        let head = BranchHead::new(
            &r.experiment,
            &run.commit_hash,
            &r.run_id,
            &json!({}),
            now_ms(),
        );
        match fork.branch_head(&r.experiment) {
            Some((e, _)) => fork.insert(e, &head).map_err(failed)?,
            None => {
                fork.spawn_with(&head).map_err(failed)?;
            }
        }
        fork.commit().await.map_err(failed)?;
        Ok(ActionReceipt {
            message: format!("forked {} at tick {} into {name}", r.world, r.at.0),
            world: name,
            detail: json!({}),
        })
    }
}
