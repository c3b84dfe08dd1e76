//! Counterfactual replay and hand-made forks of an experiment world.
//!
//! - [`replay`]: forks the world at a tick and re-decides every later
//!   candidate, in the original order, from its stored Results under another
//!   comparator. No job is re-run: where a comparator asks for samples that
//!   were never taken, the decision is made on what exists and says so.
//!   The counterfactual Outcomes and BranchHead are written into the fork, one
//!   tick per candidate, so the fork can be inspected, plotted and continued
//!   like any experiment world.
//! - [`fork_promoting`]: a fork in which a chosen run became head at a tick.
//! - [`cast_vote`]: records a human vote on a run.

use autoresearch_core::compare::{Comparator, Decision, Evidence, Verdict, Vote};
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts};
use autoresearch_core::{
    BranchHead, ComponentRegistry, EntityId, EvalResult, Experiment, LoopCause, OutcomeStatus,
    RunStatus, Storage, Tick, World, now_ms,
};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Errors of replay, fork and vote. Each names the world and what was done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Reading or writing the ledger failed.
    #[error("{doing} (world {world:?}): {source}")]
    Ledger {
        /// What was being done (opening the world, recording a decision, ...).
        doing: String,
        /// The world it was done to.
        world: String,
        /// The ledger's error.
        #[source]
        source: autoresearch_core::Error,
    },
    /// The world holds no Experiment of that name at the tick read.
    #[error("world {world:?} has no experiment {experiment:?} at tick {tick}")]
    NoExperiment {
        /// The world read.
        world: String,
        /// The experiment asked for.
        experiment: String,
        /// The tick read.
        tick: Tick,
    },
    /// A fork tick beyond the world's head.
    #[error("world {world:?}: tick {tick} is beyond its head {head}")]
    BeyondHead {
        /// The world to fork.
        world: String,
        /// The tick asked for.
        tick: Tick,
        /// The world's head.
        head: Tick,
    },
    /// No run of the experiment has this id or id prefix.
    #[error("world {world:?}: no run {run_id:?} in experiment {experiment:?}")]
    UnknownRun {
        /// The world searched.
        world: String,
        /// The experiment searched.
        experiment: String,
        /// The id or prefix given.
        run_id: String,
    },
    /// An id prefix that matches more than one run.
    #[error("world {world:?}: run id prefix {prefix:?} matches {count} runs; give more of it")]
    AmbiguousRun {
        /// The world searched.
        world: String,
        /// The prefix given.
        prefix: String,
        /// How many runs it matches.
        count: usize,
    },
    /// A run that cannot become head.
    #[error("world {world:?}: run {run_id:?} has no commit to promote ({why})")]
    NothingToPromote {
        /// The world the run is in.
        world: String,
        /// The run's full id.
        run_id: String,
        /// Why it cannot be promoted.
        why: String,
    },
    /// A vote verdict other than `keep` or `discard`; holds the word given.
    #[error("a vote is keep or discard, not {0:?}")]
    BadVerdict(String),
}

fn ledger_err(
    doing: impl Into<String>,
    world: &str,
) -> impl FnOnce(autoresearch_core::Error) -> ReplayError {
    let doing = doing.into();
    let world = world.to_string();
    move |source| ReplayError::Ledger {
        doing,
        world,
        source,
    }
}

/// A head of the branch: the run that made it and its commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeadPoint {
    /// The run that made this head; empty for the seed head (the branch tip before any run).
    pub run_id: String,
    /// The head's commit (full hash).
    pub commit: String,
}

/// One side of a replay step: what was decided and the head after it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Side {
    /// The decision's word (`keep`, `discard`, `crash`, `baseline`, ...). A
    /// run the source never decided reads as `crash`.
    pub status: String,
    /// The decision's one-line reason.
    pub reason: String,
    /// The head after this decision.
    pub head: HeadPoint,
}

/// One candidate, as originally decided and as re-decided.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayStep {
    /// The candidate run.
    pub run_id: String,
    /// The candidate's commit.
    pub commit: String,
    /// The decision recorded in the source world.
    pub original: Side,
    /// The decision re-made under the replay's comparator, as recorded in the fork.
    pub counterfactual: Side,
    /// The fork's tick that recorded the counterfactual decision.
    pub fork_tick: u64,
}

