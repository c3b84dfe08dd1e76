//! The comparison commands: `replay` (re-decide an experiment under another
//! comparator, into a fork), `fork` (a fork where a chosen run became head)
//! and `vote` (a human vote on a run waiting for one).

use crate::ledger;
use anyhow::{Context, bail};
use autoresearch_compare::replay::{
    ForkRequest, HeadPoint, ReplayReport, ReplayRequest, ReplayStep, cast_vote, fork_promoting,
    replay,
};
use autoresearch_controller::{Config, fork_branch_name};
use autoresearch_core::short_commit;
use autoresearch_core::{OutcomeStatus, Storage, Tick, World, experiment_world_name};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const CONFIG_FILE: &str = "autoresearch.toml";

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    autoresearch replay --experiment nanogpt --comparator stat:val_bpb:min:alpha=0.05\n  \
    autoresearch replay --experiment nanogpt --comparator scalar:val_bpb:min:delta=0.001 --from 40 --name strict\n  \
    autoresearch replay --experiment nanogpt --comparator pareto:val_bpb:min,memory_gb:min --json\n\n\
    No job is re-run: every later candidate is re-decided from its stored results. The fork can\n\
    be inspected like any world (--world FORK) and continued with `autoresearch run --world FORK`.")]
pub struct ReplayArgs {
    /// The experiment [default: the name in autoresearch.toml].
    #[arg(long)]
    pub experiment: Option<String>,
    /// The comparator to re-decide with, e.g. scalar:val_bpb:min (see docs/comparators.md).
    #[arg(long)]
    pub comparator: String,
    /// Fork at this tick [default: the tick that created the experiment].
    #[arg(long, value_name = "TICK")]
    pub from: Option<u64>,
    /// The fork's world name [default: {experiment}-replay-{kind}, numbered if taken].
    #[arg(long, value_name = "FORK")]
    pub name: Option<String>,
    /// The world to replay [default: autoresearch:{experiment}].
    #[arg(long)]
    pub world: Option<String>,
    /// The config file naming the experiment, when --experiment is not given.
    #[arg(long, default_value = CONFIG_FILE)]
    pub config: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    autoresearch fork --experiment nanogpt --at 57 --promote 19ab3c4d5e6-a3f2 --name what-if\n  \
    autoresearch run --world what-if      # continue there, on branch autoresearch/what-if\n\n\
    The run may be any run of the experiment with a commit (its id or a unique prefix);\n\
    find ticks with `autoresearch history RUN_ID --world autoresearch:EXPERIMENT`.")]
pub struct ForkArgs {
    /// The experiment [default: the name in autoresearch.toml].
    #[arg(long)]
    pub experiment: Option<String>,
    /// The tick at which the run becomes head.
    #[arg(long, value_name = "TICK")]
    pub at: u64,
    /// The run to make head (id or unique prefix).
    #[arg(long, value_name = "RUN_ID")]
    pub promote: String,
    /// The fork's world name [default: {experiment}-fork-{run}].
    #[arg(long, value_name = "FORK")]
    pub name: Option<String>,
    /// The world to fork [default: autoresearch:{experiment}].
    #[arg(long)]
    pub world: Option<String>,
    /// The config file naming the experiment, when --experiment is not given.
    #[arg(long, default_value = CONFIG_FILE)]
    pub config: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum VoteVerdict {
    Keep,
    Discard,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    autoresearch vote 19ab3c4d5e6-a3f2 keep --reason \"cleaner, same speed\"\n  \
    autoresearch vote 19ab3c discard --experiment nanogpt --voter ana\n\n\
    `autoresearch status` lists the runs waiting for votes; the loop decides them once a\n\
    quorum has voted (comparator vote:quorum=N).")]
pub struct VoteArgs {
    /// The run voted on (id or unique prefix).
    pub run_id: String,
    /// keep or discard.
    #[arg(value_enum)]
    pub verdict: VoteVerdict,
    /// Why, for the record.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Who votes [default: $USER].
    #[arg(long)]
    pub voter: Option<String>,
    /// The experiment [default: the name in autoresearch.toml].
    #[arg(long)]
    pub experiment: Option<String>,
    /// The world to vote in [default: autoresearch:{experiment}].
    #[arg(long)]
    pub world: Option<String>,
    /// The config file naming the experiment, when --experiment is not given.
    #[arg(long, default_value = CONFIG_FILE)]
    pub config: PathBuf,
    /// Print the recorded vote as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The experiment named on the command line, or by the config file.
pub(crate) fn experiment_name(given: Option<String>, config: &Path) -> anyhow::Result<String> {
    match given {
        Some(name) => Ok(name),
        None => Config::load(config).map(|c| c.name).with_context(|| {
            format!(
                "no --experiment given, and reading the experiment name from {} failed",
                config.display()
            )
        }),
    }
}

/// `base`, or `base-2`, `base-3`... whichever is not a world yet.
pub(crate) async fn free_name(storage: &Arc<dyn Storage>, base: &str) -> anyhow::Result<String> {
    for n in 1..1000 {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        if storage.find_world(&name).await?.is_none() {
            return Ok(name);
        }
    }
    bail!("no free world name like {base:?}; pass --name")
}

fn head_text(h: &HeadPoint) -> String {
    if h.commit.is_empty() {
        "(none)".into()
    } else if h.run_id.is_empty() {
        short_commit(&h.commit).to_string()
    } else {
        format!("{} ({})", short_commit(&h.commit), h.run_id)
    }
}

fn trajectory(t: &[HeadPoint]) -> String {
    t.iter()
        .filter(|h| !h.commit.is_empty())
        .map(|h| short_commit(&h.commit))
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace(['\n', '\t'], " ");
    if s.chars().count() <= max {
        s
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Whether a step was decided differently: a keep and a baseline both make
/// the candidate head, so they count as the same.
fn differs(s: &ReplayStep) -> bool {
    fn class(status: &str) -> OutcomeStatus {
        match OutcomeStatus::from_word(status) {
            OutcomeStatus::Baseline => OutcomeStatus::Keep,
            other => other,
        }
    }
    class(&s.original.status) != class(&s.counterfactual.status)
}

fn print_replay(r: &ReplayReport) {
    let orig = if r.original_comparators.is_empty() {
        "(not recorded)".to_string()
    } else {
        r.original_comparators.join(", ")
    };
    println!(
        "replay of {} (world {}) from tick {}\n  original:       {orig}\n  counterfactual: {}  -> fork {}\n",
        r.experiment, r.source_world, r.from_tick, r.comparator, r.fork_world
    );
    let width = r
        .steps
        .iter()
        .map(|s| s.run_id.len())
        .max()
        .unwrap_or(3)
        .max(3);
    println!(
        "{:<width$}  {:<7}  {:<8} {:<7}  {:<8} {:<7}  counterfactual reason",
        "run", "commit", "original", "head", "counterf", "head"
    );
    for s in &r.steps {
        let changed = if differs(s) { "*" } else { " " };
        println!(
            "{:<width$}  {:<7}  {:<8} {:<7} {changed}{:<8} {:<7}  {}",
            s.run_id,
            short_commit(&s.commit),
            s.original.status,
            short_commit(&s.original.head.commit),
            s.counterfactual.status,
            short_commit(&s.counterfactual.head.commit),
            one_line(&s.counterfactual.reason, 100),
        );
    }
    let changed = r.steps.iter().filter(|s| differs(s)).count();
    println!(
        "\n{} candidates re-decided, {changed} differently (*)",
        r.steps.len()
    );
    println!(
        "head        original {}  counterfactual {}",
        head_text(&r.original_head),
        head_text(&r.counterfactual_head)
    );
    println!(
        "trajectory  original       {}",
        trajectory(&r.original_trajectory)
    );
    println!(
        "            counterfactual {}",
        trajectory(&r.counterfactual_trajectory)
    );
    println!(
        "\ncontinue the fork: autoresearch run --world {} (on branch {})",
        r.fork_world,
        fork_branch_name(&r.fork_world)
    );
}

pub async fn replay_cmd(ledger_path: &Path, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let comparator = autoresearch_compare::from_spec(&args.comparator)
        .with_context(|| format!("--comparator {:?}", args.comparator))?;
    let experiment = experiment_name(args.experiment, &args.config)?;
    let storage = ledger::open(ledger_path)?;
    let source_world = args
        .world
        .unwrap_or_else(|| experiment_world_name(&experiment));
    let fork_name = match args.name {
        Some(n) => n,
        None => {
            let kind = args.comparator.split(':').next().unwrap_or("replay").trim();
            free_name(&storage, &format!("{experiment}-replay-{kind}")).await?
        }
    };
    let req = ReplayRequest {
        experiment: experiment.clone(),
        source_world: source_world.clone(),
        from: args.from.map(Tick),
        fork_name,
    };
    let working = crate::progress::Working::start(format!(
        "replaying {experiment} under {} into {}",
        args.comparator, req.fork_name
    ));
    let report = replay(storage, ledger::registry(), &req, comparator).await;
    working.done();
    let report = report.with_context(|| {
        format!(
            "replaying experiment {experiment:?} of {}",
            ledger_path.display()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_replay(&report);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn fork_cmd(ledger_path: &Path, args: ForkArgs) -> anyhow::Result<ExitCode> {
    let experiment = experiment_name(args.experiment, &args.config)?;
    let storage = ledger::open(ledger_path)?;
    let source_world = args
        .world
        .unwrap_or_else(|| experiment_world_name(&experiment));
    let fork_name = match args.name {
        Some(n) => n,
        None => {
            let run: String = args.promote.chars().take(12).collect();
            free_name(&storage, &format!("{experiment}-fork-{run}")).await?
        }
    };
    let req = ForkRequest {
        experiment: experiment.clone(),
        source_world,
        at: Tick(args.at),
        promote: args.promote.clone(),
        fork_name,
    };
    let report = fork_promoting(storage, ledger::registry(), &req)
        .await
        .with_context(|| {
            format!(
                "forking experiment {experiment:?} at tick {} with run {:?} as head",
                args.at, args.promote
            )
        })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "fork {} of {} at tick {}: head {} (was {})\ncontinue it: autoresearch run --world {} (on branch {})",
            report.fork_world,
            report.source_world,
            report.at_tick,
            head_text(&report.head),
            head_text(&report.previous_head),
            report.fork_world,
            fork_branch_name(&report.fork_world)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn vote_cmd(ledger_path: &Path, args: VoteArgs) -> anyhow::Result<ExitCode> {
    let experiment = experiment_name(args.experiment, &args.config)?;
    let world_name = args
        .world
        .unwrap_or_else(|| experiment_world_name(&experiment));
    let storage = ledger::open(ledger_path)?;
    let mut world = World::open(storage, ledger::registry(), &world_name)
        .await
        .with_context(|| format!("opening world {world_name:?} in {}", ledger_path.display()))?;
    let voter = args
        .voter
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "anonymous".into());
    let verdict = match args.verdict {
        VoteVerdict::Keep => autoresearch_core::VoteVerdict::Keep,
        VoteVerdict::Discard => autoresearch_core::VoteVerdict::Discard,
    };
    let receipt = cast_vote(
        &mut world,
        &experiment,
        &args.run_id,
        verdict.as_str(),
        &voter,
        &args.reason,
    )
    .await
    .with_context(|| format!("voting {verdict} on run {:?}", args.run_id))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&receipt)?);
    } else {
        println!(
            "{} voted {} on run {} ({} vote(s) on it now)",
            receipt.vote.voter, receipt.vote.verdict, receipt.vote.run_id, receipt.votes_on_run
        );
        match receipt.run_status.as_deref() {
            Some(s) if OutcomeStatus::known(s) == Some(OutcomeStatus::Pending) => {}
            Some(s) => eprintln!(
                "note: run {} is not waiting for votes (its outcome is {s}); the vote is recorded anyway",
                receipt.vote.run_id
            ),
            None => eprintln!(
                "note: run {} is not decided yet; the vote counts when it is",
                receipt.vote.run_id
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
