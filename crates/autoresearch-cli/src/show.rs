//! One run and its code: `show` (a [`ShowView`], rendered as plain lines or
//! JSON), `best`, `diff RUN RUN` and `checkout RUN`.

use crate::human::{self, Lines};
use crate::status::{means, means_text};
use crate::target::{Target, TargetArgs};
use anyhow::{Context, bail};
use autoresearch_controller::git::Git;
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts};
use autoresearch_core::num::fmt_f64;
use autoresearch_core::query::{CurrentReader, QueryError};
use autoresearch_core::{
    Confirmation, EntityId, EvalResult, OutcomeStatus, Run, RunCost, World, now_ms, short_commit,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch show 19ab3c4d5e6-a3f2\n  autoresearch show 19ab3c --diff\n  \
    autoresearch show 19ab3c --world what-if --json"
)]
pub struct ShowArgs {
    /// The run's id, or a unique prefix of it.
    pub run_id: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the candidate's whole diff against its base after the summary.
    #[arg(long)]
    pub diff: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch best\n  autoresearch best --experiment nano --json"
)]
pub struct BestArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch diff 19ab3c 1a22a3\n  autoresearch diff 19ab3c 1a22a3 --stat"
)]
pub struct DiffArgs {
    /// The run whose commit is the old side (id or unique prefix).
    pub from: String,
    /// The run whose commit is the new side (id or unique prefix).
    pub to: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Only the diff stat.
    #[arg(long)]
    pub stat: bool,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch checkout 19ab3c                 # new branch autoresearch/run-19ab3c..., switched to\n  \
    autoresearch checkout 19ab3c --worktree ../try-19ab3c --branch try\n\n\
    Never over your edits: without --worktree the checkout must have no local changes;\n\
    an existing branch is never moved."
)]
pub struct CheckoutArgs {
    /// The run whose candidate commit to check out (id or unique prefix).
    pub run_id: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// The new branch's name [default: autoresearch/run-{run_id}].
    #[arg(long)]
    pub branch: Option<String>,
    /// Check out into a new worktree at this path instead of switching this checkout.
    #[arg(long, value_name = "PATH")]
    pub worktree: Option<PathBuf>,
}

/// The run `id` names (whole, or a unique prefix) among `all`.
pub fn find_run<'a>(all: &'a [Attempt], id: &str) -> anyhow::Result<&'a Attempt> {
    pick_run(all, id, |a| a.run.run_id.as_str())
}