/// What [`replay`] did: the fork it wrote and both head trajectories.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The experiment replayed.
    pub experiment: String,
    /// The world replayed from.
    pub source_world: String,
    /// The fork written.
    pub fork_world: String,
    /// The source tick the fork was made at.
    pub from_tick: u64,
    /// The comparator the candidates were re-decided with.
    pub comparator: String,
    /// The comparators that decided originally, as recorded.
    pub original_comparators: Vec<String>,
    /// The head at the fork tick, where both trajectories start.
    pub start_head: HeadPoint,
    /// Every candidate decided after the fork tick, in the original order.
    pub steps: Vec<ReplayStep>,
    /// The head after every promotion, starting with the head at the fork tick.
    pub original_trajectory: Vec<HeadPoint>,
    /// The fork's head after every promotion, starting with the head at the fork tick.
    pub counterfactual_trajectory: Vec<HeadPoint>,
    /// The head the source world ended with.
    pub original_head: HeadPoint,
    /// The head the fork ended with.
    pub counterfactual_head: HeadPoint,
}

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayRequest {
    /// The experiment to replay.
    pub experiment: String,
    /// The world to replay, usually `autoresearch:{experiment}`.
    pub source_world: String,
    /// Fork here; `None`: the tick that created the experiment.
    pub from: Option<Tick>,
    /// The name of the fork to create (must be free).
    pub fork_name: String,
}

/// The loop's own decision on `o` that replay carries over unchanged.
fn loop_cause(o: &Outcome) -> Option<LoopCause> {
    LoopCause::of(o).filter(|c| LoopCause::CARRIED_OVER.contains(c))
}

/// The evidence stored for one side, read from `world` (the loop reads its
/// evidence with the same function).
pub use autoresearch_core::lifecycle::stored_evidence;

/// The tick that created `experiment`'s Experiment entity in `world`.
async fn creation_tick(world: &World, experiment: &str) -> Result<Tick, ReplayError> {
    let Some((entity, _)) = world.experiment(experiment) else {
        return Err(ReplayError::NoExperiment {
            world: world.name().to_string(),
            experiment: experiment.to_string(),
            tick: world.tick(),
        });
    };
    let history = world
        .history(entity)
        .await
        .map_err(ledger_err("reading the experiment's history", world.name()))?;
    Ok(history.first().map_or(Tick(1), |c| c.tick))
}

/// The source at its head, the source as it was at `tick`, and the fork.
struct Worlds {
    source: World,
    at: World,
    fork: World,
}

async fn open_and_fork(
    storage: &Arc<dyn Storage>,
    registry: &Arc<ComponentRegistry>,
    source_world: &str,
    experiment: &str,
    tick: Option<Tick>,
    fork_name: &str,
) -> Result<(Worlds, Tick), ReplayError> {
    let source = World::open(storage.clone(), registry.clone(), source_world)
        .await
        .map_err(ledger_err("opening the world", source_world))?;
    let tick = match tick {
        Some(t) => t,
        None => creation_tick(&source, experiment).await?,
    };
    if tick > source.tick() {
        return Err(ReplayError::BeyondHead {
            world: source_world.to_string(),
            tick,
            head: source.tick(),
        });
    }
    let at = World::open_at(storage.clone(), registry.clone(), source.id(), tick)
        .await
        .map_err(ledger_err(format!("reading tick {tick}"), source_world))?;
    if at.experiment(experiment).is_none() {
        return Err(ReplayError::NoExperiment {
            world: source_world.to_string(),
            experiment: experiment.to_string(),
            tick,
        });
    }
    let info = source.fork(tick, fork_name).await.map_err(ledger_err(
        format!("forking at tick {tick} into {fork_name:?}"),
        source_world,
    ))?;
    let fork = World::open_id(storage.clone(), registry.clone(), info.id)
        .await
        .map_err(ledger_err("opening the fork", fork_name))?;
    Ok((Worlds { source, at, fork }, tick))
}

fn head_of(world: &World, experiment: &str) -> HeadPoint {
    world
        .branch_head(experiment)
        .map(|(_, h)| HeadPoint {
            run_id: h.run_id,
            commit: h.commit_hash,
        })
        .unwrap_or_default()
}

impl Worlds {
    /// Buffers, in the fork, the run of `a` in its final state: its entity
    /// if it existed at the fork tick, else a copy with its Results and Votes.
    fn carry_run(&mut self, a: &Attempt) -> Result<EntityId, autoresearch_core::Error> {
        let mut run = a.run.clone();
        if run.status().map(|s| s.is_active()).unwrap_or(false) {
            run.set_status(RunStatus::Stopped);
        }
        let entity = if self.at.is_live(a.entity) {
            self.fork.insert(a.entity, &run)?;
            a.entity
        } else {
            self.fork.spawn_with(&run)?
        };
        self.carry_results(|r| r == a.run.run_id)?;
        Ok(entity)
    }

