//! `autoresearch status`: an experiment's head, branch, counts, runs in
//! flight and runs waiting for votes. Built once as a [`StatusView`], which
//! renders as plain lines ([`StatusView::lines`]) or JSON
//! ([`StatusView::to_json`]); a new line is one more field and one more
//! `push`. `--watch` redraws it until interrupted.

use crate::human::{self, Lines};
use crate::target::{ForkOf, Target, TargetArgs};
use autoresearch_controller::git::Git;
use autoresearch_core::compare::Vote;
use autoresearch_core::current;
use autoresearch_core::lifecycle::Attempt;
use autoresearch_core::noise::NoiseModel;
use autoresearch_core::query::CurrentReader;
use autoresearch_core::{
    AttemptState, BranchHead, EntityId, Experiment, Outcome, OutcomeStatus, Run, RunCost,
    RunStatus, now_ms, short_commit,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch status\n  autoresearch status --world what-if\n  \
    autoresearch status --experiment nano --json\n  autoresearch status --watch      # redraw every 2 s until Ctrl-C"
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Redraw every SECONDS (2 when not given) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
}

/// The head of the experiment as `status` shows it.
pub struct HeadView {
    /// The head commit.
    pub commit: String,
    /// The run that made it head; empty for the seed.
    pub run_id: String,
    /// The head run's metrics: the mean over its final samples, and their count.
    pub metrics: BTreeMap<String, (f64, usize)>,
    /// Why it became head (the comparator's descriptor).
    pub descriptor: Value,
    /// When it became head.
    pub updated_at_ms: i64,
    /// Why: the head run's decision reason and comparator, when recorded.
    pub reason: Option<String>,
}

/// Where the world's git branch is, against its head.
pub enum BranchState {
    /// The branch is at the head.
    AtHead,
    /// The branch moved outside the loop (the next run adopts it).
    Moved(String),
    /// The branch does not exist (a fork before its first `run --world`).
    Missing,
    /// No repository to look in (an imported experiment).
    Unknown,
}

/// A run waiting for votes.
pub struct PendingView {
    /// The run.
    pub run_id: String,
    /// Its candidate commit.
    pub commit: String,
    /// The votes cast on it so far.
    pub votes: Vec<Vote>,
    /// The votes the comparator waits for, when its descriptor says.
    pub quorum: Option<u64>,
    /// The comparator's reason.
    pub reason: String,
}

/// Everything `status` shows, read once.
pub struct StatusView {
    /// The experiment.
    pub experiment: String,
    /// The world read.
    pub world: String,
    /// Its head tick.
    pub tick: u64,
    /// Where the world was forked from, for a fork.
    pub fork_of: Option<ForkOf>,
    /// The branch the world's loop advances.
    pub branch: Option<String>,
    /// The branch's tip, when it exists.
    pub branch_tip: Option<String>,
    /// The branch against the head.
    pub branch_state: BranchState,
    /// The head.
    pub head: Option<HeadView>,
    /// How many attempts had each outcome.
    pub counts: HashMap<OutcomeStatus, usize>,
    /// Attempts in all.
    pub attempts: usize,
    /// Runs in flight: id, run status, the attempt's step, started.
    pub in_flight: Vec<(String, String, &'static str, i64)>,
    /// Whether a live loop on this host holds the world's lease lock
    /// ([`loop_alive`]); `None` when not looked at. Runs in flight with no
    /// loop running are not running: the next `run` records them as
    /// interrupted (a fork taken mid-round, a loop killed).
    pub loop_running: Option<bool>,
    /// Runs waiting for votes.
    pub pending: Vec<PendingView>,
    /// Runs decided by votes (the vote comparator), most recent last.
    pub voted: Vec<(String, OutcomeStatus, String)>,
    /// When this was read, in Unix milliseconds.
    pub now_ms: i64,
    /// The experiment's cost summed over its runs, when any was recorded.
    pub cost: Option<RunCost>,
    /// What is spent of `[run.cost_budget]`, when the config sets one.
    pub budget: Option<String>,
    /// The experiment's noise model, one clause a metric, once recorded.
    pub noise: Option<String>,
    /// Jobs handed to a scheduler (Slurm), in submission order.
    pub jobs: Vec<autoresearch_core::ExecutorJob>,
}

/// The mean of each numeric metric over an attempt's final samples, with
/// the sample count.
pub fn means(a: &Attempt) -> BTreeMap<String, (f64, usize)> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in a.final_results() {
        let Ok(Value::Object(o)) = r.outputs() else {
            continue;
        };
        for (k, v) in o {
            if k.starts_with('_') {
                continue;
            }
            if let Some(x) = v.as_f64() {
                let e = sums.entry(k).or_insert((0.0, 0));
                e.0 += x;
                e.1 += 1;
            }
        }
    }
    sums.into_iter()
        .map(|(k, (s, n))| (k, (s / n as f64, n)))
        .collect()
}