/// [`find_run`] over any list of runs, `run_id` naming each.
fn pick_run<'a, T>(all: &'a [T], id: &str, run_id: impl Fn(&T) -> &str) -> anyhow::Result<&'a T> {
    if let Some(a) = all.iter().find(|a| run_id(a) == id) {
        return Ok(a);
    }
    let matches: Vec<&T> = all.iter().filter(|a| run_id(a).starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!("no run {id:?} in this experiment (see `autoresearch log`)"),
        many => bail!(
            "{id:?} matches {} runs ({}...); give more of the id",
            many.len(),
            many.iter()
                .take(3)
                .map(|a| run_id(a))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The attempt of run `id` (or a unique prefix) of `experiment`, as
/// [`find_run`] finds it in [`attempts`], reading only that run's Results
/// and Outcome: the runs are scanned by reference, nothing else cloned.
fn find_attempt(w: &World, experiment: &str, id: &str) -> anyhow::Result<Attempt> {
    let mut query = w.hecs().query::<(&EntityId, &Run)>();
    let mut runs: Vec<(EntityId, &Run)> = query
        .iter()
        .filter(|(_, r)| r.experiment_name == experiment)
        .map(|(e, r)| (*e, r))
        .collect();
    runs.sort_by_key(|(e, _)| *e);
    let (entity, run) = *pick_run(&runs, id, |(_, r)| r.run_id.as_str())?;
    Ok(Attempt::of(w, entity, run.clone()))
}

/// The attempt of run `id` (or a unique prefix) of `experiment`, its
/// experiment's repository, and the run's cost and confirmation, from the
/// ledger's current state (as [`find_attempt`] finds it, reading only
/// that run). Cost: O(log n), or O(runs matched) for a prefix.
async fn read_current(
    target: &Target,
    r: &CurrentReader,
    experiment: &str,
    id: &str,
) -> anyhow::Result<(
    Attempt,
    Option<PathBuf>,
    (Option<RunCost>, Option<Confirmation>),
)> {
    let exact = r.runs_by_id(experiment, id).await?;
    let (entity, run) = match exact.into_iter().next() {
        Some(first) => first,
        None => {
            let mut matches = r.runs_by_prefix(experiment, id, None).await?;
            matches.sort_by_key(|(e, _)| *e);
            pick_run(&matches, id, |(_, r)| r.run_id.as_str())?.clone()
        }
    };
    let a = r
        .attempts(vec![(entity, run)])
        .await?
        .pop()
        .ok_or(QueryError::BadAnswer { world: r.world() })?;
    let exp = r.experiment(experiment).await?.map(|(_, e)| e);
    let cost = r.get::<RunCost>(&[entity]).await?.pop().map(|(_, c)| c);
    let confirmation = r
        .get::<Confirmation>(&[entity])
        .await?
        .pop()
        .map(|(_, c)| c);
    Ok((a, target.repo_of(exp.as_ref()), (cost, confirmation)))
}

/// What was tried in an attempt, in a few words: the candidate commit's
/// subject line, else (no repository, or git cannot read it) the subject
/// of the description stored with the run.
pub fn idea(git: Option<&Git>, a: &Attempt) -> Option<String> {
    ideas(git, std::slice::from_ref(a))
        .remove(&a.run.run_id)
        .or_else(|| {
            a.description
                .as_ref()
                .map(|d| d.subject().to_string())
                .filter(|s| !s.is_empty())
        })
}

/// [`idea`] of many attempts, by run id, with one git process (one per
/// attempt only when a commit is missing from the repository).
pub fn ideas(git: Option<&Git>, attempts: &[Attempt]) -> HashMap<String, String> {
    let Some(git) = git else {
        return HashMap::new();
    };
    let with_commit: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| !a.run.commit_hash.is_empty())
        .collect();
    if with_commit.is_empty() {
        return HashMap::new();
    }
    let mut args = vec!["log", "--no-walk=unsorted", "--format=%H%x09%s"];
    args.extend(with_commit.iter().map(|a| a.run.commit_hash.as_str()));
    let subjects: HashMap<String, String> = match git.run(&args) {
        Ok(out) => out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(h, s)| (h.to_string(), s.to_string()))
            .collect(),
        // A commit the repository lacks fails the whole call: ask one by one.
        Err(_) => with_commit
            .iter()
            .filter_map(|a| {
                let s = git.subject(&a.run.commit_hash).ok()?;
                Some((a.run.commit_hash.clone(), s))
            })
            .collect(),
    };
    with_commit
        .iter()
        .filter_map(|a| {
            let s = subjects.get(&a.run.commit_hash)?;
            // The loop's own message for a proposer that did not commit
            // (`autoresearch RUN: ...`) says nothing of the idea.
            let loops_own = s.starts_with(&format!("autoresearch {}:", a.run.run_id));
            (!s.is_empty() && !loops_own).then(|| (a.run.run_id.clone(), s.clone()))
        })
        .collect()
}

/// One sample as `show` lists it.
pub struct SampleView {
    /// The evaluator's name.
    pub evaluator: String,
    /// Its metrics, as measured.
    pub metrics: BTreeMap<String, Value>,
    /// The evaluator's exit code, when recorded.
    pub exit_code: Option<i32>,
    /// Time spent, in milliseconds, when recorded.
    pub duration_ms: Option<u64>,
    /// When it finished.
    pub at_ms: i64,
    /// The commit measured, when it is not the run's final one (before a rebase).
    pub other_commit: Option<String>,
}

/// Everything `show` prints about one run, read once.
pub struct ShowView {
    /// The run.
    pub run: Run,
    /// Its decision.
    pub outcome: Option<Outcome>,
    /// What was tried ([`idea`]).
    pub idea: Option<String>,
    /// The commit it was measured against.
    pub base: String,
    /// Metric means over the final samples.
    pub means: BTreeMap<String, (f64, usize)>,
    /// Every sample, in order.
    pub samples: Vec<SampleView>,
    /// The raw Results (for `--json`).
    pub results: Vec<EvalResult>,
    /// Files the proposer left ignored, never evaluated.
    pub left_out: Vec<String>,
    /// `git diff --stat` against the base.
    pub diff_stat: String,
    /// The candidate's ref, when it exists.
    pub candidate_ref: Option<String>,
    /// The run's log files that exist.
    pub logs: Vec<String>,
    /// When this was read.
    pub now_ms: i64,
    /// Its cost, when recorded.
    pub cost: Option<RunCost>,
    /// Its held-out confirmation, when one ran.
    pub confirmation: Option<Confirmation>,
}