    /// Buffers copies of the source's Results and Votes that were stored
    /// after the fork tick, for runs matching `pick`.
    fn carry_results(
        &mut self,
        mut pick: impl FnMut(&str) -> bool,
    ) -> Result<(), autoresearch_core::Error> {
        let results = self.source.find_all::<EvalResult>(|r| pick(&r.run_id));
        for (e, r) in results {
            if !self.at.is_live(e) {
                self.fork.spawn_with(&r)?;
            }
        }
        let votes = self.source.find_all::<Vote>(|v| pick(&v.run_id));
        for (e, v) in votes {
            if !self.at.is_live(e) {
                self.fork.spawn_with(&v)?;
            }
        }
        Ok(())
    }

    fn set_head(
        &mut self,
        experiment: &str,
        head: &BranchHead,
    ) -> Result<(), autoresearch_core::Error> {
        match self.fork.branch_head(experiment) {
            Some((e, _)) => self.fork.insert(e, head),
            None => self.fork.spawn_with(head).map(drop),
        }
    }
}

/// How a candidate's counterfactual was decided.
struct Decided {
    status: OutcomeStatus,
    reason: String,
    descriptor: Value,
    comparator: String,
}

fn from_decision(d: Result<Decision, String>, spec: &str) -> Decided {
    match d {
        Err(why) => Decided {
            status: OutcomeStatus::Discard,
            reason: format!("comparator failed: {why}"),
            descriptor: json!({"error": why}),
            comparator: spec.to_string(),
        },
        Ok(d) => {
            let status = match d.verdict {
                Verdict::Keep => OutcomeStatus::Keep,
                Verdict::Discard | Verdict::NeedMore { .. } => OutcomeStatus::Discard,
                Verdict::Pending => OutcomeStatus::Pending,
            };
            let reason = match d.verdict {
                Verdict::NeedMore {
                    incumbent,
                    candidate,
                } => format!(
                    "replay: decided on the samples that exist; the comparator asked for {incumbent} more incumbent and {candidate} more candidate samples, never taken ({})",
                    d.reason
                ),
                _ => d.reason,
            };
            Decided {
                status,
                reason,
                descriptor: d.descriptor,
                comparator: spec.to_string(),
            }
        }
    }
}

/// Whether `b` ran at the same time as the runs of `round`: a parallel
/// round of the original loop. (Not "the same base": a candidate made stale
/// by a keep in its round was rebased and records the new base.)
fn same_round(round: &[&Attempt], b: &Attempt) -> bool {
    let finished = round
        .iter()
        .map(|a| a.run.finished_at_ms)
        .max()
        .unwrap_or(0);
    b.run.started_at_ms != 0 && b.run.started_at_ms < finished
}