/// Metric means as text: `score 97`, or `score 97.3 (mean of 3)`.
pub fn means_text(m: &BTreeMap<String, (f64, usize)>) -> String {
    if m.is_empty() {
        return "no metrics".into();
    }
    m.iter()
        .map(|(k, (x, n))| {
            if *n > 1 {
                format!("{k} {} (mean of {n})", human::num(*x))
            } else {
                format!("{k} {}", human::num(*x))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The head as `status` shows it: the branch head `h` and the attempt of
/// the run that made it (none for the seed).
fn head_view(h: BranchHead, run: Option<&Attempt>) -> HeadView {
    let metrics = run.map(means).unwrap_or_default();
    let reason = run.and_then(|a| a.outcome.as_ref()).map(|o| {
        if o.comparator.is_empty() {
            o.reason.clone()
        } else {
            format!("{} [{}]", o.reason, o.comparator)
        }
    });
    HeadView {
        reason,
        descriptor: h.descriptor().unwrap_or(Value::Null),
        commit: h.commit_hash,
        run_id: h.run_id,
        metrics,
        updated_at_ms: h.updated_at_ms,
    }
}

/// A run waiting for votes, with the votes cast on it.
fn pending_view(r: &Run, o: &Outcome, votes: Vec<Vote>) -> PendingView {
    PendingView {
        run_id: r.run_id.clone(),
        commit: r.commit_hash.clone(),
        votes,
        quorum: o
            .descriptor()
            .ok()
            .and_then(|d| d.get("quorum").and_then(Value::as_u64)),
        reason: o.reason.clone(),
    }
}

impl StatusView {
    /// Reads the view of `target`'s experiment at its head.
    pub async fn read(target: &Target) -> anyhow::Result<StatusView> {
        let experiment = target.experiment()?.to_string();
        if let Some(r) = crate::current_read::reader(target).await {
            match Self::read_current(target, &r, experiment.clone()).await {
                Err(e) if crate::current_read::from_ledger(&e) => {
                    crate::current_read::fell_back(target, &e);
                }
                other => return other,
            }
        }
        Self::read_world(target, experiment).await
    }

    /// [`StatusView::read`] from the ledger's current state: counts and
    /// cost from its tally, runs in flight, pending and voted from its
    /// secondary keys. Cost: O(runs shown + the experiment's jobs),
    /// whatever the number of attempts.
    async fn read_current(
        target: &Target,
        r: &CurrentReader,
        experiment: String,
    ) -> anyhow::Result<StatusView> {
        let exp = r.experiment(&experiment).await?;
        let head = match r.branch_head(&experiment).await? {
            None => None,
            Some((_, h)) => {
                let mut runs = if h.run_id.is_empty() {
                    Vec::new()
                } else {
                    r.runs_by_id(&experiment, &h.run_id).await?
                };
                let run = match runs.pop() {
                    Some(last) => r.attempts(vec![last]).await?.pop(),
                    None => None,
                };
                Some(head_view(h, run.as_ref()))
            }
        };
        let tally = r.tally().await?;
        let mine = tally.experiment(&experiment);
        let counts = mine
            .outcomes
            .iter()
            .map(|(k, n)| (OutcomeStatus::from_word(k), *n as usize))
            .collect();
        let active = r
            .runs_keyed(current::ACTIVE, &experiment, false, None)
            .await?;
        let entities: Vec<EntityId> = active.iter().map(|(e, _)| *e).collect();
        let outcomes = r.outcomes(&entities).await?;
        let in_flight = active
            .iter()
            .filter(|(_, run)| run.status().is_ok_and(RunStatus::is_active))
            .map(|(e, run)| {
                (
                    run.run_id.clone(),
                    run.status.clone(),
                    AttemptState::of(run, outcomes.get(e)).as_str(),
                    run.started_at_ms,
                )
            })
            .collect();
        let waiting = r
            .runs_keyed(current::PENDING, &experiment, false, None)
            .await?;
        let entities: Vec<EntityId> = waiting.iter().map(|(e, _)| *e).collect();
        let outcomes = r.outcomes(&entities).await?;
        let mut pending = Vec::new();
        for (e, run) in &waiting {
            let Some(o) = outcomes.get(e) else { continue };
            let votes = r
                .joined::<Vote>(current::VOTE_ON, &run.run_id)
                .await?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            pending.push(pending_view(run, o, votes));
        }
        // Only the last one is shown.
        let last_voted = r
            .runs_keyed(current::VOTED, &experiment, true, Some(1))
            .await?;
        let entities: Vec<EntityId> = last_voted.iter().map(|(e, _)| *e).collect();
        let outcomes = r.outcomes(&entities).await?;
        let voted = last_voted
            .iter()
            .filter_map(|(e, run)| {
                let o = outcomes.get(e)?;
                Some((run.run_id.clone(), o.status.clone(), o.reason.clone()))
            })
            .collect();
        let noise = match &exp {
            Some((e, _)) => r.get::<NoiseModel>(&[*e]).await?.pop().map(|(_, m)| m),
            None => None,
        };
        let jobs = r
            .all::<autoresearch_core::ExecutorJob>()
            .await?
            .into_iter()
            .map(|(_, j)| j)
            .collect();
        let view = StatusView {
            experiment,
            world: target.world.clone(),
            tick: r.tick().0,
            fork_of: target.fork_of.clone(),
            branch: None,
            branch_tip: None,
            branch_state: BranchState::Unknown,
            head,
            counts,
            attempts: mine.attempts as usize,
            in_flight,
            loop_running: None,
            pending,
            voted,
            now_ms: now_ms(),
            cost: None,
            budget: None,
            noise: crate::noise_status::noise_text(noise.as_ref()),
            jobs,
        };
        Ok(view.finish(target, exp.map(|(_, e)| e).as_ref(), tally.cost.to_cost()))
    }

    /// [`StatusView::read`] from the world materialized at its head.
    async fn read_world(target: &Target, experiment: String) -> anyhow::Result<StatusView> {
        let w = target.open(None).await?;
        // One pass over the world's runs by reference (no Run, Result or
        // Outcome cloned but the few shown): at a million attempts,
        // grouping every Result by run (as `attempts` does) is most of
        // the time.
        let mut query = w.hecs().query::<(&EntityId, &Run, Option<&Outcome>)>();
        let mut all: Vec<(EntityId, &Run, Option<&Outcome>)> = query
            .iter()
            .filter(|(_, r, _)| r.experiment_name == experiment)
            .map(|(id, r, o)| (*id, r, o))
            .collect();
        all.sort_by_key(|(id, _, _)| *id);
        let head = w.branch_head(&experiment).map(|(_, h)| {
            let run = all
                .iter()
                .rev()
                .find(|(_, r, _)| r.run_id == h.run_id && !h.run_id.is_empty())
                .map(|(id, r, _)| Attempt::of(&w, *id, (*r).clone()));
            head_view(h, run.as_ref())
        });
        let mut counts = HashMap::new();
        for (_, _, o) in &all {
            if let Some(o) = o {
                *counts.entry(o.status.clone()).or_insert(0) += 1;
            }
        }
        let in_flight = all
            .iter()
            .filter(|(_, r, _)| r.status().is_ok_and(RunStatus::is_active))
            .map(|(_, r, o)| {
                (
                    r.run_id.clone(),
                    r.status.clone(),
                    AttemptState::of(r, *o).as_str(),
                    r.started_at_ms,
                )
            })
            .collect();
        let votes_on = |run_id: &str| -> Vec<Vote> {
            w.find_all::<Vote>(|v| v.run_id == run_id)
                .into_iter()
                .map(|(_, v)| v)
                .collect()
        };
        let pending = all
            .iter()
            .filter_map(|(_, r, o)| {
                let o = (*o)?;
                (o.status == OutcomeStatus::Pending)
                    .then(|| pending_view(r, o, votes_on(&r.run_id)))
            })
            .collect();
        let voted = all
            .iter()
            .filter_map(|(_, r, o)| {
                let o = (*o)?;
                let by_vote = o.comparator.starts_with("vote")
                    && matches!(o.status, OutcomeStatus::Keep | OutcomeStatus::Discard);
                by_vote.then(|| (r.run_id.clone(), o.status.clone(), o.reason.clone()))
            })
            .collect();
        let attempt_count = all.len();
        drop(all);
        drop(query);
        let spent = crate::decision_view::world_cost(&w);
        let noise = crate::noise_status::noise_line(&w, &experiment);
        let jobs = w
            .find_all::<autoresearch_core::ExecutorJob>(|_| true)
            .into_iter()
            .map(|(_, j)| j)
            .collect();
        let exp = w.experiment(&experiment).map(|(_, e)| e);
        let view = StatusView {
            experiment,
            world: target.world.clone(),
            tick: w.tick().0,
            fork_of: target.fork_of.clone(),
            branch: None,
            branch_tip: None,
            branch_state: BranchState::Unknown,
            head,
            counts,
            attempts: attempt_count,
            in_flight,
            loop_running: None,
            pending,
            voted,
            now_ms: now_ms(),
            cost: None,
            budget: None,
            noise,
            jobs,
        };
        Ok(view.finish(target, exp.as_ref(), spent))
    }

    /// Fills in what both reads share: the cost and budget from `spent`,
    /// and the branch against the head (from the config, else the
    /// experiment's record `exp`).
    fn finish(mut self, target: &Target, exp: Option<&Experiment>, spent: RunCost) -> StatusView {
        self.budget = target
            .config
            .as_ref()
            .and_then(|c| c.run.cost_budget.as_ref())
            .map(|b| crate::decision_view::budget_line(b, &spent));
        self.cost = (spent.jobs > 0).then_some(spent);
        let branch = target.branch_of(exp);
        let repo = target.repo_of(exp);
        let branch_tip = match (&repo, &branch) {
            (Some(repo), Some(b)) => Git::new(repo).branch_tip(b).ok().flatten(),
            _ => None,
        };
        self.branch_state = match (&repo, &branch_tip, &self.head) {
            (None, _, _) => BranchState::Unknown,
            (Some(_), None, _) => BranchState::Missing,
            (Some(_), Some(t), Some(h)) if *t != h.commit => BranchState::Moved(t.clone()),
            (Some(_), Some(_), _) => BranchState::AtHead,
        };
        self.branch = branch;
        self.branch_tip = branch_tip;
        self
    }

    fn count(&self, s: OutcomeStatus) -> usize {
        self.counts.get(&s).copied().unwrap_or(0)
    }

    /// The view as JSON: every field `status --json` printed before, plus
    /// `fork_of` for a fork.
    pub fn to_json(&self) -> Value {
        let mut v = Map::new();
        v.insert("experiment".into(), json!(self.experiment));
        v.insert("world".into(), json!(self.world));
        v.insert("tick".into(), json!(self.tick));
        v.insert("branch".into(), json!(self.branch));
        v.insert("branch_tip".into(), json!(self.branch_tip));
        if let Some(f) = &self.fork_of {
            v.insert("fork_of".into(), json!({"world": f.parent, "tick": f.tick}));
        }
        v.insert(
            "head".into(),
            self.head.as_ref().map_or(Value::Null, |h| {
                json!({
                    "commit": h.commit, "run_id": h.run_id,
                    "descriptor": h.descriptor, "updated_at_ms": h.updated_at_ms,
                })
            }),
        );
        v.insert("attempts".into(), json!(self.attempts));
        v.insert("kept".into(), json!(self.count(OutcomeStatus::Keep)));
        v.insert(
            "discarded".into(),
            json!(self.count(OutcomeStatus::Discard)),
        );
        v.insert("crashed".into(), json!(self.count(OutcomeStatus::Crash)));
        v.insert(
            "baselines".into(),
            json!(self.count(OutcomeStatus::Baseline)),
        );
        v.insert(
            OutcomeStatus::Pending.as_str().into(),
            self.pending
                .iter()
                .map(|p| {
                    json!({
                        "run_id": p.run_id, "commit": p.commit, "votes": p.votes.len(),
                        "reason": p.reason,
                    })
                })
                .collect(),
        );
        v.insert(
            "in_flight".into(),
            self.in_flight
                .iter()
                .map(|(id, st, _, at)| json!({"run_id": id, "status": st, "started_at_ms": at}))
                .collect(),
        );
        // Only where runs are in flight (what it tells of): a status with
        // none prints what it always did.
        if let Some(running) = self.loop_running.filter(|_| !self.in_flight.is_empty()) {
            v.insert("loop_running".into(), json!(running));
        }
        // Only experiments that recorded costs get the key: older ledgers
        // read unchanged.
        if let Some(c) = &self.cost {
            v.insert("cost".into(), crate::decision_view::cost_json(c));
        }
        // Scheduler jobs (Slurm), only where there are any: the output of a
        // ledger without them is what it always was.
        if !self.jobs.is_empty() {
            v.insert(
                "jobs".into(),
                self.jobs
                    .iter()
                    .map(|j| {
                        json!({
                            "run_id": j.run_id, "step": j.step, "executor": j.executor,
                            "job_id": j.job_id, "state": j.state.as_str(), "reason": j.reason,
                            "at_ms": j.at_ms,
                        })
                    })
                    .collect(),
            );
        }
        Value::Object(v)
    }

    /// The view as plain lines.
    pub fn lines(&self) -> Lines {
        let mut l = Lines::default();
        l.push(
            "experiment",
            format!(
                "{} (world {}, tick {})",
                self.experiment, self.world, self.tick
            ),
        );
        if let Some(f) = &self.fork_of {
            l.push("fork", format!("of {} at tick {}", f.parent, f.tick));
        }
        match &self.head {
            Some(h) => {
                let run = if h.run_id.is_empty() {
                    "the seed".to_string()
                } else {
                    format!("run {}", h.run_id)
                };
                l.push(
                    "head",
                    format!(
                        "{} ({run}): {}",
                        short_commit(&h.commit),
                        means_text(&h.metrics)
                    ),
                );
                let why = match &h.reason {
                    Some(reason) => reason.clone(),
                    None => human::value(&h.descriptor),
                };
                if !why.is_empty() && why != "-" {
                    l.push("why", why);
                }
                if h.updated_at_ms > 0 {
                    l.push(
                        "since",
                        format!(
                            "{} ({} ago)",
                            human::local_time(h.updated_at_ms),
                            human::duration(self.now_ms - h.updated_at_ms)
                        ),
                    );
                }
            }
            None => {
                l.push(
                    "head",
                    "none yet (the first `autoresearch run` evaluates a baseline)",
                );
            }
        }
        let branch = self.branch.as_deref().unwrap_or("-");
        let run_hint = if self.fork_of.is_some() {
            format!("`autoresearch run --world {}`", self.world)
        } else {
            "`autoresearch run`".to_string()
        };
        match &self.branch_state {
            BranchState::AtHead => l.push("branch", format!("{branch} at the head")),
            BranchState::Moved(t) => l.push(
                "branch",
                format!(
                    "{branch} is at {}: moved outside the loop (adopted as a baseline by the next {run_hint})",
                    short_commit(t)
                ),
            ),
            BranchState::Missing if self.fork_of.is_some() => l.push(
                "branch",
                format!("{branch} does not exist yet ({run_hint} creates it at the fork's head)"),
            ),
            BranchState::Missing => l.push("branch", format!("{branch} does not exist")),
            BranchState::Unknown => l.push("branch", format!("{branch} (no local repository)")),
        };
        l.push(
            "attempts",
            format!(
                "{} ({} kept, {} discarded, {} crashed, {} pending, {} baselines)",
                self.attempts,
                self.count(OutcomeStatus::Keep),
                self.count(OutcomeStatus::Discard),
                self.count(OutcomeStatus::Crash),
                self.pending.len(),
                self.count(OutcomeStatus::Baseline)
            ),
        );
        if let Some(n) = &self.noise {
            l.push("noise", n.clone());
        }
        if let Some(c) = &self.cost {
            l.push("cost", crate::decision_view::cost_line(c));
        }
        if let Some(b) = &self.budget {
            l.push("budget", b.clone());
        }
        for (id, _, step, at) in &self.in_flight {
            let stopped = if self.loop_running == Some(false) {
                "; no loop is running it: the next `run` on this world records it as interrupted"
            } else {
                ""
            };
            l.push(
                "in flight",
                format!(
                    "{id} ({step}, started {}{stopped})",
                    human::span(*at, 0, self.now_ms, true)
                ),
            );
        }
        // Each scheduler job still queued or running, and the last few ended.
        let ended: Vec<&autoresearch_core::ExecutorJob> =
            self.jobs.iter().filter(|j| j.is_final()).collect();
        let recent = &ended[ended.len().saturating_sub(5)..];
        for j in self
            .jobs
            .iter()
            .filter(|j| !j.is_final())
            .chain(recent.iter().copied())
        {
            let reason = if j.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", j.reason)
            };
            l.push(
                "job",
                format!(
                    "{} {} {} of run {} {}{reason}",
                    j.executor, j.job_id, j.step, j.run_id, j.state
                ),
            );
        }
        for p in &self.pending {
            let so_far = match p.quorum {
                Some(q) => format!("{} of {q} votes", p.votes.len()),
                None => format!("{} votes so far", p.votes.len()),
            };
            l.push(
                "waiting",
                format!(
                    "{} for a vote ({so_far}): autoresearch vote {} keep|discard",
                    p.run_id, p.run_id
                ),
            );
        }
        if let Some((id, st, reason)) = self.voted.last() {
            l.push("voted", format!("{id}: {st} ({reason})"));
        }
        l
    }
}

/// `autoresearch status`.
/// Whether a loop on this host holds `world`'s lease lock
/// ([`autoresearch_controller::lock_holder`] of
/// [`crate::ledger::lease_lock_path`]).
pub fn loop_alive(ledger: &Path, world: &str) -> bool {
    autoresearch_controller::lock_holder(&crate::ledger::lease_lock_path(ledger, world)).is_some()
}

pub async fn status(ledger_path: &Path, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let Some(every) = args.watch else {
        let target = args.target.resolve(ledger_path).await?;
        let mut view = StatusView::read(&target).await?;
        view.loop_running = Some(loop_alive(ledger_path, &view.world));
        if args.json {
            println!("{}", serde_json::to_string_pretty(&view.to_json())?);
        } else {
            print!("{}", view.lines().render());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let every = std::time::Duration::from_secs(every.max(1));
    let terminal = std::io::stdout().is_terminal();
    loop {
        // The ledger is opened afresh each time: a read-only open sees
        // what was committed before it.
        let text = match args.target.resolve(ledger_path).await {
            Ok(target) => match StatusView::read(&target).await.map(|mut v| {
                v.loop_running = Some(loop_alive(ledger_path, &v.world));
                v
            }) {
                Ok(view) if args.json => serde_json::to_string(&view.to_json())? + "\n",
                Ok(view) => view.lines().render(),
                Err(e) => format!("error: {e:#}\n"),
            },
            Err(e) => format!("error: {e:#}\n"),
        };
        if terminal && !args.json {
            // Clear the screen and go home, then the frame.
            print!("\x1b[2J\x1b[H{text}");
        } else if args.json {
            print!("{text}");
        } else {
            println!("{text}");
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}