impl ShowView {
    /// Reads the view of run `id` (or a unique prefix) of `target`.
    pub async fn read(target: &Target, id: &str) -> anyhow::Result<(ShowView, Option<Git>)> {
        let experiment = target.experiment()?.to_string();
        let mut fast = None;
        if let Some(r) = crate::current_read::reader(target).await {
            match read_current(target, &r, &experiment, id).await {
                Err(e) if crate::current_read::from_ledger(&e) => {
                    crate::current_read::fell_back(target, &e);
                }
                other => fast = Some(other?),
            }
        }
        let (a, repo, (cost, confirmation)) = match fast {
            Some(read) => read,
            None => {
                let w = target.open(None).await?;
                let a = find_attempt(&w, &experiment, id)?;
                let extras = crate::decision_view::run_extras(&w, a.entity);
                (a, target.repo(&w), extras)
            }
        };
        let git = repo.as_ref().map(Git::new);
        let base = a
            .outcome
            .as_ref()
            .map(|o| o.base_commit.clone())
            .unwrap_or_default();
        let (diff_stat, candidate_ref, the_idea) = match git.clone() {
            Some(g) => {
                let (b, c, exp, run_id) = (
                    base.clone(),
                    a.run.commit_hash.clone(),
                    experiment.clone(),
                    a.run.run_id.clone(),
                );
                let a2 = a.clone();
                tokio::task::spawn_blocking(move || {
                    let stat = if !b.is_empty() && !c.is_empty() {
                        g.diff_stat(&b, &c)
                            .unwrap_or_else(|e| format!("(diff unavailable: {e})"))
                    } else {
                        String::new()
                    };
                    let refname = format!("refs/autoresearch/{exp}/{run_id}");
                    let exists = g.resolve(&refname).ok().flatten().is_some();
                    (stat, exists.then_some(refname), idea(Some(&g), &a2))
                })
                .await?
            }
            None => (String::new(), None, None),
        };
        let logs = repo
            .map(|r| r.join(".autoresearch").join("runs").join(&a.run.run_id))
            .and_then(|dir| std::fs::read_dir(dir).ok())
            .map(|d| {
                let mut l: Vec<String> = d
                    .flatten()
                    .map(|e| e.path().display().to_string())
                    .filter(|p| p.ends_with(".log"))
                    .collect();
                l.sort();
                l
            })
            .unwrap_or_default();
        let samples = a
            .results
            .iter()
            .map(|r| {
                let metrics = match r.outputs() {
                    Ok(Value::Object(o)) => o
                        .into_iter()
                        .filter(|(k, v)| !k.starts_with('_') && !v.is_object())
                        .collect(),
                    _ => BTreeMap::new(),
                };
                let meta = r.meta();
                SampleView {
                    evaluator: r.evaluator.clone(),
                    metrics,
                    exit_code: meta.as_ref().and_then(|m| m.exit_code),
                    duration_ms: meta.as_ref().map(|m| m.duration_ms),
                    at_ms: r.evaluated_at_ms,
                    other_commit: meta
                        .map(|m| m.commit)
                        .filter(|c| !c.is_empty() && *c != a.run.commit_hash),
                }
            })
            .collect();
        let left_out = a
            .results
            .iter()
            .filter_map(EvalResult::meta)
            .flat_map(|m| m.left_out)
            .collect();
        Ok((
            ShowView {
                means: means(&a),
                run: a.run.clone(),
                outcome: a.outcome.clone(),
                idea: the_idea,
                base,
                samples,
                results: a.results.clone(),
                left_out,
                diff_stat,
                candidate_ref,
                logs,
                now_ms: now_ms(),
                cost,
                confirmation,
            },
            git,
        ))
    }