/// Replays `req.experiment` from `req.from` under `comparator` into a new
/// fork `req.fork_name` (see the module docs). Cost: one ledger tick per
/// later candidate, and one comparison per candidate (two for a candidate
/// kept after the head moved within its round); no job runs. The source
/// world is only read.
///
/// Errors: an unknown world or experiment, a tick beyond the head, a fork
/// name already taken, or a ledger failure; a comparator failure is not an
/// error but a discard whose reason says so.
pub async fn replay(
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    req: &ReplayRequest,
    comparator: Arc<dyn Comparator>,
) -> Result<ReplayReport, ReplayError> {
    let exp = req.experiment.as_str();
    let (mut w, tick) = open_and_fork(
        &storage,
        &registry,
        &req.source_world,
        exp,
        req.from,
        &req.fork_name,
    )
    .await?;
    let spec = comparator.spec();
    let fork_err = |doing: &str| ledger_err(doing.to_string(), &req.fork_name);

    // Candidates decided after the fork tick (or still pending there).
    let before: HashMap<String, Option<Outcome>> = attempts(&w.at, exp)
        .into_iter()
        .map(|a| (a.run.run_id, a.outcome))
        .collect();
    let mut later: Vec<Attempt> = attempts(&w.source, exp)
        .into_iter()
        .filter(|a| {
            let decided = a.outcome.is_some() || a.run.status() == Ok(RunStatus::Crashed);
            let open_at_tick = match before.get(&a.run.run_id) {
                None | Some(None) => true,
                Some(Some(o)) => o.status == OutcomeStatus::Pending,
            };
            decided && open_at_tick
        })
        .collect();
    later.sort_by_key(|a| (a.outcome.as_ref().map_or(0, |o| o.decided_at_ms), a.entity));
    let later_ids: HashSet<String> = later.iter().map(|a| a.run.run_id.clone()).collect();

    // First tick: mark the fork, and carry over samples stored after the
    // fork tick for runs that are not replayed (incumbents' extra samples).
    if let Some((e, mut x)) = w.fork.experiment(exp) {
        let mut meta = x.metadata().unwrap_or_else(|_| json!({}));
        if !meta.is_object() {
            meta = json!({});
        }
        meta["counterfactual"] = json!({
            "source_world": req.source_world,
            "from_tick": tick.0,
            "comparator": spec,
        });
        x.metadata_json = meta.to_string();
        w.fork
            .insert::<Experiment>(e, &x)
            .map_err(fork_err("marking the fork"))?;
    }
    w.carry_results(|r| !later_ids.contains(r))
        .map_err(fork_err("copying stored samples"))?;
    w.fork
        .commit()
        .await
        .map_err(fork_err("copying stored samples"))?;

    let start = head_of(&w.at, exp);
    // The noise model the loop recorded (the latest in the source world),
    // so that a `stat` replay decides as the loop did; none in worlds of
    // older builds (then `stat` falls back to Welch's test).
    let noise = w
        .source
        .experiment(exp)
        .and_then(|(e, _)| w.source.get::<autoresearch_core::noise::NoiseModel>(e));
    let mut original_comparators: Vec<String> = Vec::new();
    let mut orig_head = start.clone();
    let mut cf_head = start.clone();
    let mut orig_traj = vec![start.clone()];
    let mut cf_traj = vec![start.clone()];
    let mut steps = Vec::with_capacity(later.len());

    let mut i = 0;
    while i < later.len() {
        // A parallel round of the original loop is decided as a round.
        let mut round: Vec<&Attempt> = vec![&later[i]];
        while i + round.len() < later.len() && same_round(&round, &later[i + round.len()]) {
            round.push(&later[i + round.len()]);
        }
        i += round.len();
        let comparable: Vec<&Attempt> = round
            .iter()
            .copied()
            .filter(|a| {
                let o = a.outcome.as_ref();
                let crashed = o.is_none_or(|o| o.status == OutcomeStatus::Crash)
                    || a.run.status() == Ok(RunStatus::Crashed);
                let baseline = o.is_some_and(|o| o.status == OutcomeStatus::Baseline);
                let by_loop = o.and_then(loop_cause).is_some();
                !crashed && !baseline && !by_loop && !cf_head.commit.is_empty()
            })
            .collect();
        let round_head = cf_head.clone();
        let mut decisions: HashMap<String, Result<Decision, String>> = HashMap::new();
        if !comparable.is_empty() {
            let inc = with_noise(
                stored_evidence(&w.source, &round_head.run_id, &round_head.commit),
                &noise,
            );
            let evs: Vec<Evidence> = comparable
                .iter()
                .map(|a| {
                    with_noise(
                        stored_evidence(&w.source, &a.run.run_id, &a.run.commit_hash),
                        &noise,
                    )
                })
                .collect();
            let ds: Vec<Result<Decision, String>> = if evs.len() == 1 {
                vec![
                    comparator
                        .compare(&inc, &evs[0])
                        .await
                        .map_err(|e| e.to_string()),
                ]
            } else {
                match comparator.compare_round(&inc, &evs).await {
                    Ok(ds) if ds.len() == evs.len() => ds.into_iter().map(Ok).collect(),
                    Ok(ds) => vec![
                        Err(format!(
                            "comparator returned {} decisions for {} candidates",
                            ds.len(),
                            evs.len()
                        ));
                        evs.len()
                    ],
                    Err(e) => vec![Err(e.to_string()); evs.len()],
                }
            };
            for (a, d) in comparable.iter().zip(ds) {
                decisions.insert(a.run.run_id.clone(), d);
            }
        }
        for a in round {
            let o = a.outcome.clone();
            if let Some(o) = &o
                && !o.comparator.is_empty()
                && !original_comparators.contains(&o.comparator)
            {
                original_comparators.push(o.comparator.clone());
            }
            let orig_status = o
                .as_ref()
                .map_or(OutcomeStatus::Crash, |o| o.status.clone());
            let orig_reason = o.as_ref().map_or(String::new(), |o| o.reason.clone());
            let me = HeadPoint {
                run_id: a.run.run_id.clone(),
                commit: a.run.commit_hash.clone(),
            };
            if orig_status.is_head() {
                orig_head = me.clone();
                orig_traj.push(me.clone());
            }
            let decided = match decisions.remove(&a.run.run_id) {
                Some(d) => {
                    // Kept, but an earlier candidate of the round moved the
                    // head: decide again against the new head.
                    let d = match d {
                        Ok(d) if d.verdict == Verdict::Keep && cf_head != round_head => {
                            let inc = with_noise(
                                stored_evidence(&w.source, &cf_head.run_id, &cf_head.commit),
                                &noise,
                            );
                            let ev = with_noise(
                                stored_evidence(&w.source, &me.run_id, &me.commit),
                                &noise,
                            );
                            comparator
                                .compare(&inc, &ev)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        other => other,
                    };
                    from_decision(d, &spec)
                }
                None => {
                    let o = o.clone().unwrap_or_default();
                    if orig_status == OutcomeStatus::Baseline {
                        Decided {
                            status: OutcomeStatus::Baseline,
                            reason: o.reason.clone(),
                            descriptor: serde_json::from_str(&o.descriptor_json)
                                .unwrap_or(json!({})),
                            comparator: String::new(),
                        }
                    } else if orig_status == OutcomeStatus::Crash
                        || a.run.status() == Ok(RunStatus::Crashed)
                    {
                        Decided {
                            status: OutcomeStatus::Crash,
                            reason: o.reason.clone(),
                            descriptor: serde_json::from_str(&o.descriptor_json)
                                .unwrap_or(json!({})),
                            comparator: String::new(),
                        }
                    } else if let Some(cause) = loop_cause(&o) {
                        Decided {
                            status: OutcomeStatus::Discard,
                            reason: format!("{} (decided by the loop: {cause})", o.reason),
                            descriptor: serde_json::from_str(&o.descriptor_json)
                                .unwrap_or(json!({})),
                            comparator: o.comparator.clone(),
                        }
                    } else {
                        // No incumbent yet: the first candidate becomes the head.
                        Decided {
                            status: OutcomeStatus::Baseline,
                            reason: "replay: no incumbent yet; adopted as the first head".into(),
                            descriptor: BranchHead::baseline_descriptor(
                                "no incumbent at the fork tick",
                            ),
                            comparator: String::new(),
                        }
                    }
                }
            };
            let entity = w.carry_run(a).map_err(fork_err("copying a run"))?;
            let outcome = Outcome {
                run_id: me.run_id.clone(),
                status: decided.status.clone(),
                reason: decided.reason.clone(),
                descriptor_json: decided.descriptor.to_string(),
                base_commit: cf_head.commit.clone(),
                comparator: decided.comparator.clone(),
                decided_at_ms: now_ms(),
            };
            w.fork
                .insert(entity, &outcome)
                .map_err(fork_err("recording a decision"))?;
            if decided.status.is_head() {
                let head =
                    BranchHead::new(exp, &me.commit, &me.run_id, &decided.descriptor, now_ms());
                w.set_head(exp, &head)
                    .map_err(fork_err("moving the head"))?;
                cf_head = me.clone();
                cf_traj.push(me.clone());
            }
            let fork_tick = w
                .fork
                .commit()
                .await
                .map_err(fork_err("recording a decision"))?;
            steps.push(ReplayStep {
                run_id: me.run_id.clone(),
                commit: me.commit.clone(),
                original: Side {
                    status: orig_status.to_string(),
                    reason: orig_reason,
                    head: orig_head.clone(),
                },
                counterfactual: Side {
                    status: decided.status.to_string(),
                    reason: decided.reason,
                    head: cf_head.clone(),
                },
                fork_tick: fork_tick.0,
            });
        }
    }
    Ok(ReplayReport {
        experiment: exp.to_string(),
        source_world: req.source_world.clone(),
        fork_world: req.fork_name.clone(),
        from_tick: tick.0,
        comparator: spec,
        original_comparators,
        start_head: start,
        steps,
        original_trajectory: orig_traj,
        counterfactual_trajectory: cf_traj,
        original_head: orig_head,
        counterfactual_head: cf_head,
    })
}

mod fork;
mod vote;

pub use fork::{ForkReport, ForkRequest, find_run, fork_promoting};
pub use vote::{VoteReceipt, VoteRecord, cast_vote};

/// `e` with the experiment's recorded noise model, when there is one.
fn with_noise(mut e: Evidence, noise: &Option<autoresearch_core::noise::NoiseModel>) -> Evidence {
    e.noise = noise.clone();
    e
}
