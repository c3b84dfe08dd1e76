//! The comparison commands: `replay` (re-decide an experiment under another
//! comparator, into a fork), `fork` (a fork where a chosen run became head)
//! and `vote` (a human vote on a run waiting for one).

use crate::ledger;
use crate::target::TargetArgs;
use anyhow::{Context, bail};
use autoresearch_compare::replay::{
    ForkRequest, HeadPoint, ReplayReport, ReplayRequest, ReplayStep, cast_vote, fork_promoting,
    replay,
};
use autoresearch_controller::fork_branch_name;
use autoresearch_core::short_commit;
use autoresearch_core::{OutcomeStatus, Storage, Tick, World};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    autoresearch replay --experiment nanogpt --comparator stat:val_bpb:min:alpha=0.05\n  \
    autoresearch replay --experiment nanogpt --comparator scalar:val_bpb:min:delta=0.001 --from 40 --name strict\n  \
    autoresearch replay --experiment nanogpt --comparator pareto:val_bpb:min,memory_gb:min --json\n\n\
    No job is re-run: every later candidate is re-decided from its stored results. The fork can\n\
    be inspected like any world (--world FORK) and continued with `autoresearch run --world FORK`.")]
pub struct ReplayArgs {
    /// The experiment and the world to replay [default: autoresearch:{experiment}].
    #[command(flatten)]
    pub target: TargetArgs,
    /// The comparator to re-decide with, e.g. scalar:val_bpb:min (see docs/comparators.md).
    #[arg(long)]
    pub comparator: String,
    /// Fork at this tick [default: the tick that created the experiment].
    #[arg(long, value_name = "TICK")]
    pub from: Option<u64>,
    /// The fork's world name [default: {experiment}-replay-{kind}, numbered if taken].
    #[arg(long, value_name = "FORK")]
    pub name: Option<String>,
    /// Print what the replay decides without writing anything: no fork is made.
    #[arg(long)]
    pub dry_run: bool,
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
    /// The experiment and the world to fork [default: autoresearch:{experiment}].
    #[command(flatten)]
    pub target: TargetArgs,
    /// The tick at which the run becomes head.
    #[arg(long, value_name = "TICK")]
    pub at: u64,
    /// The run to make head (id or unique prefix).
    #[arg(long, value_name = "RUN_ID")]
    pub promote: String,
    /// The fork's world name [default: {experiment}-fork-{run}].
    #[arg(long, value_name = "FORK")]
    pub name: Option<String>,
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
    `autoresearch status` lists the runs waiting for votes. Once a quorum has voted\n\
    (comparator vote:quorum=N) the decision is applied at once, launching no candidate;\n\
    while a loop runs on the world, that loop applies it before its next round.")]
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
    /// The experiment and the world to vote in [default: autoresearch:{experiment}].
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the recorded vote as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `base`, or `base-2`, `base-3`... whichever is not a world yet.
/// The default name of a fork of `experiment` promoting `run`:
/// `{experiment}-fork-{run}`, the whole run id (two runs of one round
/// differ only in their last characters), with what a git branch name may
/// not hold (`autoresearch/{name}` is the fork's branch) made `-`, and no
/// `-` or `.` at the end.
pub(crate) fn fork_name_base(experiment: &str, run: &str) -> String {
    let run = ledger::plain_chars(run, '-');
    let name = format!("{experiment}-fork-{run}");
    name.trim_end_matches(['-', '.']).replace("..", "-")
}

/// `name` when it can name a fork: not empty, and its branch
/// (`autoresearch/{name}`, where `run --world` continues it) a valid git
/// branch name. Errors: what is wrong, and what to do.
pub(crate) fn checked_fork_name(name: String) -> anyhow::Result<String> {
    let branch = fork_branch_name(&name);
    if name.trim().is_empty() || !autoresearch_controller::config::valid_branch_name(&branch) {
        bail!(
            "--name {name:?} cannot name a fork: its branch {branch:?} is not a valid git branch name (no spaces, '..', ':', '~', '^', '?', '*', '[', no '/' at either end or twice); choose another name"
        );
    }
    Ok(name)
}

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

fn print_replay(r: &ReplayReport, dry_run: bool) {
    let orig = if r.original_comparators.is_empty() {
        "(not recorded)".to_string()
    } else {
        r.original_comparators.join(", ")
    };
    let into = if dry_run {
        "(dry run: no fork written)".to_string()
    } else {
        format!("-> fork {}", r.fork_world)
    };
    println!(
        "replay of {} (world {}) from tick {}\n  original:       {orig}\n  counterfactual: {}  {into}\n",
        r.experiment, r.source_world, r.from_tick, r.comparator
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
    if dry_run {
        println!("\nnothing was written; without --dry-run the replay is kept as a fork");
    } else {
        println!(
            "\ncontinue the fork: autoresearch run --world {} (on branch {})",
            r.fork_world,
            fork_branch_name(&r.fork_world)
        );
    }
}

pub async fn replay_cmd(ledger_path: &Path, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let comparator = autoresearch_compare::from_spec(&args.comparator)
        .with_context(|| format!("--comparator {:?}", args.comparator))?;
    let storage = ledger::open(ledger_path)?;
    let target = args.target.resolve_in(storage.clone()).await?;
    let experiment = target.experiment()?.to_string();
    let source_world = target.world.clone();
    let fork_name = match args.name {
        Some(n) => checked_fork_name(n)?,
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
    let report = if args.dry_run {
        // Replayed into an in-memory copy of the source world's history:
        // the ledger is only read.
        match in_memory_copy(&storage, &source_world).await {
            Ok(copy) => replay(copy, ledger::registry(), &req, comparator).await,
            Err(e) => {
                working.done();
                return Err(e);
            }
        }
    } else {
        replay(storage, ledger::registry(), &req, comparator).await
    };
    working.done();
    let report = report.with_context(|| {
        format!(
            "replaying experiment {experiment:?} of {}",
            ledger_path.display()
        )
    })?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if args.dry_run {
            v["dry_run"] = serde_json::Value::Bool(true);
            v["fork_world"] = serde_json::Value::Null;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_replay(&report, args.dry_run);
    }
    Ok(ExitCode::SUCCESS)
}

/// A ledger in memory holding one world: `world` of `storage` flattened
/// (its ticks through its lineage, the same tick numbers), for a replay
/// that writes nothing. Cost: one read of the world's whole history.
async fn in_memory_copy(
    storage: &Arc<dyn Storage>,
    world: &str,
) -> anyhow::Result<Arc<dyn Storage>> {
    let info = storage
        .find_world(world)
        .await?
        .with_context(|| format!("no world named {world:?} in {}", storage.location()))?;
    let records =
        autoresearch_core::ledger::read_records(storage.as_ref(), info.id, Tick(1), info.head)
            .await
            .with_context(|| format!("reading the history of world {world:?}"))?;
    let copy: Arc<dyn Storage> = Arc::new(autoresearch_core::MemoryStorage::new(Some(256)));
    let created = copy.create_world(world).await?;
    copy.append_all(created.id, records.into_iter().map(|r| (r, None)).collect())
        .await
        .with_context(|| format!("copying world {world:?} into memory"))?;
    Ok(copy)
}

pub async fn fork_cmd(ledger_path: &Path, args: ForkArgs) -> anyhow::Result<ExitCode> {
    let storage = ledger::open(ledger_path)?;
    let target = args.target.resolve_in(storage.clone()).await?;
    let experiment = target.experiment()?.to_string();
    let source_world = target.world.clone();
    let fork_name = match args.name {
        Some(n) => checked_fork_name(n)?,
        None => free_name(&storage, &fork_name_base(&experiment, &args.promote)).await?,
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

pub async fn vote_cmd(ledger_path: &Path, args: VoteArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let storage = ledger::open(ledger_path)?;
    let target = args.target.resolve_in(storage.clone()).await?;
    let experiment = target.experiment()?.to_string();
    let world_name = target.world.clone();
    let mut world = World::open(storage.clone(), ledger::registry(), &world_name)
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
    drop(world);
    let pending = receipt
        .run_status
        .as_deref()
        .is_some_and(|s| OutcomeStatus::known(s) == Some(OutcomeStatus::Pending));
    // The decision is applied at once when the quorum is in (the loop's
    // controller, which launches nothing); without a config (an imported
    // experiment) the vote is only recorded.
    let decided = match (&target.config, pending) {
        (Some(config), true) => {
            match crate::decide::pending(ledger_path, storage.clone(), config, &world_name, quiet)
                .await
            {
                Ok(d) => Some(d),
                // The vote is stored either way: the next `run` decides.
                Err(e) => {
                    eprintln!(
                        "warning: the vote is recorded, but deciding run {} now failed: {}; the next `autoresearch run` decides it",
                        receipt.vote.run_id,
                        crate::error_text(&e)
                    );
                    None
                }
            }
        }
        _ => None,
    };
    let outcome = if pending {
        World::open(storage, ledger::registry(), &world_name)
            .await
            .ok()
            .and_then(|w| {
                let (entity, _) = w.run_by_id(&receipt.vote.run_id)?;
                w.get::<autoresearch_core::lifecycle::Outcome>(entity)
            })
    } else {
        None
    };
    let now_decided = outcome
        .as_ref()
        .filter(|o| o.status != OutcomeStatus::Pending);
    if args.json {
        let mut v = serde_json::to_value(&receipt)?;
        v["decision"] = match now_decided {
            Some(o) => serde_json::json!({"status": o.status, "reason": o.reason}),
            None => serde_json::Value::Null,
        };
        if let Some(crate::decide::Decided::LoopRunning(holder)) = &decided {
            v["loop_running"] = serde_json::Value::String(holder.clone());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} voted {} on run {} ({} vote(s) on it now)",
        receipt.vote.voter, receipt.vote.verdict, receipt.vote.run_id, receipt.votes_on_run
    );
    match (receipt.run_status.as_deref(), now_decided, &decided) {
        (_, Some(o), _) => println!(
            "quorum reached: run {} decided {} ({})",
            receipt.vote.run_id, o.status, o.reason
        ),
        (_, None, Some(crate::decide::Decided::LoopRunning(holder))) => println!(
            "a loop is running on world {world_name} ({holder}): it decides run {} before its next round",
            receipt.vote.run_id
        ),
        // The Outcome's reason was written when the run began to wait (no
        // votes then): the count now is the receipt's.
        (Some(_), None, _) if pending => println!(
            "run {} still waits for votes: {} vote(s) on it{}",
            receipt.vote.run_id,
            receipt.votes_on_run,
            outcome
                .as_ref()
                .filter(|o| !o.comparator.is_empty())
                .map(|o| format!("; {} decides it once its quorum is in", o.comparator))
                .unwrap_or_default()
        ),
        (Some(s), None, _) => eprintln!(
            "note: run {} is not waiting for votes (its outcome is {s}); the vote is recorded anyway",
            receipt.vote.run_id
        ),
        (None, None, _) => eprintln!(
            "note: run {} is not decided yet; the vote counts when it is",
            receipt.vote.run_id
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{checked_fork_name, fork_name_base};

    #[test]
    fn a_fork_name_must_give_a_valid_branch() {
        assert!(checked_fork_name("what-if".into()).is_ok());
        for bad in ["", " ", "a..b", "a/", "/a", "a//b", "x.lock"] {
            let err = checked_fork_name(bad.into()).unwrap_err().to_string();
            assert!(err.contains("cannot name a fork"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_default_fork_name_holds_the_whole_run_id_and_is_a_branch_name() {
        // Two runs of one round: names that differ, no dash at the end.
        assert_eq!(fork_name_base("t", "1a23141ab23-1"), "t-fork-1a23141ab23-1");
        assert_eq!(fork_name_base("t", "1a23141ab23-2"), "t-fork-1a23141ab23-2");
        assert_eq!(
            fork_name_base("nano", "nano-tsv-L7"),
            "nano-fork-nano-tsv-L7"
        );
        // What a git ref may not hold becomes `-`; none at the end.
        assert_eq!(fork_name_base("e", "a b:c~d^e?"), "e-fork-a-b-c-d-e");
        assert_eq!(fork_name_base("e", "x..y."), "e-fork-x-y");
    }
}