    /// The view as JSON: every stored field.
    pub fn to_json(&self) -> Value {
        json!({
            "run": serde_json::to_value(&self.run).unwrap_or(Value::Null),
            "outcome": self.outcome.as_ref().map_or(Value::Null, |o| json!({
                "status": o.status,
                "reason": o.reason,
                "descriptor": o.descriptor().unwrap_or(Value::Null),
                "base_commit": o.base_commit,
                "comparator": o.comparator,
                "decided_at_ms": o.decided_at_ms,
            })),
            "idea": self.idea,
            "confirmation": self.confirmation,
            "cost": self.cost.as_ref().map(crate::decision_view::cost_json),
            "means": self.means.iter().map(|(k, (x, n))| (k.clone(), json!({"mean": x, "samples": n}))).collect::<serde_json::Map<_, _>>(),
            "results": self.results.iter().map(|r| json!({
                "evaluator": r.evaluator,
                "evaluated_at_ms": r.evaluated_at_ms,
                "outputs": r.outputs().unwrap_or(Value::Null),
            })).collect::<Vec<_>>(),
            "diff_stat": self.diff_stat,
            "logs": self.logs,
            "candidate_ref": self.candidate_ref,
        })
    }

    /// The view as plain lines.
    pub fn lines(&self) -> Lines {
        let r = &self.run;
        let mut l = Lines::default();
        l.push("run", &r.run_id);
        match &self.outcome {
            Some(o) => l.push("decision", format!("{}: {}", o.status, o.reason)),
            None => l.push("decision", format!("not decided yet (run {})", r.status)),
        };
        l.push_some("idea", self.idea.clone());
        let commit = if r.commit_hash.is_empty() {
            "none (the proposer made no candidate)".to_string()
        } else {
            r.commit_hash.clone()
        };
        l.push("commit", commit);
        if !self.base.is_empty() {
            l.push("base", &self.base);
        }
        if !r.agent_name.is_empty() || !r.harness.is_empty() {
            l.push(
                "agent",
                format!("{} ({}, on {})", r.agent_name, r.harness, r.vm_name),
            );
        }
        if !r.task.is_empty() && Some(&r.task) != self.idea.as_ref() {
            l.push("task", one_line(&r.task, 100));
        }
        l.push(
            "time",
            human::span(
                r.started_at_ms,
                r.finished_at_ms,
                self.now_ms,
                r.status()
                    .is_ok_and(autoresearch_core::RunStatus::is_active),
            ),
        );
        if !r.workspace_path.is_empty() && Path::new(&r.workspace_path).exists() {
            l.push("workspace", &r.workspace_path);
        }
        if !self.means.is_empty() {
            l.push("metrics", means_text(&self.means));
        }
        for (i, s) in self.samples.iter().enumerate() {
            let mut parts = vec![if s.metrics.is_empty() {
                "no metrics".to_string()
            } else {
                s.metrics
                    .iter()
                    .map(|(k, v)| match v.as_f64() {
                        Some(x) => format!("{k} {}", fmt_f64(x)),
                        None => format!("{k} {}", human::value(v)),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }];
            if let Some(c) = s.exit_code {
                parts.push(format!("exit {c}"));
            }
            if let Some(d) = s.duration_ms {
                parts.push(human::duration(d as i64));
            }
            parts.push(human::local_time(s.at_ms));
            if let Some(c) = &s.other_commit {
                parts.push(format!("on {} before a rebase", short_commit(c)));
            }
            if s.evaluator != "evaluate" && !s.evaluator.is_empty() {
                parts.push(format!("by {}", s.evaluator));
            }
            l.push(format!("sample {i}"), parts.join(" · "));
        }
        if let Some(c) = &self.confirmation {
            l.push("confirm", crate::decision_view::confirm_line(c));
        }
        if let Some(c) = &self.cost {
            l.push("cost", crate::decision_view::cost_line(c));
        }
        if let Some(o) = &self.outcome {
            if !o.comparator.is_empty() {
                l.push("comparator", &o.comparator);
            }
            if o.decided_at_ms > 0 {
                l.push("decided", human::local_time(o.decided_at_ms));
            }
            let mut pairs = Vec::new();
            human::flatten("", &o.descriptor().unwrap_or(Value::Null), &mut pairs);
            let (long, short): (Vec<_>, Vec<_>) = pairs
                .into_iter()
                .filter(|(k, v)| !k.is_empty() && !v.trim().is_empty() && v != "-")
                .filter(|(k, _)| k != "comparator")
                // Log paths are listed below, when the files still exist.
                .filter(|(k, _)| !k.ends_with("_log"))
                .partition(|(k, v)| k.ends_with("_tail") || v.contains('\n') || v.len() > 60);
            if !short.is_empty() {
                l.push(
                    "evidence",
                    short
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
            for (k, v) in long {
                // An error tail as text under `stderr` or `stdout`.
                let label = k.strip_suffix("_tail").unwrap_or(&k).replace('_', " ");
                l.push(label, v);
            }
        }
        if !self.left_out.is_empty() {
            l.push(
                "left out",
                format!("{} (ignored, not evaluated)", self.left_out.join(", ")),
            );
        }
        if !self.diff_stat.is_empty() {
            let stat: Vec<&str> = self.diff_stat.lines().map(str::trim).collect();
            l.push("diff", stat.join("\n"));
        }
        l.push_some("candidate", self.candidate_ref.clone());
        for log in &self.logs {
            l.push("log", log);
        }
        l
    }
}

/// The first line of `s`, cut to `max` characters (an ellipsis marks a cut).
fn one_line(s: &str, max: usize) -> String {
    let first = s.trim().lines().next().unwrap_or("");
    let cut: String = first.chars().take(max).collect();
    if cut.len() < s.trim().len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// `autoresearch show`.
pub async fn show(ledger_path: &Path, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let target = args.target.resolve(ledger_path).await?;
    let (view, git) = ShowView::read(&target, &args.run_id).await?;
    if args.json {
        let mut v = view.to_json();
        if args.diff {
            v["diff"] = json!(full_diff(git.as_ref(), &view)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", view.lines().render());
    if args.diff {
        println!("\n{}", full_diff(git.as_ref(), &view)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn full_diff(git: Option<&Git>, view: &ShowView) -> anyhow::Result<String> {
    let git = git.context("no local repository to read the diff from")?;
    if view.run.commit_hash.is_empty() || view.base.is_empty() {
        bail!(
            "run {} has no candidate commit and base to diff",
            view.run.run_id
        );
    }
    git.diff(&view.base, &view.run.commit_hash)
        .with_context(|| format!("diffing run {}", view.run.run_id))
}

/// The commit of run `id`, or an error saying why it has none.
fn commit_of<'a>(all: &'a [Attempt], id: &str) -> anyhow::Result<&'a Attempt> {
    let a = find_run(all, id)?;
    if a.run.commit_hash.is_empty() {
        let why = a
            .outcome
            .as_ref()
            .map(|o| format!(" (its decision: {}: {})", o.status, o.reason))
            .unwrap_or_default();
        bail!("run {} made no candidate commit{why}", a.run.run_id);
    }
    Ok(a)
}

async fn open_with_repo(
    ledger_path: &Path,
    target: &TargetArgs,
) -> anyhow::Result<(Target, World, Vec<Attempt>, Git)> {
    let target = target.resolve(ledger_path).await?;
    let w = target.open(None).await?;
    let all = attempts(&w, target.experiment()?);
    let repo = target.require_repo(&w)?;
    Ok((target, w, all, Git::new(repo)))
}

/// `autoresearch diff RUN RUN`.
pub async fn diff(ledger_path: &Path, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let (_, _, all, git) = open_with_repo(ledger_path, &args.target).await?;
    let from = commit_of(&all, &args.from)?;
    let to = commit_of(&all, &args.to)?;
    let mut cmd = vec!["diff"];
    if args.stat {
        cmd.push("--stat");
    }
    cmd.extend([from.run.commit_hash.as_str(), to.run.commit_hash.as_str()]);
    let out = git.run(&cmd).with_context(|| {
        format!(
            "diffing run {} against run {}",
            from.run.run_id, to.run.run_id
        )
    })?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `autoresearch checkout RUN`: a new branch at the run's commit, switched
/// to in a clean checkout or made in a new worktree.
pub async fn checkout(ledger_path: &Path, args: CheckoutArgs) -> anyhow::Result<ExitCode> {
    let (_, _, all, git) = open_with_repo(ledger_path, &args.target).await?;
    let a = commit_of(&all, &args.run_id)?;
    let branch = args
        .branch
        .clone()
        .unwrap_or_else(|| format!("autoresearch/run-{}", a.run.run_id));
    if git.branch_tip(&branch)?.is_some() {
        bail!(
            "branch {branch} already exists; choose another with --branch (an existing branch is never moved)"
        );
    }
    let commit = a.run.commit_hash.as_str();
    match &args.worktree {
        Some(path) => {
            let p = path.display().to_string();
            git.run(&["worktree", "add", "-b", &branch, &p, commit])
                .with_context(|| format!("adding a worktree at {p}"))?;
            println!(
                "run {} ({}) checked out on new branch {branch} in worktree {p}",
                a.run.run_id,
                short_commit(commit)
            );
        }
        None => {
            let status = git
                .run(&["status", "--porcelain"])
                .context("reading the checkout's status")?;
            if !status.is_empty() {
                bail!(
                    "the checkout has local changes (`git status`); commit or stash them, or check the run out elsewhere with --worktree PATH"
                );
            }
            git.run(&["switch", "-c", &branch, commit])
                .with_context(|| format!("switching to a new branch {branch}"))?;
            println!(
                "run {} ({}) checked out on new branch {branch}",
                a.run.run_id,
                short_commit(commit)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The first objective of the comparator that decided the latest
/// outcome: (metric, whether lower is better).
pub fn primary_metric(all: &[Attempt]) -> Option<(String, bool)> {
    let spec = all
        .iter()
        .rev()
        .filter_map(|a| a.outcome.as_ref().map(|o| o.comparator.clone()))
        .find(|c| !c.is_empty())?;
    let (metric, direction) = autoresearch_compare::CompareSpec::parse(&spec)
        .ok()?
        .objectives()
        .into_iter()
        .next()?;
    Some((metric, direction.long() == "minimize"))
}

/// `autoresearch best`: the head, what it gained over the first baseline.
pub async fn best(ledger_path: &Path, args: BestArgs) -> anyhow::Result<ExitCode> {
    let target = args.target.resolve(ledger_path).await?;
    let experiment = target.experiment()?.to_string();
    let w = target.open(None).await?;
    let all = attempts(&w, &experiment);
    let Some((_, head)) = w.branch_head(&experiment) else {
        bail!(
            "experiment {experiment:?} has no head yet (the first `autoresearch run` evaluates a baseline)"
        );
    };
    let head_attempt = all.iter().rev().find(|a| a.run.run_id == head.run_id);
    let baseline = all.iter().find(|a| {
        a.outcome
            .as_ref()
            .is_some_and(|o| o.status == OutcomeStatus::Baseline || o.status == OutcomeStatus::Keep)
    });
    let primary = primary_metric(&all);
    let repo = target.repo(&w);
    let git = repo.as_ref().map(Git::new);
    let idea_text = head_attempt.and_then(|a| idea(git.as_ref(), a));
    let head_means = head_attempt.map(means).unwrap_or_default();
    let base_means = baseline.map(means).unwrap_or_default();
    let kept = all
        .iter()
        .filter(|a| {
            a.outcome
                .as_ref()
                .is_some_and(|o| o.status == OutcomeStatus::Keep)
        })
        .count();
    let gain = primary.as_ref().and_then(|(m, _)| {
        let (h, _) = head_means.get(m)?;
        let (b, _) = base_means.get(m)?;
        Some((m.clone(), *b, *h))
    });
    if args.json {
        let v = json!({
            "experiment": experiment,
            "world": target.world,
            "run_id": head.run_id,
            "commit": head.commit_hash,
            "idea": idea_text,
            "metrics": head_means.iter().map(|(k, (x, _))| (k.clone(), json!(x))).collect::<serde_json::Map<_, _>>(),
            "baseline": baseline.map(|a| json!({
                "run_id": a.run.run_id,
                "metrics": base_means.iter().map(|(k, (x, _))| (k.clone(), json!(x))).collect::<serde_json::Map<_, _>>(),
            })),
            "kept": kept,
            "attempts": all.len(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut l = Lines::default();
    l.push(
        "best",
        format!(
            "{} (run {})",
            short_commit(&head.commit_hash),
            if head.run_id.is_empty() {
                "-"
            } else {
                &head.run_id
            }
        ),
    );
    l.push_some("idea", idea_text);
    l.push("metrics", means_text(&head_means));
    if let Some((m, b, h)) = gain {
        let pct = if b != 0.0 {
            format!(", {}%", human::num((h - b) / b.abs() * 100.0))
        } else {
            String::new()
        };
        l.push(
            "gain",
            format!(
                "{m} {} -> {} ({}{pct}) since the baseline {}",
                human::num(b),
                human::num(h),
                human::num(h - b),
                baseline.map_or("-", |a| a.run.run_id.as_str())
            ),
        );
    }
    l.push("kept", format!("{kept} of {} attempts", all.len()));
    l.push("since", human::local_time(head.updated_at_ms));
    print!("{}", l.render());
    Ok(ExitCode::SUCCESS)
}
